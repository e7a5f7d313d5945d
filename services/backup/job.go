package backup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/failpoint"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// source is what a backup reads, and how to give it back.
type source struct {
	strategy string
	dev      blockdev.Device
	// snapshotID is the temporary snapshot read from, if any; with
	// changed-block tracking (track) it is kept after a successful backup
	// (keep) instead of deleted, and changed lists what differs from the
	// parent backup's kept snapshot (nil: unknown).
	snapshotID  string
	track, keep bool
	changed     []ByteRange
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

// runBackup is the background part of a backup: choose and open the source,
// stream it into the repository, and on every path release the source and
// end the backup on the volume.
func (s *Server) runBackup(ctx context.Context, id, previousStatus string) {
	b, err := s.db.Get(ctx, "", id)
	if err != nil {
		s.log.Error("backup vanished before it ran", "backup_id", id, "err", err)
		return
	}
	log := s.log.With("backup_id", id, "volume_id", b.VolumeID, "request_id", requestid.From(ctx))
	cleanupCtx := context.WithoutCancel(ctx)
	started := time.Now()
	defer func() { finished("backup", started, err) }()

	failpoint.Pause("backup-begun")
	src, err := s.openBackupSource(ctx, b, previousStatus)
	if src != nil && src.strategy != "" {
		s.db.Update(cleanupCtx, b.ID, map[string]any{"strategy": src.strategy})
	}
	failpoint.Pause("backup-source-attached")
	var res BackupResult
	if err == nil {
		reuse := s.reuseFrom(ctx, b)
		log.Info("backup reading", "strategy", src.strategy, "reuse_from", reuse)
		res, err = s.engine.Backup(ctx, b.Container, src.dev, BackupSpec{
			BackupID: b.ID, VolumeID: b.VolumeID, ParentID: b.ParentID, Changed: src.changed, ReuseFrom: reuse,
			Progress: s.progressRecorder(b.ID, "backup"),
		})
	}
	failpoint.Pause("backup-stored")
	if err == nil && src.track {
		// The snapshot outlives the backup for the next incremental one;
		// it stays recorded as temporary until the backup is available.
		src.keep = true
	}
	if src != nil {
		if rerr := s.persist(cleanupCtx, src.release); rerr != nil {
			log.Error("releasing the backup source", "err", rerr)
			if err == nil {
				err = fmt.Errorf("release the source: %w", rerr)
			}
		}
	}
	failpoint.Pause("backup-source-released")
	endErr := s.persist(cleanupCtx, func(ctx context.Context) error { return s.endBackup(ctx, b) })
	failpoint.Pause("backup-ended")

	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if src != nil && src.keep {
			s.dropKeptSnapshot(cleanupCtx, b, src.snapshotID)
		}
		if ctx.Err() != nil {
			// Cancelled (force-delete or shutdown): whatever was written goes.
			s.engine.Delete(cleanupCtx, b.Container, b.ID)
		}
		reason := failReason("backup", err)
		if errors.Is(err, context.Canceled) {
			reason = "backup cancelled"
		}
		if terr := s.settle(cleanupCtx, b.ID, lifecycle.CreateFailed, map[string]any{"fail_reason": reason}); terr != nil {
			if errors.Is(terr, store.ErrConflict) {
				log.Info("backup ended in another status", "err", terr)
			} else {
				log.Error("the backup failed and its status could not be recorded; the next start of the backup service marks it error", "err", terr)
			}
		}
		log.Warn("backup failed", "err", err)
		return
	}
	extra := map[string]any{"object_count": res.ObjectCount, "fail_reason": "", "bytes_done": b.SizeBytes}
	if src.keep {
		// In the same update as available: a crash before it leaves the
		// snapshot recorded as temporary, for the recovery to delete.
		extra["temp_snapshot_id"] = ""
		extra["tracking_snapshot_id"] = src.snapshotID
		// The older kept snapshots go first: whatever happens next, at
		// most one is left (losing both only makes the next incremental
		// read everything).
		s.pruneTracking(cleanupCtx, b)
	}
	if endErr != nil {
		// The data is safe, but the volume may still say backing-up; the
		// restart recovery ends it. Say so on the backup.
		extra["fail_reason"] = "backup stored, but the volume's status could not be restored yet: " + endErr.Error()
	}
	if err := s.settle(cleanupCtx, b.ID, lifecycle.CreateDone, extra); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Force-deleted meanwhile: it must never flip back to available.
			log.Info("backup finished after it was cancelled; removing its data", "err", err)
			s.engine.Delete(cleanupCtx, b.Container, b.ID)
			if src.keep {
				s.dropKeptSnapshot(cleanupCtx, b, src.snapshotID)
			}
			return
		}
		// The database stayed unreachable: the data is kept, the row stays
		// creating, and the next start's recovery marks it error (a backup
		// is available only once that is recorded).
		log.Error("backup stored but its status could not be recorded; the next start of the backup service marks it error", "err", err)
		return
	}
	log.Info("backup available", "objects", res.ObjectCount)
}

