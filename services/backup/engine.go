package backup

import (
	"context"

	"github.com/blockvault/blockvault/pkg/blockdev"
)

// Progress is how far a backup or restore got.
type Progress struct {
	Done, Total, Read, Stored int64
}

// ProgressFunc receives progress updates (at most a few a second).
type ProgressFunc func(Progress)

// BackupSpec is one backup for the engine to write.
type BackupSpec struct {
	BackupID, VolumeID, ParentID string
	// Changed lists the byte ranges that may differ from the parent
	// backup (changed-block tracking); nil means unknown: read everything.
	Changed []ByteRange
	// ReuseFrom, for a full backup, is an earlier backup of the volume in
	// the same container whose chunks need not be stored again.
	ReuseFrom string
	Progress  ProgressFunc
}

// ByteRange is a byte range [Offset, Offset+Length) of a volume.
type ByteRange struct{ Offset, Length int64 }

// BackupResult is what a finished backup stored.
type BackupResult struct {
	SizeBytes   int64
	ObjectCount int64
}

// VerifyResult is what a verify found.
type VerifyResult struct {
	ChunksChecked int64
	Damaged       []Damage
}

// Damage names a damaged or missing chunk.
type Damage struct {
	ChunkID string
	Offset  int64
	Problem string
}

// Record is an imported backup record.
type Record struct {
	BackupID, VolumeID, ParentID string
	SizeBytes, ObjectCount       int64
	Container                    string
}

// Engine is what the service needs of the backup engine: the repository
// format behind it is the engine's business.
type Engine interface {
	Backup(ctx context.Context, container string, src blockdev.Device, spec BackupSpec) (BackupResult, error)
	Restore(ctx context.Context, container, backupID string, dst blockdev.Device, progress ProgressFunc) error
	Verify(ctx context.Context, container, backupID string) (VerifyResult, error)
	// Delete removes a backup's manifest and the chunks no other backup uses;
	// deleting an absent backup is not an error.
	Delete(ctx context.Context, container, backupID string) error
	ExportRecord(ctx context.Context, container, backupID string) ([]byte, error)
	ImportRecord(ctx context.Context, record []byte) (Record, error)
}
