package backupjob

import (
	"context"
	"errors"

	"github.com/blockvault/blockvault/pkg/engine"
)

// VolumeManager is what the jobs need of the volume manager, in plain Go
// types. The backup service implements it over gRPC; tests implement it
// over a storage driver, with faults where they want them.
//
// Errors: a resource that is gone wraps ErrNotFound; a volume manager that
// cannot be reached for now (down, restarting, its database away) wraps
// ErrUnavailable, and the jobs retry their cleanup steps on it.
type VolumeManager interface {
	// Capabilities says what the storage backend can do, and where.
	Capabilities(ctx context.Context) (Capabilities, error)
	// CreateTemporarySnapshot snapshots volumeID as snapshot id.
	CreateTemporarySnapshot(ctx context.Context, project, id, volumeID, name, description string) error
	// CreateTemporaryVolume clones sourceVolumeID into volume id.
	CreateTemporaryVolume(ctx context.Context, project, id, sourceVolumeID, name, description string) error
	// AttachSnapshot exports a snapshot read-only (the seed's attach
	// snapshot) and says how to reach it.
	AttachSnapshot(ctx context.Context, project, snapshotID string, c Connector) (Connection, error)
	// DetachSnapshot ends a snapshot's export.
	DetachSnapshot(ctx context.Context, project, snapshotID string) error
	// DeleteSnapshot deletes a snapshot.
	DeleteSnapshot(ctx context.Context, project, snapshotID string) error
	// AttachVolume attaches a volume for a backup or a restore; serverID
	// names the job ("backup-<id>", "restore-<id>").
	AttachVolume(ctx context.Context, project, volumeID, serverID string, c Connector) (Attachment, error)
	// DetachVolume removes an attachment.
	DetachVolume(ctx context.Context, project, attachmentID string) error
	// Attachments lists a volume's attachments.
	Attachments(ctx context.Context, project, volumeID string) ([]Attachment, error)
	// DeleteVolume deletes a volume.
	DeleteVolume(ctx context.Context, project, volumeID string) error
	// ChangedRanges lists the ranges of a volume that differ between two of
	// its snapshots.
	ChangedRanges(ctx context.Context, project, volumeID, fromSnapshotID, toSnapshotID string) ([]engine.Range, error)
	// EndBackup returns the volume (or snapshotID) to the status it had
	// before the backup.
	EndBackup(ctx context.Context, project, volumeID, snapshotID string) error
	// EndRestore ends a restore into volumeID: available on success, else
	// error_restoring with failReason.
	EndRestore(ctx context.Context, project, volumeID string, success bool, failReason string) error
	// StartLiveRestore makes the restoring volume usable at once, filled
	// from source (the backup's export) in the background; called again for
	// the same volume and backup, it points the fill at a new source.
	StartLiveRestore(ctx context.Context, project, volumeID, backupID string, source Connection, size int64) error
	// LiveRestore says how far the live restore into volumeID got;
	// ErrNotFound when the volume is gone.
	LiveRestore(ctx context.Context, project, volumeID string) (LiveRestore, error)
}

// LiveRestore is the state of a live restore on the volume manager.
type LiveRestore struct {
	// Pending: the volume still waits for StartLiveRestore
	// (restoring-backup).
	Pending bool
	// Done: the volume is an ordinary one now (the fill ended).
	Done bool
	// Failed: the fill stopped for good, for Reason.
	Failed bool
	Reason string
	// Filled of Total bytes are on the volume.
	Filled, Total int64
}

// Exporter serves a backup read-only over NBD, for the volume manager to
// fill a live restore from.
type Exporter interface {
	// Export serves backupID of container and says how to reach it; stop
	// ends the export.
	Export(ctx context.Context, container, backupID string) (conn Connection, stop func(), err error)
}

// Sentinels a VolumeManager's errors wrap.
var (
	// ErrNotFound: the volume, snapshot or attachment does not exist.
	ErrNotFound = errors.New("backupjob: not found on the volume manager")
	// ErrUnavailable: the volume manager cannot be reached for now.
	ErrUnavailable = errors.New("backupjob: the volume manager is unavailable")
)

// Capabilities is what the storage backend behind the volume manager can do.
type Capabilities struct {
	Driver string
	// NodeID is the volume manager's node: a backup service on the same
	// node may read through local paths (the seed's step 1).
	NodeID string
	// LocalPath: volumes and snapshots can be handed out as local paths.
	LocalPath bool
	// Snapshot: point-in-time snapshots of in-use volumes.
	Snapshot bool
	// SnapshotExport: snapshots can be attached (read) themselves.
	SnapshotExport bool
	// Clone: volumes can be cloned (the temporary-volume fallback).
	Clone bool
	// ChangedRanges: the ranges changed between two snapshots are known.
	ChangedRanges bool
}

// Connector describes the consumer of an attachment.
type Connector struct {
	// Host is the consumer's node.
	Host string
	// Local asks for a local path when the consumer is on the volume
	// manager's node.
	Local bool
	// ReadOnly attaches read-only ("ro"), else read-write.
	ReadOnly bool
	// DirectIO asks for writes around the page cache (a restore's target).
	DirectIO bool
}

// Connection says how to reach an attached volume or snapshot.
type Connection struct {
	// Type is "local" (DevicePath) or "nbd" (Host, Port, ExportName, TLS).
	Type       string
	DevicePath string
	Host       string
	Port       int
	ExportName string
	TLS        bool
}

// Attachment is one attachment of a volume.
type Attachment struct {
	ID string
	// ServerID names who attached it (a job's "backup-<id>").
	ServerID   string
	Connection Connection
}
