package backupjob

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/google/uuid"
)

// source is what a backup reads (or a restore writes), and how to give it
// back.
type source struct {
	strategy string
	dev      blockdev.Device
	// snapshotID is the temporary snapshot read from, if any; with
	// changed-block tracking (track) it is kept after a successful backup
	// (keep) instead of deleted, and changed lists what differs from the
	// parent backup's kept snapshot (nil: unknown).
	snapshotID  string
	track, keep bool
	changed     []engine.Range
	// cleanup steps, run in reverse order of their registration.
	undo []func(ctx context.Context) error
}

func (src *source) defer_(f func(ctx context.Context) error) { src.undo = append(src.undo, f) }

// release closes the device and undoes every step (detach, delete the
// temporary resource), in reverse order. Steps that fail transiently (the
// volume manager is unreachable) stay registered, so calling release again
// retries just those, and so do the steps after one in the same pass that
// failed in any way: a step may fail for good only because an earlier one
// failed for now (a snapshot is still attached because its detach could not
// reach the database). Other failures are reported and dropped (the
// temporary ids recorded on the backup let a restart finish the job).
func (src *source) release(ctx context.Context) error {
	var errs []error
	if src.dev != nil {
		src.dev.Close()
		src.dev = nil
	}
	var keep []func(ctx context.Context) error
	retry := false
	for i := len(src.undo) - 1; i >= 0; i-- {
		if err := src.undo[i](ctx); err != nil {
			errs = append(errs, err)
			retry = retry || transient(err)
			if retry {
				keep = append([]func(ctx context.Context) error{src.undo[i]}, keep...)
			}
		}
	}
	src.undo = keep
	return errors.Join(errs...)
}

// local reports whether this node reads through local paths from the
// volume manager with capabilities c.
func (r *Runner) local(c Capabilities) bool {
	return r.cfg.LocalReads && c.LocalPath && c.NodeID == r.cfg.NodeID
}

// openBackupSource chooses the strategy and opens the data to read.
func (r *Runner) openBackupSource(ctx context.Context, b *backupdb.Backup, previousStatus string) (*source, error) {
	c, err := r.vm.Capabilities(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask the volume manager for its capabilities: %w", err)
	}
	local := r.local(c)
	src := &source{}
	switch {
	case b.SnapshotID != "":
		src.strategy = StrategySnapshot
		return src, r.attachSnapshot(ctx, b, b.SnapshotID, local, src)
	case previousStatus == lifecycle.VolumeAvailable:
		src.strategy = StrategyVolume
		return src, r.attachVolume(ctx, b, b.VolumeID, local, src)
	}

	strategy := r.cfg.Strategy
	if strategy == "" {
		switch {
		case c.Snapshot && local:
			strategy = StrategyLocalSnapshot
		case c.Snapshot && c.SnapshotExport:
			strategy = StrategyAttachedSnapshot
		case c.Clone:
			strategy = StrategyTemporaryVolume
		default:
			return src, fmt.Errorf("the storage backend %s can neither snapshot nor clone an in-use volume; detach it to back it up", c.Driver)
		}
	}
	src.strategy = strategy

	switch strategy {
	case StrategyLocalSnapshot, StrategyAttachedSnapshot:
		snapID, err := r.temporarySnapshot(ctx, b, src)
		if err != nil {
			return src, err
		}
		src.snapshotID = snapID
		if r.cfg.ChangedBlockTracking && c.ChangedRanges {
			src.track = true
			src.changed = r.changedSince(ctx, b, snapID)
		}
		return src, r.attachSnapshot(ctx, b, snapID, strategy == StrategyLocalSnapshot, src)
	case StrategyTemporaryVolume:
		volID, err := r.temporaryVolume(ctx, b, src)
		if err != nil {
			return src, err
		}
		return src, r.attachVolume(ctx, b, volID, local, src)
	}
	return src, fmt.Errorf("unknown backup strategy %q", strategy)
}