// dropKeptSnapshot deletes a snapshot a failed or cancelled backup would
// have kept for changed-block tracking.
func (s *Server) dropKeptSnapshot(ctx context.Context, b *backupdb.Backup, snapID string) {
	if err := s.persist(ctx, func(ctx context.Context) error { return s.deleteTemporarySnapshot(ctx, b.ProjectID, snapID) }); err != nil {
		s.log.Error("deleting the snapshot of a failed backup; the next start of the backup service retries", "backup_id", b.ID, "snapshot_id", snapID, "err", err)
		return
	}
	s.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": "", "tracking_snapshot_id": ""})
}

// pruneTracking deletes the snapshots older backups of b's volume kept
// for changed-block tracking: the next incremental backup's parent is b.
func (s *Server) pruneTracking(ctx context.Context, b *backupdb.Backup) {
	older, err := s.db.TrackedBy(ctx, b.VolumeID, b.ID)
	if err != nil {
		s.log.Warn("listing older tracking snapshots", "volume_id", b.VolumeID, "err", err)
		return
	}
	for _, o := range older {
		s.dropTracking(ctx, &o)
	}
}

// dropTracking deletes the snapshot backup o kept for changed-block
// tracking, and forgets it.
func (s *Server) dropTracking(ctx context.Context, o *backupdb.Backup) {
	if o.TrackingSnapshotID == "" {
		return
	}
	if err := s.deleteTemporarySnapshot(ctx, o.ProjectID, o.TrackingSnapshotID); err != nil {
		s.log.Warn("deleting a tracking snapshot", "backup_id", o.ID, "snapshot_id", o.TrackingSnapshotID, "err", err)
		return
	}
	s.db.Update(ctx, o.ID, map[string]any{"tracking_snapshot_id": ""})
}

// changedSince asks the volume manager which ranges of b's volume differ
// between the snapshot b's parent backup kept and snapID. nil (read
// everything) when b has no parent, the parent kept no snapshot, or the
// volume manager cannot tell.
func (s *Server) changedSince(ctx context.Context, b *backupdb.Backup, snapID string) []ByteRange {
	if b.ParentID == "" {
		return nil
	}
	parent, err := s.db.Get(ctx, "", b.ParentID)
	if err != nil || parent.TrackingSnapshotID == "" {
		return nil
	}
	r, err := s.internal.GetChangedRanges(ctx, &volumev1.GetChangedRangesRequest{ProjectId: b.ProjectID, VolumeId: b.VolumeID,
		FromSnapshotId: parent.TrackingSnapshotID, ToSnapshotId: snapID})
	if err != nil {
		s.log.Warn("changed ranges unknown; reading the whole volume", "backup_id", b.ID, "parent_id", b.ParentID, "err", err)
		return nil
	}
	out := make([]ByteRange, 0, len(r.GetRanges()))
	var total int64
	for _, x := range r.GetRanges() {
		out = append(out, ByteRange{Offset: x.GetOffset(), Length: x.GetLength()})
		total += x.GetLength()
	}
	s.log.Info("changed ranges since the parent backup", "backup_id", b.ID, "parent_id", b.ParentID, "ranges", len(out), "bytes", total)
	return out
}

