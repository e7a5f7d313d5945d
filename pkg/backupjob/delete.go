package backupjob

import (
	"context"
	"errors"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// runDelete removes a deleting backup's data (and the snapshot it kept for
// changed-block tracking), then its row; on failure the backup becomes
// error_deleting with the reason. An imported backup's data is another
// system's repository: only its row goes.
func (r *Runner) runDelete(ctx context.Context, b *backupdb.Backup) {
	started := time.Now()
	var err error
	if b.TrackingSnapshotID != "" {
		// The snapshot kept for the next incremental backup goes with it.
		err = r.persist(ctx, func(ctx context.Context) error {
			return r.deleteTemporarySnapshot(ctx, b.ProjectID, b.TrackingSnapshotID)
		})
		if err == nil {
			err = r.db.Update(ctx, b.ID, map[string]any{"tracking_snapshot_id": ""})
		}
	}
	if err == nil && b.Origin == "" {
		err = r.engine.Delete(ctx, b.Container, b.ID)
		if errors.Is(err, engine.ErrNoBackup) {
			err = nil // never written, or deleted before a crash
		}
	}
	finished("delete", started, err)
	if err != nil && ctx.Err() != nil {
		// Stopped (the service is shutting down): the backup stays
		// deleting and the next start resumes the delete.
		r.log.Info("delete interrupted; it resumes at the next start", "backup_id", b.ID)
		return
	}
	if err != nil {
		r.log.Warn("delete backup data", "backup_id", b.ID, "err", err)
		r.db.Transition(context.WithoutCancel(ctx), b.ID, lifecycle.DeleteFailed,
			map[string]any{"fail_reason": failReason("delete", err)})
		return
	}
	if err := r.db.Delete(context.WithoutCancel(ctx), b.ID); err != nil {
		r.log.Error("delete backup row", "backup_id", b.ID, "err", err)
		return
	}
	r.log.Info("backup deleted", "backup_id", b.ID)
}