// temporarySnapshot takes the temporary snapshot, its id recorded on the
// backup first so a crash at any point leaves a trace to clean up.
func (r *Runner) temporarySnapshot(ctx context.Context, b *backupdb.Backup, src *source) (string, error) {
	id := uuid.NewString()
	if err := r.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": id}); err != nil {
		return "", err
	}
	metrics.TemporaryResources.WithLabelValues("snapshot").Inc()
	src.defer_(func(ctx context.Context) error {
		if src.keep {
			// Kept for changed-block tracking (runBackup records it).
			metrics.TemporaryResources.WithLabelValues("snapshot").Dec()
			return nil
		}
		if err := r.deleteTemporarySnapshot(ctx, b.ProjectID, id); err != nil {
			return err
		}
		metrics.TemporaryResources.WithLabelValues("snapshot").Dec()
		return r.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": ""})
	})
	err := r.vm.CreateTemporarySnapshot(ctx, b.ProjectID, id, b.VolumeID, "backup-"+b.ID, "temporary snapshot of backup "+b.ID)
	if err != nil {
		return "", fmt.Errorf("take the temporary snapshot: %w", err)
	}
	return id, nil
}

// temporaryVolume clones the volume into a temporary one, id recorded first.
func (r *Runner) temporaryVolume(ctx context.Context, b *backupdb.Backup, src *source) (string, error) {
	id := uuid.NewString()
	if err := r.db.Update(ctx, b.ID, map[string]any{"temp_volume_id": id}); err != nil {
		return "", err
	}
	metrics.TemporaryResources.WithLabelValues("volume").Inc()
	src.defer_(func(ctx context.Context) error {
		if err := r.deleteTemporaryVolume(ctx, b.ProjectID, id); err != nil {
			return err
		}
		metrics.TemporaryResources.WithLabelValues("volume").Dec()
		return r.db.Update(ctx, b.ID, map[string]any{"temp_volume_id": ""})
	})
	err := r.vm.CreateTemporaryVolume(ctx, b.ProjectID, id, b.VolumeID, "backup-"+b.ID, "temporary volume of backup "+b.ID)
	if err != nil {
		return "", fmt.Errorf("clone the temporary volume: %w", err)
	}
	return id, nil
}

