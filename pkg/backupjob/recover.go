package backupjob

import (
	"context"
	"errors"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// Recover finishes what a crash of this node interrupted, before new work
// is accepted: a backup left creating becomes error and its temporary
// snapshot or volume is removed and the volume returns to its previous
// status; a restore left restoring makes the backup available again and the
// target volume error_restoring; a live restore and a delete are resumed.
func (r *Runner) Recover(ctx context.Context) error {
	rows, err := r.db.List(ctx, backupdb.Filter{Statuses: unfinished})
	if err != nil {
		return err
	}
	var errs []error
	for i := range rows {
		b := &rows[i]
		if b.OwnerNode != "" && b.OwnerNode != r.cfg.NodeID {
			continue // another node's job: its lease decides (leases.go)
		}
		if err := r.recoverJob(ctx, b, MsgResetOnRestart, "restore interrupted by a restart of the backup service"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unfinished are the statuses of a backup with a job under way.
var unfinished = []string{lifecycle.BackupCreating, lifecycle.BackupRestoring, lifecycle.BackupDeleting}

// recoverJob ends or resumes the interrupted job of b: a backup becomes
// error (backupReason) with its temporary resources removed and its volume
// back in its previous status; a restore leaves the backup available and
// the target error_restoring (restoreReason); a delete is resumed here.
func (r *Runner) recoverJob(ctx context.Context, b *backupdb.Backup, backupReason, restoreReason string) error {
	log := r.log.With("backup_id", b.ID, "volume_id", b.VolumeID, "status", b.Status)
	switch b.Status {
	case lifecycle.BackupCreating:
		if err := r.recoverBackup(ctx, b, backupReason); err != nil {
			log.Error("recovering an interrupted backup", "err", err)
			return err
		}
		log.Warn("interrupted backup reset to error", "reason", backupReason)
	case lifecycle.BackupRestoring:
		if b.RestoreLive && b.RestoreVolumeID != "" {
			// The volume is (or was about to be) in use: the restore goes on.
			log.Info("resuming an interrupted live restore", "target", b.RestoreVolumeID)
			r.LiveRestore(ctx, b.ID, b.RestoreVolumeID)
			return nil
		}
		if b.RestoreVolumeID != "" {
			r.detachOwn(ctx, b.ProjectID, b.RestoreVolumeID, "restore-"+b.ID)
			r.vm.EndRestore(ctx, b.ProjectID, b.RestoreVolumeID, false, restoreReason)
		}
		r.db.Transition(ctx, b.ID, lifecycle.EndRestore, map[string]any{"restore_volume_id": ""})
		log.Warn("interrupted restore: backup available again, target volume error_restoring", "target", b.RestoreVolumeID)
	case lifecycle.BackupDeleting:
		log.Info("resuming an interrupted delete")
		r.Delete(ctx, b)
	}
	return nil
}

func (r *Runner) recoverBackup(ctx context.Context, b *backupdb.Backup, reason string) error {
	if b.TempSnapshotID != "" {
		if err := r.deleteTemporarySnapshot(ctx, b.ProjectID, b.TempSnapshotID); err != nil {
			return err
		}
		r.db.Update(ctx, b.ID, map[string]any{"temp_snapshot_id": ""})
	}
	if b.TempVolumeID != "" {
		if err := r.deleteTemporaryVolume(ctx, b.ProjectID, b.TempVolumeID); err != nil {
			return err
		}
		r.db.Update(ctx, b.ID, map[string]any{"temp_volume_id": ""})
	}
	// A read-only attachment of the volume (or of the user's snapshot) made
	// for the backup is removed too.
	if b.SnapshotID != "" {
		r.vm.DetachSnapshot(ctx, b.ProjectID, b.SnapshotID)
	}
	r.detachOwn(ctx, b.ProjectID, b.VolumeID, "backup-"+b.ID)
	if err := r.endBackup(ctx, b); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	// What the interrupted backup wrote is unreferenced: drop its manifest
	// if any; the chunks go with the next garbage collection.
	r.engine.Delete(ctx, b.Container, b.ID)
	_, err := r.db.Transition(ctx, b.ID, lifecycle.CreateFailed, map[string]any{"fail_reason": reason})
	return err
}
