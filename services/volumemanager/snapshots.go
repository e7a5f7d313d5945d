package volumemanager

import (
	"context"
	"errors"
	"fmt"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/validate"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/google/uuid"
)

func (s *Server) snapshotter() (volume.Snapshotter, error) {
	sn, ok := s.driver.(volume.Snapshotter)
	if !ok || !s.driver.Capabilities().Snapshot {
		return nil, fmt.Errorf("driver %s cannot take snapshots: %w", s.driver.Name(), volume.ErrUnsupported)
	}
	return sn, nil
}

// CreateSnapshot implements VolumeManagerService.
func (s *Server) CreateSnapshot(ctx context.Context, req *volumev1.CreateSnapshotRequest) (*volumev1.CreateSnapshotResponse, error) {
	return s.createSnapshot(ctx, req, "", false)
}

// CreateTemporarySnapshot implements VolumeManagerInternalService.
func (s *Server) CreateTemporarySnapshot(ctx context.Context, req *volumev1.CreateTemporarySnapshotRequest) (*volumev1.CreateTemporarySnapshotResponse, error) {
	if err := validate.UUID("id", req.GetId()); err != nil {
		return nil, err
	}
	r, err := s.createSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: req.GetProjectId(), Snapshot: &volumev1.SnapshotInput{
		VolumeId: req.GetVolumeId(), Name: req.GetName(), Description: req.GetDescription(), Force: true}}, req.GetId(), true)
	if err != nil {
		return nil, err
	}
	return &volumev1.CreateTemporarySnapshotResponse{Snapshot: r.GetSnapshot()}, nil
}

// createSnapshot takes a snapshot; id "" makes a new one, temporary marks
// the backup service's (no quota, hidden from lists, allowed on a volume
// that is backing-up).
func (s *Server) createSnapshot(ctx context.Context, req *volumev1.CreateSnapshotRequest, id string, temporary bool) (*volumev1.CreateSnapshotResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	in := req.GetSnapshot()
	if in == nil {
		return nil, rpcerr.Invalid("the request has no snapshot object")
	}
	for _, c := range []error{validate.UUID("volume_id", in.GetVolumeId()), validate.Text("name", in.GetName()),
		validate.Text("description", in.GetDescription()), validate.Metadata(in.GetMetadata())} {
		if c != nil {
			return nil, c
		}
	}
	snapper, err := s.snapshotter()
	if err != nil {
		return nil, err
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), in.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if err := liveRefusal(v, "a snapshot"); err != nil {
		return nil, err
	}
	switch {
	case v.Status == lifecycle.VolumeAvailable:
	case v.Status == lifecycle.VolumeInUse && in.GetForce():
	case v.Status == lifecycle.VolumeInUse:
		return nil, rpcerr.Invalid("volume %s is in-use: snapshotting an in-use volume must use the force flag", v.ID)
	case v.Status == lifecycle.VolumeBackingUp && temporary:
		// The backup service's temporary snapshot of the volume it backs up.
	default:
		return nil, rpcerr.Precondition("volume %s is %s; it must be available or in-use to be snapshotted", v.ID, v.Status)
	}
	if id == "" {
		id = uuid.NewString()
	}
	sn := &volumedb.Snapshot{ID: id, ProjectID: v.ProjectID, VolumeID: v.ID, Name: in.GetName(),
		Description: in.GetDescription(), SizeBytes: v.SizeBytes, Status: lifecycle.SnapshotCreating,
		Temporary: temporary, Metadata: store.EncodeMap(in.GetMetadata())}
	unlock := func() {}
	if !sn.Temporary {
		if unlock, err = s.checkQuota(ctx, sn.ProjectID, 0, 1, quota.GiB(sn.SizeBytes)); err != nil {
			return nil, err
		}
	}
	err = s.db.CreateSnapshot(ctx, sn)
	unlock()
	if err != nil {
		return nil, err
	}
	if err := snapper.CreateSnapshot(ctx, v.ID, sn.ID); err != nil {
		snapper.DeleteSnapshot(context.WithoutCancel(ctx), v.ID, sn.ID)
		s.db.DeleteSnapshot(context.WithoutCancel(ctx), sn.ID)
		return nil, fmt.Errorf("snapshot volume %s: %w", v.ID, err)
	}
	if _, err := s.db.TransitionSnapshot(ctx, sn.ID, lifecycle.CreateDone, map[string]any{
		"provider_id": sn.ID, "provider_location": s.driver.Name() + ":" + s.driver.Capabilities().Mode}); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "snapshot created", "snapshot_id", sn.ID, "volume_id", v.ID, "temporary", sn.Temporary)
	out, err := s.snapshotView(ctx, sn.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.CreateSnapshotResponse{Snapshot: out}, nil
}

