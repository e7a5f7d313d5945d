package volumemanager

import (
	"context"
	"errors"
	"fmt"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/validate"
	"github.com/blockvault/blockvault/pkg/volume"
)

// MsgForceRequired is the Block Storage API's message for a backup of an
// in-use volume without force.
const MsgForceRequired = "Backing up an in-use volume must use the force flag."

// BeginBackup implements VolumeManagerInternalService: the blueprint's status swap.
func (s *Server) BeginBackup(ctx context.Context, req *volumev1.BeginBackupRequest) (*volumev1.BeginBackupResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := validate.OptionalUUID("snapshot_id", req.GetSnapshotId()); err != nil {
		return nil, err
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if err := liveRefusal(v, "a backup"); err != nil {
		return nil, err
	}
	if req.GetSnapshotId() != "" {
		sn, err := s.db.GetSnapshot(ctx, req.GetProjectId(), req.GetSnapshotId())
		if err != nil {
			return nil, err
		}
		if sn.VolumeID != v.ID {
			return nil, rpcerr.Invalid("snapshot %s is not a snapshot of volume %s", sn.ID, v.ID)
		}
		if cur, err := s.db.TransitionSnapshot(ctx, sn.ID, lifecycle.BeginBackup, nil); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, rpcerr.Invalid("Invalid snapshot: snapshot %s is %s; it must be available to be backed up.", sn.ID, cur)
			}
			return nil, err
		}
		out, err := s.snapshotView(ctx, sn.ID)
		if err != nil {
			return nil, err
		}
		vv, err := s.toVolume(ctx, v)
		if err != nil {
			return nil, err
		}
		return &volumev1.BeginBackupResponse{Volume: vv, Snapshot: out}, nil
	}
	cur, err := s.db.BeginBackup(ctx, v.ID, req.GetForce())
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			if cur == lifecycle.VolumeInUse {
				return nil, rpcerr.Invalid(MsgForceRequired)
			}
			return nil, rpcerr.Invalid("Invalid volume: volume %s is %s; it must be available or in-use to be backed up.", v.ID, cur)
		}
		return nil, err
	}
	out, err := s.volumeView(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "backup begins", "volume_id", v.ID, "previous_status", out.GetPreviousStatus())
	return &volumev1.BeginBackupResponse{Volume: out}, nil
}

