package backupjob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/failpoint"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// runBackup is the background part of a backup: choose and open the source,
// stream it into the repository, and on every path release the source and
// end the backup on the volume.
func (r *Runner) runBackup(ctx context.Context, id, previousStatus string) {
	b, err := r.db.Get(ctx, "", id)
	if err != nil {
		r.log.Error("backup vanished before it ran", "backup_id", id, "err", err)
		return
	}
	log := r.log.With("backup_id", id, "volume_id", b.VolumeID, "request_id", requestid.From(ctx))
	cleanupCtx := context.WithoutCancel(ctx)
	started := time.Now()
	defer func() { finished("backup", started, err) }()

	failpoint.Pause("backup-begun")
	src, err := r.openBackupSource(ctx, b, previousStatus)
	if src != nil && src.strategy != "" {
		r.db.Update(cleanupCtx, b.ID, map[string]any{"strategy": src.strategy})
	}
	failpoint.Pause("backup-source-attached")
	var m *engine.Manifest
	if err == nil {
		reuse := r.reuseFrom(ctx, b)
		log.Info("backup reading", "strategy", src.strategy, "reuse_from", reuse)
		m, err = r.engine.Backup(ctx, b.Container, src.dev, engine.BackupSpec{
			BackupID: b.ID, VolumeID: b.VolumeID, ParentID: b.ParentID, Changed: src.changed, ReuseFrom: reuse,
			Progress: r.progressRecorder(b.ID, "backup"),
		})
	}
	failpoint.Pause("backup-stored")
	if err == nil && src.track {
		// The snapshot outlives the backup for the next incremental one;
		// it stays recorded as temporary until the backup is available.
		src.keep = true
	}
	if src != nil {
		if rerr := r.persist(cleanupCtx, src.release); rerr != nil {
			log.Error("releasing the backup source", "err", rerr)
			if err == nil {
				err = fmt.Errorf("release the source: %w", rerr)
			}
		}
	}
	failpoint.Pause("backup-source-released")
	endErr := r.persist(cleanupCtx, func(ctx context.Context) error { return r.endBackup(ctx, b) })
	failpoint.Pause("backup-ended")

	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		r.backupFailed(ctx, b, src, err, log)
		return
	}
	extra := map[string]any{"object_count": m.NewChunks, "fail_reason": "", "bytes_done": b.SizeBytes}
	if src.keep {
		// In the same update as available: a crash before it leaves the
		// snapshot recorded as temporary, for the recovery to delete.
		extra["temp_snapshot_id"] = ""
		extra["tracking_snapshot_id"] = src.snapshotID
		// The older kept snapshots go first: whatever happens next, at
		// most one is left (losing both only makes the next incremental
		// read everything).
		r.pruneTracking(cleanupCtx, b)
	}
	if endErr != nil {
		// The data is safe, but the volume may still say backing-up; the
		// restart recovery ends it. Say so on the backup.
		extra["fail_reason"] = "backup stored, but the volume's status could not be restored yet: " + endErr.Error()
	}
	if err := r.settle(cleanupCtx, b.ID, lifecycle.CreateDone, extra); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Force-deleted meanwhile: it must never flip back to available.
			log.Info("backup finished after it was cancelled; removing its data", "err", err)
			r.engine.Delete(cleanupCtx, b.Container, b.ID)
			if src.keep {
				r.dropKeptSnapshot(cleanupCtx, b, src.snapshotID)
			}
			return
		}
		// The database stayed unreachable: the data is kept, the row stays
		// creating, and the next start's recovery marks it error (a backup
		// is available only once that is recorded).
		log.Error("backup stored but its status could not be recorded; the next start of the backup service marks it error", "err", err)
		return
	}
	log.Info("backup available", "objects", m.NewChunks)
}

// backupFailed ends a backup that failed or was cancelled: a snapshot it
// would have kept goes, what a cancelled one wrote goes, and the backup
// becomes error with the reason.
func (r *Runner) backupFailed(ctx context.Context, b *backupdb.Backup, src *source, err error, log *slog.Logger) {
	cleanupCtx := context.WithoutCancel(ctx)
	if src != nil && src.keep {
		r.dropKeptSnapshot(cleanupCtx, b, src.snapshotID)
	}
	if ctx.Err() != nil {
		// Cancelled (force-delete or shutdown): whatever was written goes.
		r.engine.Delete(cleanupCtx, b.Container, b.ID)
	}
	reason := failReason("backup", err)
	if errors.Is(err, context.Canceled) {
		reason = "backup cancelled"
	}
	if terr := r.settle(cleanupCtx, b.ID, lifecycle.CreateFailed, map[string]any{"fail_reason": reason}); terr != nil {
		if errors.Is(terr, store.ErrConflict) {
			log.Info("backup ended in another status", "err", terr)
		} else {
			log.Error("the backup failed and its status could not be recorded; the next start of the backup service marks it error", "err", terr)
		}
	}
	log.Warn("backup failed", "err", err)
}

