package cinder

import (
	"errors"
	"fmt"
)

// Sentinel errors, wrapped by the errors this package returns.
var (
	// ErrInvalidRecord: an export record that cannot be read (not base64,
	// not JSON, a field missing or of the wrong type).
	ErrInvalidRecord = errors.New("cinder: invalid export record")
	// ErrUnsupported: a backup this package cannot read (a driver that
	// does not write chunked backups, an unknown metadata version or
	// compression).
	ErrUnsupported = errors.New("cinder: unsupported backup")
	// ErrBrokenChain: the backups given as a chain do not form one (an
	// incremental's parent is not the backup before it).
	ErrBrokenChain = errors.New("cinder: broken backup chain")
	// ErrMissing: an object of a backup is not in the repository.
	ErrMissing = errors.New("cinder: object missing")
	// ErrCorrupt: an object's content does not match its md5, the
	// sha256file or its length, does not decompress, or a metadata or
	// sha256file object does not parse.
	ErrCorrupt = errors.New("cinder: object corrupt")
)

// ObjectError names the object of a backup that is missing or damaged.
type ObjectError struct {
	BackupID string
	// Object is the object's name in the repository (container/name for
	// posix and NFS, the key for S3).
	Object string
	Err    error
}

func (e *ObjectError) Error() string {
	return fmt.Sprintf("cinder backup %s: object %s: %v", e.BackupID, e.Object, e.Err)
}

func (e *ObjectError) Unwrap() error { return e.Err }