// settle applies event ev to backup id, retrying while the
// database is unreachable (for up to Config.CleanupTimeout). A conflict
// (the backup left from meanwhile: force-deleted) returns at once.
func (s *Server) settle(ctx context.Context, id string, ev lifecycle.Event, extra map[string]any) error {
	deadline := time.Now().Add(s.cfg.cleanupTimeout())
	delay := 200 * time.Millisecond
	for {
		_, err := s.db.Transition(ctx, id, ev, extra)
		if err == nil || !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		s.log.Warn("the database is unreachable; retrying the backup's final status", "backup_id", id, "err", err, "in", delay)
		time.Sleep(delay)
		delay = min(delay*2, 5*time.Second)
	}
}

// persist runs a cleanup step, retrying while the volume manager is
// unreachable (for up to Config.CleanupTimeout), so a volume manager that
// restarts during a backup still gets its temporary resources removed and
// its volume's status restored.
func (s *Server) persist(ctx context.Context, step func(ctx context.Context) error) error {
	deadline := time.Now().Add(s.cfg.cleanupTimeout())
	delay := 200 * time.Millisecond
	for {
		err := step(ctx)
		if err == nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		s.log.Warn("the volume manager is unreachable; retrying the cleanup", "err", err, "in", delay)
		time.Sleep(delay)
		delay = min(delay*2, 5*time.Second)
	}
}

// transient reports whether err is worth retrying: the peer (or the
// database) is down or slow. Of errors joined together, one is enough.
func transient(err error) bool {
	if errors.Is(err, store.ErrUnavailable) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if u, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range u.Unwrap() {
				if transient(x) {
					return true
				}
			}
			return false
		}
		if g, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			switch g.GRPCStatus().Code() {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
				return true
			}
			return false
		}
	}
	return false
}

// openBackupSource chooses the strategy and opens the data to read.
func (s *Server) openBackupSource(ctx context.Context, b *backupdb.Backup, previousStatus string) (*source, error) {
	caps, err := s.volumes.GetCapabilities(ctx, &volumev1.GetCapabilitiesRequest{})
	if err != nil {
		return nil, fmt.Errorf("ask the volume manager for its capabilities: %w", err)
	}
	c := caps.GetCapabilities()
	local := s.cfg.LocalReads && c.GetLocalPath() && c.GetNodeId() == s.cfg.NodeID
	src := &source{}
	fail := func(err error) (*source, error) {
		return src, err
	}

	switch {
	case b.SnapshotID != "":
		src.strategy = StrategySnapshot
		if err := s.attachSnapshot(ctx, b, b.SnapshotID, local, src); err != nil {
			return fail(err)
		}
		return src, nil
	case previousStatus == lifecycle.VolumeAvailable:
		src.strategy = StrategyVolume
		return src, s.attachVolume(ctx, b, b.VolumeID, local, src)
	}

	strategy := s.cfg.Strategy
	if strategy == "" {
		switch {
		case c.GetSnapshot() && local:
			strategy = StrategyLocalSnapshot
		case c.GetSnapshot() && c.GetSnapshotExport():
			strategy = StrategyAttachedSnapshot
		case c.GetClone():
			strategy = StrategyTemporaryVolume
		default:
			return fail(fmt.Errorf("the storage backend %s can neither snapshot nor clone an in-use volume; detach it to back it up", c.GetDriver()))
		}
	}
	src.strategy = strategy

	switch strategy {
	case StrategyLocalSnapshot, StrategyAttachedSnapshot:
		snapID, err := s.temporarySnapshot(ctx, b, src)
		if err != nil {
			return fail(err)
		}
		src.snapshotID = snapID
		if s.cfg.ChangedBlockTracking && c.GetChangedRanges() {
			src.track = true
			src.changed = s.changedSince(ctx, b, snapID)
		}
		return src, s.attachSnapshot(ctx, b, snapID, strategy == StrategyLocalSnapshot, src)
	case StrategyTemporaryVolume:
		volID, err := s.temporaryVolume(ctx, b, src)
		if err != nil {
			return fail(err)
		}
		return src, s.attachVolume(ctx, b, volID, local, src)
	}
	return fail(fmt.Errorf("unknown backup strategy %q", strategy))
}

