package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/failpoint"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
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

	// The target: an existing volume is checked (available, large enough)
	// by the volume manager's conditional update; a new one is made first.
	volID, volName, created := in.GetVolumeId(), in.GetName(), false
	if volID == "" {
		if volName == "" {
			volName = "restore_backup_" + b.ID
		}
		cv, err := s.volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: b.ProjectID, Volume: &volumev1.VolumeInput{
			SizeBytes: roundMiB(b.SizeBytes), Name: volName, Description: "restored from backup " + b.ID}})
		if err != nil {
			return nil, fmt.Errorf("create the volume to restore into: %w", err)
		}
		volID, created = cv.GetVolume().GetId(), true
	}
	undoVolume := func() {
		if created {
			s.volumes.DeleteVolume(context.WithoutCancel(ctx), &volumev1.DeleteVolumeRequest{ProjectId: b.ProjectID, VolumeId: volID})
		}
	}
	// The backup first: a second restore or a delete racing this one loses.
	if cur, err := s.db.Transition(ctx, b.ID, lifecycle.BeginRestore,
		map[string]any{"restore_volume_id": volID, "owner_node": s.cfg.NodeID, "lease_expires_at": s.lease()}); err != nil {
		undoVolume()
		if errors.Is(err, store.ErrConflict) {
			return nil, rpcerr.Invalid("Invalid backup: backup %s is %s; only an available backup can be restored.", b.ID, cur)
		}
		return nil, err
	}
	bv, err := s.internal.BeginRestore(ctx, &volumev1.BeginRestoreRequest{ProjectId: b.ProjectID, VolumeId: volID, MinSizeBytes: b.SizeBytes})
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
	s.log.InfoContext(ctx, "restore accepted", "backup_id", b.ID, "volume_id", volID)
	s.start(ctx, b.ID, func(ctx context.Context) { s.runRestore(ctx, b.ID, volID) })
	return &backupv1.RestoreBackupResponse{Restore: &backupv1.RestoreResult{BackupId: b.ID, VolumeId: volID, VolumeName: volName}}, nil
}

func roundMiB(n int64) int64 {
	const mib = 1 << 20
	return (n + mib - 1) / mib * mib
}

// runRestore writes the backup into the target volume through a read-write
// attachment; the volume ends available, or error_restoring with the reason.
func (s *Server) runRestore(ctx context.Context, backupID, volID string) {
	cleanupCtx := context.WithoutCancel(ctx)
	b, err := s.db.Get(ctx, "", backupID)
	if err != nil {
		s.log.Error("backup vanished before its restore ran", "backup_id", backupID, "err", err)
		return
	}
	log := s.log.With("backup_id", b.ID, "volume_id", volID, "request_id", requestid.From(ctx))
	started := time.Now()
	defer func() { finished("restore", started, err) }()
	src := &source{}
	failpoint.Pause("restore-begun")
	err = s.attachForRestore(ctx, b, volID, src)
	if err == nil {
		err = s.engine.Restore(ctx, b.Container, b.ID, src.dev, s.progressRecorder(b.ID, "restore"))
	}
	if err == nil {
		err = src.dev.Flush()
	}
	failpoint.Pause("restore-written")
	if rerr := s.persist(cleanupCtx, src.release); rerr != nil && err == nil {
		err = fmt.Errorf("detach the restored volume: %w", rerr)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	end := &volumev1.EndRestoreRequest{ProjectId: b.ProjectID, VolumeId: volID, Success: err == nil}
	if err != nil {
		end.FailReason = failReason("restore of backup "+b.ID, err)
	}
	if eerr := s.persist(cleanupCtx, func(ctx context.Context) error {
		_, err := s.internal.EndRestore(ctx, end)
		return err
	}); eerr != nil {
		log.Error("end restore", "err", eerr)
	}
	// The backup itself is unharmed by a failed restore.
	cols := map[string]any{"restore_volume_id": ""}
	if err != nil {
		cols["fail_reason"] = end.FailReason
		log.Warn("restore failed", "err", err)
	} else {
		cols["fail_reason"] = ""
		log.Info("restore finished")
	}
	if err := s.settle(cleanupCtx, b.ID, lifecycle.EndRestore, cols); err != nil {
		log.Error("the restore ended but the backup's status could not be recorded; the next start of the backup service sets it available", "err", err)
	}
}

func (s *Server) attachForRestore(ctx context.Context, b *backupdb.Backup, volID string, src *source) error {
	caps, err := s.volumes.GetCapabilities(ctx, &volumev1.GetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("ask the volume manager for its capabilities: %w", err)
	}
	local := s.cfg.LocalReads && caps.GetCapabilities().GetLocalPath() && caps.GetCapabilities().GetNodeId() == s.cfg.NodeID
	r, err := s.internal.AttachForBackup(ctx, &volumev1.AttachForBackupRequest{ProjectId: b.ProjectID, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: volID, InstanceUuid: "restore-" + b.ID, Mode: "rw", Connector: &volumev1.Connector{Host: s.cfg.NodeID, Local: local, Mode: "rw", DirectIo: true}}})
	if err != nil {
		return fmt.Errorf("attach volume %s for the restore: %w", volID, err)
	}
	attID := r.GetAttachment().GetId()
	src.defer_(func(ctx context.Context) error {
		_, err := s.volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: b.ProjectID, AttachmentId: attID})
		if isNotFound(err) {
			return nil
		}
		return err
	})
	dev, err := openConnection(ctx, r.GetAttachment().GetConnectionInfo(), false, s.cfg.NBDTLS)
	if err != nil {
		return err
	}
	src.dev = dev
	return nil
}
