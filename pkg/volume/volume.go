// Package volume is the contract between the volume manager and a storage
// backend (a driver): a small Driver interface every backend implements, and
// optional capability interfaces (snapshots, snapshot export, local paths,
// clones, extend, changed ranges) that the volume manager discovers at run
// time with a type assertion.
package volume

import (
	"context"
	"errors"

	"github.com/blockvault/blockvault/pkg/blockdev"
)

// Sentinel errors drivers return (wrapped with %w).
var (
	ErrNotFound        = errors.New("not found")
	ErrAlreadyExists   = errors.New("already exists")
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNoSpace         = errors.New("not enough free space in the pool")
	ErrUnsupported     = errors.New("not supported by this driver")
	ErrInUse           = errors.New("in use")
)

// Capabilities is what a driver can do, for the API and for the backup
// service to choose a strategy. The flags agree with the optional interfaces
// the driver implements.
type Capabilities struct {
	Snapshot       bool   // implements Snapshotter
	SnapshotExport bool   // snapshots can be opened for reading (attach snapshot)
	LocalPath      bool   // implements LocalPather
	Clone          bool   // implements Cloner
	Extend         bool   // implements Extender
	ChangedRanges  bool   // implements ChangedRanger
	Mode           string // how point-in-time copies are made, e.g. "reflink", "copy-before-write"
}

// Driver is what every storage backend implements.
type Driver interface {
	// Name identifies the driver ("file").
	Name() string
	// Capabilities reports what the driver can do.
	Capabilities() Capabilities
	// CreateVolume makes an empty (all zeros) volume of size bytes.
	// ErrAlreadyExists if id exists; ErrNoSpace if the pool cannot hold it.
	CreateVolume(ctx context.Context, id string, size int64) error
	// DeleteVolume removes a volume; deleting an absent one is not an error.
	DeleteVolume(ctx context.Context, id string) error
	// OpenVolume opens the volume's data. Every write to a volume goes
	// through a device opened here, which is what lets a driver copy blocks
	// before they are overwritten.
	OpenVolume(ctx context.Context, id string, readOnly bool) (blockdev.Device, error)
	// VolumeSize is the volume's size in bytes, or ErrNotFound.
	VolumeSize(ctx context.Context, id string) (int64, error)
	// Space reports the pool's total and free bytes.
	Space(ctx context.Context) (total, free int64, err error)
}

// Snapshotter takes point-in-time, crash-consistent snapshots of a volume,
// also while it is being written.
type Snapshotter interface {
	CreateSnapshot(ctx context.Context, volumeID, snapshotID string) error
	// DeleteSnapshot removes a snapshot; absent is not an error.
	DeleteSnapshot(ctx context.Context, volumeID, snapshotID string) error
}

// SnapshotOpener can read a snapshot's data (the seed's attach snapshot).
// A driver that snapshots but cannot open snapshots leaves the backup
// service to clone a temporary volume instead.
type SnapshotOpener interface {
	OpenSnapshot(ctx context.Context, volumeID, snapshotID string) (blockdev.Device, error)
}

// LocalPather hands out a local path to a volume's or snapshot's data, for a
// consumer on the same node (the seed's step 1). snapshotID may be empty for
// the volume itself.
type LocalPather interface {
	LocalPath(ctx context.Context, volumeID, snapshotID string) (string, error)
}

// Cloner makes new volumes from existing ones.
type Cloner interface {
	// CloneVolume makes dstID a point-in-time copy of srcID (in use or not).
	CloneVolume(ctx context.Context, srcID, dstID string) error
	// VolumeFromSnapshot makes dstID a copy of the snapshot, at least size bytes.
	VolumeFromSnapshot(ctx context.Context, volumeID, snapshotID, dstID string, size int64) error
}

// BulkOpener opens a volume for a bulk writer, such as a restore: large
// aligned writes go to the storage around the host's page cache, smaller
// ones as through OpenVolume. A driver without it serves bulk writers with
// OpenVolume.
type BulkOpener interface {
	OpenVolumeForBulkWrites(ctx context.Context, id string) (blockdev.Device, error)
}

// Extender grows volumes.
type Extender interface {
	ExtendVolume(ctx context.Context, id string, newSize int64) error
}

// Range is a byte range [Offset, Offset+Length).
type Range struct {
	Offset, Length int64
}

// ChangedRanger reports which ranges of a volume differ between two of its
// snapshots, so an incremental backup reads only those.
type ChangedRanger interface {
	ChangedRanges(ctx context.Context, volumeID, fromSnapshotID, toSnapshotID string) ([]Range, error)
}
