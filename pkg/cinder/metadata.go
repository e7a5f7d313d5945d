package cinder

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/blockvault/blockvault/pkg/repository"
)

// metadataVersion is the only version of chunkeddriver.py's metadata
// (DRIVER_VERSION_MAPPING: '1.0.0' -> _restore_v1).
const metadataVersion = "1.0.0"

// Link locates one backup of a chain in its repository: the fields of its
// Record that name its objects.
type Link struct {
	BackupID  string
	Kind      Kind
	Container string
	Prefix    string
}

// objectName is the repository name of one of the backup's objects: under
// the container's directory for posix and NFS; for S3 the container is the
// bucket the repository is opened on, and the name is the key.
func (l Link) objectName(name string) string {
	if l.Kind == S3 {
		return name
	}
	return l.Container + "/" + name
}

func (l Link) metadataName() string   { return l.objectName(l.Prefix + "_metadata") }
func (l Link) sha256FileName() string { return l.objectName(l.Prefix + "_sha256file") }

// object is one data object of a backup, as its metadata describes it.
type object struct {
	Name        string // within the container, as in the metadata
	Offset      int64
	Length      int64
	MD5         [16]byte
	Compression string
}

func (o *object) end() int64 { return o.Offset + o.Length }

// metadata is a backup's <prefix>_metadata.
type metadata struct {
	BackupID string
	ParentID string
	Objects  []object
}

// metadataJSON is chunkeddriver.py's _write_metadata.
type metadataJSON struct {
	Version  string                          `json:"version"`
	BackupID string                          `json:"backup_id"`
	ParentID *string                         `json:"parent_id"`
	Objects  []map[string]objectMetadataJSON `json:"objects"`
}

type objectMetadataJSON struct {
	Offset      *int64  `json:"offset"`
	Length      *int64  `json:"length"`
	MD5         *string `json:"md5"`
	Compression *string `json:"compression"`
}

// readMetadata reads and checks a backup's metadata object.
func readMetadata(ctx context.Context, repo repository.Repository, l Link) (*metadata, error) {
	name := l.metadataName()
	b, err := repo.Get(ctx, name)
	if err != nil {
		return nil, objectErr(l, name, err)
	}
	var mj metadataJSON
	if err := json.Unmarshal(b, &mj); err != nil {
		return nil, &ObjectError{BackupID: l.BackupID, Object: name, Err: fmt.Errorf("%w: not a backup's metadata: %w", ErrCorrupt, err)}
	}
	bad := func(format string, args ...any) error {
		return &ObjectError{BackupID: l.BackupID, Object: name, Err: fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)}
	}
	if mj.Version != metadataVersion {
		return nil, &ObjectError{BackupID: l.BackupID, Object: name, Err: fmt.Errorf("%w: metadata version %q (only %s, the version of every Cinder release, is known)", ErrUnsupported, mj.Version, metadataVersion)}
	}
	if mj.BackupID != l.BackupID {
		return nil, bad("the metadata is backup %q's", mj.BackupID)
	}
	m := &metadata{BackupID: mj.BackupID, ParentID: str(mj.ParentID)}
	for i, entry := range mj.Objects {
		if len(entry) != 1 {
			return nil, bad("objects[%d] names %d objects, not one", i, len(entry))
		}
		for objName, oj := range entry {
			if oj.Offset == nil || oj.Length == nil || oj.MD5 == nil || oj.Compression == nil {
				return nil, bad("object %s lacks its offset, length, md5 or compression", objName)
			}
			o := object{Name: objName, Offset: *oj.Offset, Length: *oj.Length, Compression: *oj.Compression}
			if o.Offset < 0 || o.Length < 0 {
				return nil, bad("object %s has offset %d, length %d", objName, o.Offset, o.Length)
			}
			if sum, err := hex.DecodeString(*oj.MD5); err != nil || len(sum) != len(o.MD5) {
				return nil, bad("object %s's md5 %q is not an md5", objName, *oj.MD5)
			} else {
				copy(o.MD5[:], sum)
			}
			if _, err := compressionOf(o.Compression); err != nil {
				return nil, &ObjectError{BackupID: l.BackupID, Object: l.objectName(objName), Err: err}
			}
			if err := repository.ValidateName(l.objectName(objName)); err != nil {
				return nil, bad("object name %q: %w", objName, err)
			}
			m.Objects = append(m.Objects, o)
		}
	}
	return m, nil
}

