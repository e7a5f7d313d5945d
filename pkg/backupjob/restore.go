package backupjob

import (
	"context"
	"fmt"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/failpoint"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// runRestore writes the backup into the target volume through a read-write
// attachment; the volume ends available, or error_restoring with the reason.
func (r *Runner) runRestore(ctx context.Context, backupID, volID string) {
	cleanupCtx := context.WithoutCancel(ctx)
	b, err := r.db.Get(ctx, "", backupID)
	if err != nil {
		r.log.Error("backup vanished before its restore ran", "backup_id", backupID, "err", err)
		return
	}
	log := r.log.With("backup_id", b.ID, "volume_id", volID, "request_id", requestid.From(ctx))
	started := time.Now()
	defer func() { finished("restore", started, err) }()
	src := &source{}
	failpoint.Pause("restore-begun")
	err = r.attachForRestore(ctx, b, volID, src)
	if err == nil {
		err = r.restoreData(ctx, b, src.dev)
	}
	if err == nil {
		err = src.dev.Flush()
	}
	failpoint.Pause("restore-written")
	if rerr := r.persist(cleanupCtx, src.release); rerr != nil && err == nil {
		err = fmt.Errorf("detach the restored volume: %w", rerr)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	reason := ""
	if err != nil {
		reason = failReason("restore of backup "+b.ID, err)
	}
	if eerr := r.persist(cleanupCtx, func(ctx context.Context) error {
		return r.vm.EndRestore(ctx, b.ProjectID, volID, err == nil, reason)
	}); eerr != nil {
		log.Error("end restore", "err", eerr)
	}
	// The backup itself is unharmed by a failed restore.
	cols := map[string]any{"restore_volume_id": "", "fail_reason": reason}
	if err != nil {
		log.Warn("restore failed", "err", err)
	} else {
		log.Info("restore finished")
	}
	if err := r.settle(cleanupCtx, b.ID, lifecycle.EndRestore, cols); err != nil {
		log.Error("the restore ended but the backup's status could not be recorded; the next start of the backup service sets it available", "err", err)
	}
}

// restoreData writes backup b onto dst: with the engine, or for an
// imported backup, with what reads its origin's format.
func (r *Runner) restoreData(ctx context.Context, b *backupdb.Backup, dst blockdev.Device) error {
	progress := r.progressRecorder(b.ID, "restore")
	if b.Origin == "" {
		return r.engine.Restore(ctx, b.Container, b.ID, dst, progress)
	}
	if r.imported == nil {
		return fmt.Errorf("backup %s was imported (%s) and this backup service cannot read its origin", b.ID, b.Origin)
	}
	return r.imported.Restore(ctx, b, dst, progress)
}
