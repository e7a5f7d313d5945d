package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/validate"
)

// RestoreBackup implements BackupService: into a new volume of the
// backup's size, or into an existing available volume at least as large.
func (s *Server) RestoreBackup(ctx context.Context, req *backupv1.RestoreBackupRequest) (*backupv1.RestoreBackupResponse, error) {
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return nil, err
	}
	in := req.GetRestore()
	for _, c := range []error{validate.OptionalUUID("volume_id", in.GetVolumeId()), validate.Text("name", in.GetName())} {
		if c != nil {
			return nil, c
		}
	}
	b, err := s.db.Get(ctx, req.GetProjectId(), req.GetBackupId())
	if err != nil {
		return nil, err
	}
	if b.Status != lifecycle.BackupAvailable {
		return nil, rpcerr.Invalid("Invalid backup: backup %s is %s; only an available backup can be restored.", b.ID, b.Status)
	}
	live := in.GetLive()
	switch {
	case live && in.GetVolumeId() != "":
		return nil, rpcerr.Invalid("a live restore makes a new volume: leave volume_id out (an existing volume is restored the ordinary way)")
	case live && b.Origin != "":
		return nil, rpcerr.Invalid("backup %s was imported from Cinder (%s): it restores the ordinary way, not live", b.ID, b.Origin)
	case live && !s.live:
		return nil, rpcerr.Invalid("this backup service serves no live restores (it has no NBD listener for them)")
	}

	// The target: an existing volume is checked (available, large enough)
	// by the volume manager's conditional update; a new one is made first.
	volID, volName, created := in.GetVolumeId(), in.GetName(), false
	if volID == "" {
		if volName == "" {
			volName = "restore_backup_" + b.ID
		}
		cv, err := s.vm.volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: b.ProjectID, Volume: &volumev1.VolumeInput{
			SizeBytes: roundMiB(b.SizeBytes), Name: volName, Description: "restored from backup " + b.ID}})
		if err != nil {
			return nil, fmt.Errorf("create the volume to restore into: %w", err)
		}
		volID, created = cv.GetVolume().GetId(), true
	}
	undoVolume := func() {
		if created {
			s.vm.volumes.DeleteVolume(context.WithoutCancel(ctx), &volumev1.DeleteVolumeRequest{ProjectId: b.ProjectID, VolumeId: volID})
		}
	}
	// The backup first: a second restore or a delete racing this one loses.
	if cur, err := s.db.Transition(ctx, b.ID, lifecycle.BeginRestore,
		map[string]any{"restore_volume_id": volID, "restore_live": live, "owner_node": s.cfg.Jobs.NodeID, "lease_expires_at": s.jobs.Lease()}); err != nil {
		undoVolume()
		if errors.Is(err, store.ErrConflict) {
			return nil, rpcerr.Invalid("Invalid backup: backup %s is %s; only an available backup can be restored.", b.ID, cur)
		}
		return nil, err
	}
	bv, err := s.vm.internal.BeginRestore(ctx, &volumev1.BeginRestoreRequest{ProjectId: b.ProjectID, VolumeId: volID, MinSizeBytes: b.SizeBytes})
	if err != nil {
		s.db.Transition(context.WithoutCancel(ctx), b.ID, lifecycle.EndRestore, map[string]any{"restore_volume_id": ""})
		undoVolume()
		return nil, err
	}
	if volName == "" {
		volName = bv.GetVolume().GetName()
	}
	now := time.Now().UTC()
	s.db.Update(ctx, b.ID, map[string]any{"progress_op": "restore", "bytes_done": 0, "bytes_total": b.SizeBytes,
		"bytes_read": 0, "bytes_stored": 0, "started_at": now})
	s.log.InfoContext(ctx, "restore accepted", "backup_id", b.ID, "volume_id", volID, "live", live)
	if live {
		// The answer waits until the volume is usable (the volume manager
		// took it over), or says why it never will be.
		select {
		case err := <-s.jobs.LiveRestore(ctx, b.ID, volID):
			if err != nil {
				return nil, fmt.Errorf("live restore of backup %s: %w", b.ID, err)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		s.jobs.Restore(ctx, b.ID, volID)
	}
	return &backupv1.RestoreBackupResponse{Restore: &backupv1.RestoreResult{BackupId: b.ID, VolumeId: volID, VolumeName: volName}}, nil
}

func roundMiB(n int64) int64 {
	const mib = 1 << 20
	return (n + mib - 1) / mib * mib
}