// temporarySnapshot takes the temporary snapshot, its id recorded on the
// backup first so a crash at any point leaves a trace to clean up.
func (s *Server) temporarySnapshot(ctx context.Context, b *backupdb.Backup, src *source) (string, error) {
	id := uuid.NewString()
	if err := s.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": id}); err != nil {
		return "", err
	}
	metrics.TemporaryResources.WithLabelValues("snapshot").Inc()
	src.defer_(func(ctx context.Context) error {
		if src.keep {
			// Kept for changed-block tracking (runBackup records it).
			metrics.TemporaryResources.WithLabelValues("snapshot").Dec()
			return nil
		}
		if err := s.deleteTemporarySnapshot(ctx, b.ProjectID, id); err != nil {
			return err
		}
		metrics.TemporaryResources.WithLabelValues("snapshot").Dec()
		return s.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": ""})
	})
	_, err := s.internal.CreateTemporarySnapshot(ctx, &volumev1.CreateTemporarySnapshotRequest{ProjectId: b.ProjectID,
		Id: id, VolumeId: b.VolumeID, Name: "backup-" + b.ID, Description: "temporary snapshot of backup " + b.ID})
	if err != nil {
		return "", fmt.Errorf("take the temporary snapshot: %w", err)
	}
	return id, nil
}

// temporaryVolume clones the volume into a temporary one, id recorded first.
func (s *Server) temporaryVolume(ctx context.Context, b *backupdb.Backup, src *source) (string, error) {
	id := uuid.NewString()
	if err := s.db.Update(ctx, b.ID, map[string]any{"temp_volume_id": id}); err != nil {
		return "", err
	}
	metrics.TemporaryResources.WithLabelValues("volume").Inc()
	src.defer_(func(ctx context.Context) error {
		if err := s.deleteTemporaryVolume(ctx, b.ProjectID, id); err != nil {
			return err
		}
		metrics.TemporaryResources.WithLabelValues("volume").Dec()
		return s.db.Update(ctx, b.ID, map[string]any{"temp_volume_id": ""})
	})
	_, err := s.internal.CreateTemporaryVolume(ctx, &volumev1.CreateTemporaryVolumeRequest{ProjectId: b.ProjectID,
		Id: id, SourceVolid: b.VolumeID, Name: "backup-" + b.ID, Description: "temporary volume of backup " + b.ID})
	if err != nil {
		return "", fmt.Errorf("clone the temporary volume: %w", err)
	}
	return id, nil
}

// attachSnapshot attaches a snapshot (the blueprint's attach snapshot) and
// opens it; the detach is registered for release.
func (s *Server) attachSnapshot(ctx context.Context, b *backupdb.Backup, snapID string, local bool, src *source) error {
	src.defer_(func(ctx context.Context) error {
		_, err := s.internal.DetachSnapshot(ctx, &volumev1.DetachSnapshotRequest{ProjectId: b.ProjectID, SnapshotId: snapID})
		if isNotFound(err) {
			return nil
		}
		return err
	})
	r, err := s.internal.AttachSnapshot(ctx, &volumev1.AttachSnapshotRequest{ProjectId: b.ProjectID, SnapshotId: snapID,
		Connector: &volumev1.Connector{Host: s.cfg.NodeID, Local: local, Mode: "ro"}})
	if err != nil {
		return fmt.Errorf("attach snapshot %s: %w", snapID, err)
	}
	dev, err := openConnection(ctx, r.GetConnectionInfo(), true, s.cfg.NBDTLS)
	if err != nil {
		return err
	}
	src.dev = dev
	return nil
}