// attachSnapshot attaches a snapshot (the blueprint's attach snapshot) and
// opens it; the detach is registered for release.
func (r *Runner) attachSnapshot(ctx context.Context, b *backupdb.Backup, snapID string, local bool, src *source) error {
	src.defer_(func(ctx context.Context) error {
		return ignoreNotFound(r.vm.DetachSnapshot(ctx, b.ProjectID, snapID))
	})
	conn, err := r.vm.AttachSnapshot(ctx, b.ProjectID, snapID, Connector{Host: r.cfg.NodeID, Local: local, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("attach snapshot %s: %w", snapID, err)
	}
	src.dev, err = r.open(ctx, conn, true)
	return err
}

// attachVolume attaches a volume for job serverID and opens it: read-only
// for a backup, read-write (around the page cache) for a restore; the
// detach is registered for release.
func (r *Runner) attachVolume(ctx context.Context, b *backupdb.Backup, volID string, local bool, src *source) error {
	return r.attach(ctx, b.ProjectID, volID, "backup-"+b.ID, Connector{Host: r.cfg.NodeID, Local: local, ReadOnly: true}, src,
		"attach volume "+volID)
}

// attachForRestore attaches the target of a restore read-write and opens it.
func (r *Runner) attachForRestore(ctx context.Context, b *backupdb.Backup, volID string, src *source) error {
	c, err := r.vm.Capabilities(ctx)
	if err != nil {
		return fmt.Errorf("ask the volume manager for its capabilities: %w", err)
	}
	return r.attach(ctx, b.ProjectID, volID, "restore-"+b.ID, Connector{Host: r.cfg.NodeID, Local: r.local(c), DirectIO: true}, src,
		"attach volume "+volID+" for the restore")
}

// attach attaches volume volID for job serverID, opens it, and registers
// the detach; what names the step in an error.
func (r *Runner) attach(ctx context.Context, project, volID, serverID string, c Connector, src *source, what string) error {
	a, err := r.vm.AttachVolume(ctx, project, volID, serverID, c)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	src.defer_(func(ctx context.Context) error {
		return ignoreNotFound(r.vm.DetachVolume(ctx, project, a.ID))
	})
	src.dev, err = r.open(ctx, a.Connection, c.ReadOnly)
	return err
}

func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func (r *Runner) deleteTemporarySnapshot(ctx context.Context, project, id string) error {
	r.vm.DetachSnapshot(ctx, project, id)
	if err := ignoreNotFound(r.vm.DeleteSnapshot(ctx, project, id)); err != nil {
		return fmt.Errorf("delete temporary snapshot %s: %w", id, err)
	}
	return nil
}

func (r *Runner) deleteTemporaryVolume(ctx context.Context, project, id string) error {
	// Detach whatever still holds it (an interrupted backup's attachment).
	if atts, err := r.vm.Attachments(ctx, project, id); err == nil {
		for _, a := range atts {
			r.vm.DetachVolume(ctx, project, a.ID)
		}
	}
	if err := ignoreNotFound(r.vm.DeleteVolume(ctx, project, id)); err != nil {
		return fmt.Errorf("delete temporary volume %s: %w", id, err)
	}
	return nil
}

// detachOwn removes the attachments of a volume that a job (named by
// serverID) made.
func (r *Runner) detachOwn(ctx context.Context, project, volumeID, serverID string) {
	atts, err := r.vm.Attachments(ctx, project, volumeID)
	if err != nil {
		return
	}
	for _, a := range atts {
		if a.ServerID == serverID {
			r.vm.DetachVolume(ctx, project, a.ID)
		}
	}
}

// reconnectWindow is how long a broken NBD connection is dialed again.
const reconnectWindow = time.Minute

// nbdStallTimeout is how long requests may wait without a byte from the
// volume manager before the connection is taken as broken (and dialed
// again): a hung volume manager must not hold a backup or restore for ever.
// Generous, as a flush of a large target may take a while.
const nbdStallTimeout = 2 * time.Minute

// open opens what the volume manager handed out: a local path (same node)
// or an NBD export (any node).
func (r *Runner) open(ctx context.Context, c Connection, readOnly bool) (blockdev.Device, error) {
	switch c.Type {
	case "local":
		// Read-write is a restore's target: its whole-chunk writes go
		// around the page cache.
		var dev *blockdev.File
		var err error
		if readOnly {
			dev, err = blockdev.OpenFile(c.DevicePath, true)
		} else {
			dev, err = blockdev.OpenFileForBulkWrites(c.DevicePath)
		}
		if err != nil {
			return nil, fmt.Errorf("open local path: %w", err)
		}
		return dev, nil
	case "nbd":
		opts := nbd.DialOptions{ExportName: c.ExportName, StallTimeout: nbdStallTimeout}
		if c.TLS {
			if r.cfg.NBDTLS == nil {
				return nil, fmt.Errorf("the export requires TLS; give the backup service --tls-cert, --tls-key and --tls-ca")
			}
			opts.TLSConfig = r.cfg.NBDTLS.Clone()
			opts.TLSConfig.ServerName = c.Host
		}
		addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
		// A dropped connection is dialed again and the failed requests
		// retried, for up to reconnectWindow (a volume manager restarting
		// brings its exports back under the same names).
		dev, err := nbd.DialReconnecting(ctx, "tcp", addr, opts, reconnectWindow)
		if err != nil {
			return nil, fmt.Errorf("connect to the NBD export at %s: %w", addr, err)
		}
		return dev, nil
	}
	return nil, fmt.Errorf("unknown connection type %q", c.Type)
}