// endBackup returns the volume (or snapshot) to its previous status.
func (r *Runner) endBackup(ctx context.Context, b *backupdb.Backup) error {
	err := r.vm.EndBackup(ctx, b.ProjectID, b.VolumeID, b.SnapshotID)
	if err != nil {
		r.log.Error("end backup: the volume may stay backing-up until the next recovery", "backup_id", b.ID, "volume_id", b.VolumeID, "err", err)
	}
	return err
}

// dropKeptSnapshot deletes a snapshot a failed or cancelled backup would
// have kept for changed-block tracking.
func (r *Runner) dropKeptSnapshot(ctx context.Context, b *backupdb.Backup, snapID string) {
	if err := r.persist(ctx, func(ctx context.Context) error { return r.deleteTemporarySnapshot(ctx, b.ProjectID, snapID) }); err != nil {
		r.log.Error("deleting the snapshot of a failed backup; the next start of the backup service retries", "backup_id", b.ID, "snapshot_id", snapID, "err", err)
		return
	}
	r.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": "", "tracking_snapshot_id": ""})
}

// pruneTracking deletes the snapshots older backups of b's volume kept
// for changed-block tracking: the next incremental backup's parent is b.
func (r *Runner) pruneTracking(ctx context.Context, b *backupdb.Backup) {
	older, err := r.db.TrackedBy(ctx, b.VolumeID, b.ID)
	if err != nil {
		r.log.Warn("listing older tracking snapshots", "volume_id", b.VolumeID, "err", err)
		return
	}
	for _, o := range older {
		r.dropTracking(ctx, &o)
	}
}

// dropTracking deletes the snapshot backup o kept for changed-block
// tracking, and forgets it.
func (r *Runner) dropTracking(ctx context.Context, o *backupdb.Backup) {
	if o.TrackingSnapshotID == "" {
		return
	}
	if err := r.deleteTemporarySnapshot(ctx, o.ProjectID, o.TrackingSnapshotID); err != nil {
		r.log.Warn("deleting a tracking snapshot", "backup_id", o.ID, "snapshot_id", o.TrackingSnapshotID, "err", err)
		return
	}
	r.db.Update(ctx, o.ID, map[string]any{"tracking_snapshot_id": ""})
}

// changedSince asks the volume manager which ranges of b's volume differ
// between the snapshot b's parent backup kept and snapID. nil (read
// everything) when b has no parent, the parent kept no snapshot, or the
// volume manager cannot tell.
func (r *Runner) changedSince(ctx context.Context, b *backupdb.Backup, snapID string) []engine.Range {
	if b.ParentID == "" {
		return nil
	}
	parent, err := r.db.Get(ctx, "", b.ParentID)
	if err != nil || parent.TrackingSnapshotID == "" {
		return nil
	}
	out, err := r.vm.ChangedRanges(ctx, b.ProjectID, b.VolumeID, parent.TrackingSnapshotID, snapID)
	if err != nil {
		r.log.Warn("changed ranges unknown; reading the whole volume", "backup_id", b.ID, "parent_id", b.ParentID, "err", err)
		return nil
	}
	if out == nil {
		out = []engine.Range{} // known: nothing changed
	}
	var total int64
	for _, x := range out {
		total += x.Length
	}
	r.log.Info("changed ranges since the parent backup", "backup_id", b.ID, "parent_id", b.ParentID, "ranges", len(out), "bytes", total)
	return out
}

// progressRecorder stores progress on the backup row, at most 4 times a
// second (and always the last update), and counts bytes in the metrics.
func (r *Runner) progressRecorder(id, op string) func(engine.Progress) {
	var last time.Time
	var prev engine.Progress
	start := time.Now()
	var half sync.Once
	return func(p engine.Progress) {
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
		r.db.Update(context.Background(), id, map[string]any{"progress_op": op, "bytes_done": p.Done,
			"bytes_total": p.Total, "bytes_read": p.Read, "bytes_stored": p.Stored})
	}
}

// reuseFrom picks, for a full backup, the newest available backup of the
// same volume in the same container: the chunks it lists are not stored
// again (a second full backup of a volume that changed little compresses
// and writes only what changed). The new backup's manifest still lists
// every chunk, so it depends on no other backup. "" when there is none.
func (r *Runner) reuseFrom(ctx context.Context, b *backupdb.Backup) string {
	if b.ParentID != "" {
		return ""
	}
	p, err := r.db.LatestAvailable(ctx, b.ProjectID, b.VolumeID)
	if err != nil || p.Container != b.Container || p.ID == b.ID {
		return ""
	}
	return p.ID
}