// attachVolume attaches a volume read-only and opens it.
func (s *Server) attachVolume(ctx context.Context, b *backupdb.Backup, volID string, local bool, src *source) error {
	r, err := s.internal.AttachForBackup(ctx, &volumev1.AttachForBackupRequest{ProjectId: b.ProjectID, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: volID, InstanceUuid: "backup-" + b.ID, Mode: "ro", Connector: &volumev1.Connector{Host: s.cfg.NodeID, Local: local, Mode: "ro"}}})
	if err != nil {
		return fmt.Errorf("attach volume %s: %w", volID, err)
	}
	attID := r.GetAttachment().GetId()
	src.defer_(func(ctx context.Context) error {
		_, err := s.volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: b.ProjectID, AttachmentId: attID})
		if isNotFound(err) {
			return nil
		}
		return err
	})
	dev, err := openConnection(ctx, r.GetAttachment().GetConnectionInfo(), true, s.cfg.NBDTLS)
	if err != nil {
		return err
	}
	src.dev = dev
	return nil
}

func (s *Server) deleteTemporarySnapshot(ctx context.Context, project, id string) error {
	s.internal.DetachSnapshot(ctx, &volumev1.DetachSnapshotRequest{ProjectId: project, SnapshotId: id})
	_, err := s.volumes.DeleteSnapshot(ctx, &volumev1.DeleteSnapshotRequest{ProjectId: project, SnapshotId: id})
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete temporary snapshot %s: %w", id, err)
	}
	return nil
}

func (s *Server) deleteTemporaryVolume(ctx context.Context, project, id string) error {
	// Detach whatever still holds it (an interrupted backup's attachment).
	if v, err := s.volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: id}); err == nil {
		for _, a := range v.GetVolume().GetAttachments() {
			s.volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: a.GetId()})
		}
	}
	_, err := s.volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: id})
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete temporary volume %s: %w", id, err)
	}
	return nil
}

// progressRecorder stores progress on the backup row, at most 4 times a
// second (and always the last update), and counts bytes in the metrics.
func (s *Server) progressRecorder(id, op string) ProgressFunc {
	var last time.Time
	var prev Progress
	start := time.Now()
	var half sync.Once
	return func(p Progress) {
		if p.Total > 0 && p.Done*2 >= p.Total {
			half.Do(func() { failpoint.Pause(op + "-half-done") })
		}
		if op == "backup" {
			metrics.Bytes.WithLabelValues("read").Add(float64(max(p.Read-prev.Read, 0)))
			metrics.Bytes.WithLabelValues("stored").Add(float64(max(p.Stored-prev.Stored, 0)))
		} else {
			metrics.Bytes.WithLabelValues("written").Add(float64(max(p.Done-prev.Done, 0)))
		}
		prev = p
		if el := time.Since(start).Seconds(); el > 0 {
			metrics.Throughput.WithLabelValues(op).Set(float64(p.Done) / el)
		}
		if time.Since(last) < 250*time.Millisecond && p.Done < p.Total {
			return
		}
		last = time.Now()
		s.db.Update(context.Background(), id, map[string]any{"progress_op": op, "bytes_done": p.Done,
			"bytes_total": p.Total, "bytes_read": p.Read, "bytes_stored": p.Stored})
	}
}

// reuseFrom picks, for a full backup, the newest available backup of the
// same volume in the same container: the chunks it lists are not stored
// again (a second full backup of a volume that changed little compresses
// and writes only what changed). The new backup's manifest still lists
// every chunk, so it depends on no other backup. "" when there is none.
func (s *Server) reuseFrom(ctx context.Context, b *backupdb.Backup) string {
	if b.ParentID != "" {
		return ""
	}
	p, err := s.db.LatestAvailable(ctx, b.ProjectID, b.VolumeID)
	if err != nil || p.Container != b.Container || p.ID == b.ID {
		return ""
	}
	return p.ID
}