// GetSnapshot implements VolumeManagerService.
func (s *Server) GetSnapshot(ctx context.Context, req *volumev1.GetSnapshotRequest) (*volumev1.GetSnapshotResponse, error) {
	if err := s.checkSnapshotRef(req.GetProjectId(), req.GetSnapshotId()); err != nil {
		return nil, err
	}
	sn, err := s.db.GetSnapshot(ctx, req.GetProjectId(), req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	return &volumev1.GetSnapshotResponse{Snapshot: toSnapshot(sn)}, nil
}

func (s *Server) checkSnapshotRef(project, id string) error {
	if err := validate.Project(project); err != nil {
		return err
	}
	return validate.UUID("snapshot_id", id)
}

// ListSnapshots implements VolumeManagerService.
func (s *Server) ListSnapshots(ctx context.Context, req *volumev1.ListSnapshotsRequest) (*volumev1.ListSnapshotsResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	if err := validate.OptionalUUID("marker", req.GetMarker()); err != nil {
		return nil, err
	}
	if err := validate.OptionalUUID("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if req.GetLimit() < 0 {
		return nil, rpcerr.Invalid("limit must not be negative")
	}
	project, err := listScope(ctx, req.GetProjectId(), req.GetAllTenants())
	if err != nil {
		return nil, err
	}
	rows, err := s.db.ListSnapshots(ctx, volumedb.SnapshotFilter{Project: project, VolumeID: req.GetVolumeId(),
		Status: req.GetStatus(), IncludeTemporary: req.GetIncludeTemporary(),
		Page: store.Page{Limit: int(req.GetLimit()), Marker: req.GetMarker()}})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, rpcerr.Invalid("marker %s names no snapshot", req.GetMarker())
		}
		return nil, err
	}
	resp := &volumev1.ListSnapshotsResponse{}
	for i := range rows {
		resp.Snapshots = append(resp.Snapshots, toSnapshot(&rows[i]))
	}
	if req.GetLimit() > 0 && len(rows) == int(req.GetLimit()) {
		resp.SnapshotsLinks = []*volumev1.Link{{Rel: "next", Href: fmt.Sprintf("/v3/%s/snapshots?limit=%d&marker=%s", req.GetProjectId(), req.GetLimit(), rows[len(rows)-1].ID)}}
	}
	return resp, nil
}

// DeleteSnapshot implements VolumeManagerService.
func (s *Server) DeleteSnapshot(ctx context.Context, req *volumev1.DeleteSnapshotRequest) (*volumev1.DeleteSnapshotResponse, error) {
	if err := s.checkSnapshotRef(req.GetProjectId(), req.GetSnapshotId()); err != nil {
		return nil, err
	}
	sn, err := s.db.GetSnapshot(ctx, req.GetProjectId(), req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	if _, err := s.db.SnapshotExport(ctx, sn.ID); err == nil {
		return nil, rpcerr.Precondition("snapshot %s is attached; detach it before deleting it", sn.ID)
	}
	if err := s.removeSnapshot(ctx, sn); err != nil {
		return nil, err
	}
	return &volumev1.DeleteSnapshotResponse{}, nil
}

// removeSnapshot deletes a snapshot that nothing has attached: its status,
// its data in the driver, its row.
func (s *Server) removeSnapshot(ctx context.Context, sn *volumedb.Snapshot) error {
	if cur, err := s.db.TransitionSnapshot(ctx, sn.ID, lifecycle.Delete, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return rpcerr.Precondition("snapshot %s is %s; only an available or failed snapshot can be deleted", sn.ID, cur)
		}
		return err
	}
	if snapper, err := s.snapshotter(); err == nil {
		if err := snapper.DeleteSnapshot(ctx, sn.VolumeID, sn.ID); err != nil {
			s.db.TransitionSnapshot(context.WithoutCancel(ctx), sn.ID, lifecycle.DeleteFailed, map[string]any{"fail_reason": err.Error()})
			return fmt.Errorf("delete snapshot %s: %w", sn.ID, err)
		}
	}
	if err := s.db.DeleteSnapshot(ctx, sn.ID); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "snapshot deleted", "snapshot_id", sn.ID, "volume_id", sn.VolumeID)
	return nil
}

func (s *Server) snapshotView(ctx context.Context, id string) (*volumev1.Snapshot, error) {
	sn, err := s.db.GetSnapshot(ctx, "", id)
	if err != nil {
		return nil, err
	}
	return toSnapshot(sn), nil
}

// toSnapshot is the API view; provider_auth (a credential) is never shown.
func toSnapshot(sn *volumedb.Snapshot) *volumev1.Snapshot {
	return &volumev1.Snapshot{
		Id: sn.ID, ProjectId: sn.ProjectID, VolumeId: sn.VolumeID, Name: sn.Name, Description: sn.Description,
		Size: int32((sn.SizeBytes + gib - 1) / gib), SizeBytes: sn.SizeBytes, Status: sn.Status, PreviousStatus: sn.PreviousStatus,
		ProviderId: sn.ProviderID, ProviderLocation: sn.ProviderLocation, CreatedAt: store.Timestamp(sn.CreatedAt),
		UpdatedAt: store.Timestamp(sn.UpdatedAt), Metadata: store.DecodeMap(sn.Metadata), FailReason: sn.FailReason,
		Temporary: sn.Temporary,
	}
}