// sha256File is a backup's <prefix>_sha256file: the sha256 of each block
// of the volume as it was at that backup.
type sha256File struct {
	Name      string // the object's name, for errors
	BackupID  string
	BlockSize int64
	Sums      [][32]byte
}

// readSHA256File reads a backup's sha256file, decoding its list of sums as
// it streams by (a 1 TiB volume has 32 Mi of them): the sums take 32 bytes
// a block in memory, 1 MiB a GiB of volume at Cinder's 32 KiB.
func readSHA256File(ctx context.Context, repo repository.Repository, l Link) (*sha256File, error) {
	name := l.sha256FileName()
	rc, err := repository.Open(ctx, repo, name)
	if err != nil {
		return nil, objectErr(l, name, err)
	}
	defer rc.Close()
	src := &sourceReader{r: rc}
	f, err := decodeSHA256File(json.NewDecoder(src), l.BackupID)
	if err == nil {
		f.Name, f.BackupID = name, l.BackupID
	} else {
		if src.err != nil {
			return nil, objectErr(l, name, src.err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("it ends before its JSON does (truncated)")
		}
		return nil, &ObjectError{BackupID: l.BackupID, Object: name, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
	}
	return f, nil
}

func decodeSHA256File(dec *json.Decoder, backupID string) (*sha256File, error) {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a sha256file (JSON object): %v", errOr(err, "starts with %v", t))
	}
	f := &sha256File{}
	var version, id string
	seenSums := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch key, _ := t.(string); key {
		case "sha256s":
			if t, err := dec.Token(); err != nil || t != json.Delim('[') {
				return nil, fmt.Errorf("sha256s is not a list: %v", errOr(err, "starts with %v", t))
			}
			for dec.More() {
				t, err := dec.Token()
				if err != nil {
					return nil, err
				}
				s, ok := t.(string)
				var sum [32]byte
				if n, err := hex.Decode(sum[:], []byte(s)); !ok || err != nil || n != 32 || len(s) != 64 {
					return nil, fmt.Errorf("sha256s[%d] %v is not a sha256", len(f.Sums), t)
				}
				f.Sums = append(f.Sums, sum)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			seenSums = true
		case "chunk_size":
			if err := dec.Decode(&f.BlockSize); err != nil {
				return nil, fmt.Errorf("chunk_size: %w", err)
			}
		case "version":
			if err := dec.Decode(&version); err != nil {
				return nil, fmt.Errorf("version: %w", err)
			}
		case "backup_id":
			if err := dec.Decode(&id); err != nil {
				return nil, fmt.Errorf("backup_id: %w", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	switch {
	case version != metadataVersion:
		return nil, fmt.Errorf("version %q, not %s", version, metadataVersion)
	case id != backupID:
		return nil, fmt.Errorf("the sha256file is backup %q's", id)
	case f.BlockSize <= 0:
		return nil, fmt.Errorf("chunk_size %d", f.BlockSize)
	case !seenSums:
		return nil, errors.New("no sha256s")
	}
	return f, nil
}

func errOr(err error, format string, args ...any) any {
	if err != nil {
		return err
	}
	return fmt.Sprintf(format, args...)
}

// objectErr names the object a repository error is about: a missing one
// is ErrMissing.
func objectErr(l Link, name string, err error) error {
	if errors.Is(err, repository.ErrNotFound) {
		err = fmt.Errorf("%w: %w", ErrMissing, err)
	}
	return &ObjectError{BackupID: l.BackupID, Object: name, Err: err}
}

// sourceReader remembers the error of the reader under a decoder, so that
// a failed read of the repository is not taken for corrupt data.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}
