// Package cinder reads backups that OpenStack Cinder's chunked backup
// drivers wrote, where they lie, with no Cinder database: the posix and NFS
// drivers' files under a directory tree (a repository.Repository rooted at
// backup_posix_path or the NFS share) and the S3 driver's keys in a bucket
// (the s3 backend on that bucket).
//
// The format is chunkeddriver.py's (metadata version 1.0.0). A backup is
// named by its container (posix/NFS: <id[0:2]>/<id[2:4]>/<id> under the
// root, or backup_container; S3: the bucket) and its object prefix (the
// record's service_metadata). It holds
//
//   - <prefix>_metadata: JSON naming each object with the volume offset and
//     length of the data it holds, the md5 of that data (before
//     compression) and its compression (zlib, bz2, zstd or none, per
//     object: Cinder stores a chunk raw where compression did not pay), and
//     the parent backup's id;
//   - <prefix>_sha256file: JSON with the sha256 of every block (32 KiB by
//     default) of the whole volume as it was at this backup;
//   - <prefix>-00001, -00002, ...: the objects.
//
// A full backup's objects cover the whole volume; an incremental's only the
// extents whose blocks changed since its parent, and it restores over its
// parent chain, oldest first. An operator's handle on a backup is Cinder's
// export record (ParseExportRecord); a chain is given as the records'
// Links, oldest first.
//
// Restore writes the newest backup's view of the volume in parallel,
// streaming and decompressing each object, checking every block it writes
// against the newest sha256file before writing it and every object's md5;
// Verify checks every object of every backup of the chain.
package cinder