// EndBackup implements VolumeManagerInternalService. Ending a backup that already
// ended is not an error (recovery may call it twice).
func (s *Server) EndBackup(ctx context.Context, req *volumev1.EndBackupRequest) (*volumev1.EndBackupResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := validate.OptionalUUID("snapshot_id", req.GetSnapshotId()); err != nil {
		return nil, err
	}
	resp := &volumev1.EndBackupResponse{}
	if req.GetSnapshotId() != "" {
		_, err := s.db.TransitionSnapshot(ctx, req.GetSnapshotId(), lifecycle.EndBackup, nil)
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		if resp.Snapshot, err = s.snapshotView(ctx, req.GetSnapshotId()); err != nil {
			return nil, err
		}
	} else {
		if _, err := s.db.EndBackup(ctx, req.GetVolumeId()); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
	}
	v, err := s.volumeView(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	resp.Volume = v
	s.log.InfoContext(ctx, "backup ends", "volume_id", v.GetId(), "status", v.GetStatus())
	return resp, nil
}

// BeginRestore implements VolumeManagerInternalService.
func (s *Server) BeginRestore(ctx context.Context, req *volumev1.BeginRestoreRequest) (*volumev1.BeginRestoreResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if v.SizeBytes < req.GetMinSizeBytes() {
		return nil, rpcerr.Invalid("Invalid volume: volume %s has %d bytes, smaller than the backup's %d bytes.", v.ID, v.SizeBytes, req.GetMinSizeBytes())
	}
	if cur, err := s.db.TransitionVolume(ctx, v.ID, lifecycle.BeginRestore, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, rpcerr.Invalid("Invalid volume: volume %s is %s; a backup can be restored only into an available volume.", v.ID, cur)
		}
		return nil, err
	}
	out, err := s.volumeView(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.BeginRestoreResponse{Volume: out}, nil
}

// EndRestore implements VolumeManagerInternalService.
func (s *Server) EndRestore(ctx context.Context, req *volumev1.EndRestoreRequest) (*volumev1.EndRestoreResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	ev, extra := lifecycle.RestoreDone, map[string]any{"fail_reason": ""}
	if !req.GetSuccess() {
		ev, extra = lifecycle.RestoreFailed, map[string]any{"fail_reason": req.GetFailReason()}
	}
	if _, err := s.db.TransitionVolume(ctx, req.GetVolumeId(), ev, extra); err != nil && !errors.Is(err, store.ErrConflict) {
		return nil, err
	}
	out, err := s.volumeView(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	return &volumev1.EndRestoreResponse{Volume: out}, nil
}

// AttachSnapshot implements VolumeManagerInternalService: create_export_snapshot and
// initialize_connection_snapshot of the blueprint. The export's credential
// (its name) is kept in provider_auth.
func (s *Server) AttachSnapshot(ctx context.Context, req *volumev1.AttachSnapshotRequest) (*volumev1.AttachSnapshotResponse, error) {
	if err := s.checkSnapshotRef(req.GetProjectId(), req.GetSnapshotId()); err != nil {
		return nil, err
	}
	sn, err := s.db.GetSnapshot(ctx, req.GetProjectId(), req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	if sn.Status != lifecycle.SnapshotAvailable && sn.Status != lifecycle.SnapshotBackingUp {
		return nil, rpcerr.Precondition("snapshot %s is %s; it must be available to be attached", sn.ID, sn.Status)
	}
	if _, err := s.db.SnapshotExport(ctx, sn.ID); err == nil {
		return nil, rpcerr.Precondition("snapshot %s is already attached", sn.ID)
	}
	if !req.GetConnector().GetLocal() && !s.driver.Capabilities().SnapshotExport {
		return nil, fmt.Errorf("driver %s cannot attach snapshots: %w", s.driver.Name(), volume.ErrUnsupported)
	}
	info, exportName, err := s.connection(ctx, req.GetConnector(), sn.VolumeID, sn.ID, true, sn.SizeBytes)
	if err != nil {
		return nil, err
	}
	if exportName != "" {
		dev, err := s.openForExport(ctx, sn.VolumeID, sn.ID, true)
		if err != nil {
			return nil, fmt.Errorf("open snapshot %s: %w", sn.ID, err)
		}
		if err := s.publish(exportName, dev, true); err != nil {
			return nil, err
		}
		e := &volumedb.Export{Name: exportName, ProjectID: sn.ProjectID, VolumeID: sn.VolumeID, SnapshotID: sn.ID, ReadOnly: true}
		if err := s.db.CreateExport(ctx, e); err != nil {
			s.unpublish(exportName)
			return nil, err
		}
		if err := s.db.UpdateSnapshot(ctx, sn.ID, map[string]any{"provider_auth": "nbd " + exportName}); err != nil {
			s.db.DeleteExport(context.WithoutCancel(ctx), exportName)
			s.unpublish(exportName)
			return nil, err
		}
	}
	s.log.InfoContext(ctx, "snapshot attached", "snapshot_id", sn.ID, "type", info.GetDriverVolumeType())
	out, err := s.snapshotView(ctx, sn.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.AttachSnapshotResponse{ConnectionInfo: info, Snapshot: out}, nil
}

// DetachSnapshot implements VolumeManagerInternalService: terminate_connection_snapshot
// and remove_export_snapshot. Detaching a snapshot that is not attached is
// not an error.
func (s *Server) DetachSnapshot(ctx context.Context, req *volumev1.DetachSnapshotRequest) (*volumev1.DetachSnapshotResponse, error) {
	if err := s.checkSnapshotRef(req.GetProjectId(), req.GetSnapshotId()); err != nil {
		return nil, err
	}
	sn, err := s.db.GetSnapshot(ctx, req.GetProjectId(), req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	if e, err := s.db.SnapshotExport(ctx, sn.ID); err == nil {
		s.unpublish(e.Name)
		if err := s.db.DeleteExport(ctx, e.Name); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err := s.db.UpdateSnapshot(ctx, sn.ID, map[string]any{"provider_auth": ""}); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "snapshot detached", "snapshot_id", sn.ID)
	return &volumev1.DetachSnapshotResponse{}, nil
}

// GetCapabilities implements VolumeManagerService.
func (s *Server) GetCapabilities(ctx context.Context, _ *volumev1.GetCapabilitiesRequest) (*volumev1.GetCapabilitiesResponse, error) {
	c := s.driver.Capabilities()
	total, free, err := s.driver.Space(ctx)
	if err != nil {
		return nil, err
	}
	return &volumev1.GetCapabilitiesResponse{Capabilities: &volumev1.Capabilities{
		Driver: s.driver.Name(), Mode: c.Mode, Snapshot: c.Snapshot, SnapshotExport: c.SnapshotExport,
		LocalPath: c.LocalPath, Clone: c.Clone, Extend: c.Extend, ChangedRanges: c.ChangedRanges,
		NodeId: s.cfg.NodeID, TotalBytes: total, FreeBytes: free,
	}}, nil
}

// GetChangedRanges implements VolumeManagerInternalService.
func (s *Server) GetChangedRanges(ctx context.Context, req *volumev1.GetChangedRangesRequest) (*volumev1.GetChangedRangesResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	for _, c := range []error{validate.UUID("from_snapshot_id", req.GetFromSnapshotId()), validate.UUID("to_snapshot_id", req.GetToSnapshotId())} {
		if c != nil {
			return nil, c
		}
	}
	cr, ok := s.driver.(volume.ChangedRanger)
	if !ok || !s.driver.Capabilities().ChangedRanges {
		return nil, fmt.Errorf("driver %s cannot tell changed ranges: %w", s.driver.Name(), volume.ErrUnsupported)
	}
	for _, id := range []string{req.GetFromSnapshotId(), req.GetToSnapshotId()} {
		sn, err := s.db.GetSnapshot(ctx, req.GetProjectId(), id)
		if err != nil {
			return nil, err
		}
		if sn.VolumeID != req.GetVolumeId() {
			return nil, rpcerr.Invalid("snapshot %s is not a snapshot of volume %s", id, req.GetVolumeId())
		}
	}
	ranges, err := cr.ChangedRanges(ctx, req.GetVolumeId(), req.GetFromSnapshotId(), req.GetToSnapshotId())
	if err != nil {
		return nil, err
	}
	resp := &volumev1.GetChangedRangesResponse{}
	for _, r := range ranges {
		resp.Ranges = append(resp.Ranges, &volumev1.ByteRange{Offset: r.Offset, Length: r.Length})
	}
	return resp, nil
}
