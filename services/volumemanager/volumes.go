package volumemanager

import (
	"context"
	"errors"
	"fmt"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/validate"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/google/uuid"
)

const (
	gib = int64(1) << 30
	mib = int64(1) << 20
	// maxVolumeBytes caps a volume at 64 TiB.
	maxVolumeBytes = 64 << 40
)

// sizeBytes turns a size given in GiB or in bytes into bytes.
func sizeBytes(field string, gibs, bytes int64) (int64, error) {
	switch {
	case gibs != 0 && bytes != 0:
		return 0, rpcerr.Invalid("give %s in GiB or %s_bytes, not both", field, field)
	case gibs < 0 || bytes < 0:
		return 0, rpcerr.Invalid("%s must be positive", field)
	case gibs > 0:
		if gibs > maxVolumeBytes/gib {
			return 0, rpcerr.Invalid("%s %d GiB is larger than the maximum of %d GiB", field, gibs, maxVolumeBytes/gib)
		}
		return gibs * gib, nil
	case bytes > 0:
		if bytes%mib != 0 {
			return 0, rpcerr.Invalid("%s_bytes %d is not a multiple of 1 MiB", field, bytes)
		}
		if bytes > maxVolumeBytes {
			return 0, rpcerr.Invalid("%s_bytes %d is larger than the maximum of %d", field, bytes, int64(maxVolumeBytes))
		}
		return bytes, nil
	}
	return 0, rpcerr.Invalid("%s is required and must be a positive number of GiB", field)
}

// CreateVolume implements VolumeManagerService.
func (s *Server) CreateVolume(ctx context.Context, req *volumev1.CreateVolumeRequest) (*volumev1.CreateVolumeResponse, error) {
	return s.createVolume(ctx, req, "", false)
}

// CreateTemporaryVolume implements VolumeManagerInternalService.
func (s *Server) CreateTemporaryVolume(ctx context.Context, req *volumev1.CreateTemporaryVolumeRequest) (*volumev1.CreateTemporaryVolumeResponse, error) {
	if err := validate.UUID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := validate.UUID("source_volid", req.GetSourceVolid()); err != nil {
		return nil, err
	}
	r, err := s.createVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: req.GetProjectId(), Volume: &volumev1.VolumeInput{
		SourceVolid: req.GetSourceVolid(), Name: req.GetName(), Description: req.GetDescription()}}, req.GetId(), true)
	if err != nil {
		return nil, err
	}
	return &volumev1.CreateTemporaryVolumeResponse{Volume: r.GetVolume()}, nil
}

// createVolume makes a volume; id "" makes a new id, temporary marks the
// backup service's clones (no quota, hidden from lists).
func (s *Server) createVolume(ctx context.Context, req *volumev1.CreateVolumeRequest, id string, temporary bool) (*volumev1.CreateVolumeResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	in := req.GetVolume()
	if in == nil {
		return nil, rpcerr.Invalid("the request has no volume object")
	}
	for _, c := range []error{
		validate.Text("name", in.GetName()), validate.Text("description", in.GetDescription()),
		validate.OptionalUUID("snapshot_id", in.GetSnapshotId()), validate.OptionalUUID("source_volid", in.GetSourceVolid()),
		validate.OptionalUUID("backup_id", in.GetBackupId()), validate.Metadata(in.GetMetadata()),
	} {
		if c != nil {
			return nil, c
		}
	}
	for _, f := range []struct{ name, value, what string }{
		{"consistencygroup_id", in.GetConsistencygroupId(), "consistency groups"},
		{"group_id", in.GetGroupId(), "groups"},
		{"imageRef", in.GetImageRef(), "volumes from images"},
	} {
		if f.value != "" {
			return nil, rpcerr.Invalid("%s: %s are not supported; leave it out or null", f.name, f.what)
		}
	}
	if in.GetBackupId() != "" {
		return nil, rpcerr.Invalid("backup_id: create the volume by restoring the backup (POST /v3/{project_id}/backups/{backup_id}/restore)")
	}
	if in.GetSnapshotId() != "" && in.GetSourceVolid() != "" {
		return nil, rpcerr.Invalid("give snapshot_id or source_volid, not both")
	}

	var (
		size       int64
		err        error
		fromSnap   *volumedb.Snapshot
		fromVolume *volumedb.Volume
	)
	if in.GetSize() != 0 || in.GetSizeBytes() != 0 {
		if size, err = sizeBytes("size", int64(in.GetSize()), in.GetSizeBytes()); err != nil {
			return nil, err
		}
	}
	cloner, canClone := s.driver.(volume.Cloner)
	switch {
	case in.GetSnapshotId() != "":
		if fromSnap, err = s.db.GetSnapshot(ctx, req.GetProjectId(), in.GetSnapshotId()); err != nil {
			return nil, err
		}
		if fromSnap.Status != lifecycle.SnapshotAvailable && fromSnap.Status != lifecycle.SnapshotBackingUp {
			return nil, rpcerr.Precondition("snapshot %s is %s; a volume can be made only from an available snapshot", fromSnap.ID, fromSnap.Status)
		}
		if size == 0 {
			size = fromSnap.SizeBytes
		}
		if size < fromSnap.SizeBytes {
			return nil, rpcerr.Invalid("size %d bytes is smaller than the snapshot's %d bytes", size, fromSnap.SizeBytes)
		}
	case in.GetSourceVolid() != "":
		if fromVolume, err = s.db.GetVolume(ctx, req.GetProjectId(), in.GetSourceVolid()); err != nil {
			return nil, err
		}
		if err := liveRefusal(fromVolume, "a clone"); err != nil {
			return nil, err
		}
		switch fromVolume.Status {
		case lifecycle.VolumeAvailable, lifecycle.VolumeInUse, lifecycle.VolumeBackingUp:
		default:
			return nil, rpcerr.Precondition("source volume %s is %s; it must be available, in-use or backing-up to be cloned", fromVolume.ID, fromVolume.Status)
		}
		if size == 0 {
			size = fromVolume.SizeBytes
		}
		if size != fromVolume.SizeBytes {
			return nil, rpcerr.Invalid("a clone has the size of its source (%d bytes)", fromVolume.SizeBytes)
		}
	}
	if size == 0 {
		return nil, rpcerr.Invalid("size is required and must be a positive number of GiB")
	}
	if (fromSnap != nil || fromVolume != nil) && !canClone {
		return nil, fmt.Errorf("driver %s cannot make volumes from snapshots or clones: %w", s.driver.Name(), volume.ErrUnsupported)
	}

	if id == "" {
		id = uuid.NewString()
	}
	v := &volumedb.Volume{
		ID: id, ProjectID: req.GetProjectId(), Name: in.GetName(), Description: in.GetDescription(),
		SizeBytes: size, Status: lifecycle.VolumeCreating, AvailabilityZone: zoneOr(in.GetAvailabilityZone()),
		VolumeType: in.GetVolumeType(), Multiattach: in.GetMultiattach(), Temporary: temporary,
		Metadata: store.EncodeMap(in.GetMetadata()), SnapshotID: in.GetSnapshotId(), SourceVolID: in.GetSourceVolid(),
	}
	unlock := func() {}
	if !v.Temporary {
		if unlock, err = s.checkQuota(ctx, v.ProjectID, 1, 0, quota.GiB(size)); err != nil {
			return nil, err
		}
	}
	err = s.db.CreateVolume(ctx, v)
	unlock()
	if err != nil {
		return nil, err
	}
	switch {
	case fromSnap != nil:
		err = cloner.VolumeFromSnapshot(ctx, fromSnap.VolumeID, fromSnap.ID, v.ID, size)
	case fromVolume != nil:
		err = cloner.CloneVolume(ctx, fromVolume.ID, v.ID)
	default:
		err = s.driver.CreateVolume(ctx, v.ID, size)
	}
	if err != nil {
		// Nothing is left behind for a request that failed: the row goes too.
		s.driver.DeleteVolume(context.WithoutCancel(ctx), v.ID)
		s.db.DeleteVolume(context.WithoutCancel(ctx), v.ID)
		return nil, fmt.Errorf("create volume of %d bytes: %w", size, err)
	}
	if _, err := s.db.TransitionVolume(ctx, v.ID, lifecycle.CreateDone, nil); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "volume created", "volume_id", v.ID, "project_id", v.ProjectID, "size_bytes", size)
	out, err := s.volumeView(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.CreateVolumeResponse{Volume: out}, nil
}

func zoneOr(z string) string {
	if z == "" {
		return "nova"
	}
	return z
}

// GetVolume implements VolumeManagerService.
func (s *Server) GetVolume(ctx context.Context, req *volumev1.GetVolumeRequest) (*volumev1.GetVolumeResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	out, err := s.toVolume(ctx, v)
	if err != nil {
		return nil, err
	}
	return &volumev1.GetVolumeResponse{Volume: out}, nil
}

func (s *Server) checkVolumeRef(project, id string) error {
	if err := validate.Project(project); err != nil {
		return err
	}
	return validate.UUID("volume_id", id)
}

// listScope is the project a list covers: the request's, or every project
// ("") for an admin's all_tenants. A member's all_tenants is ignored, as
// the Block Storage API does (its clients send it when they look a volume
// up by name: cinderclient's find_resource).
func listScope(ctx context.Context, project string, allTenants bool) (string, error) {
	if !allTenants || !auth.IsAdmin(ctx) {
		return project, nil
	}
	return "", nil
}

// UpdateVolume implements VolumeManagerService: the name or description
// of a volume of the project's (not the backup service's temporary ones),
// in any status.
func (s *Server) UpdateVolume(ctx context.Context, req *volumev1.UpdateVolumeRequest) (*volumev1.UpdateVolumeResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	in := req.GetVolume()
	if in != nil && in.Name == nil && in.DisplayName != nil {
		in.Name = in.DisplayName
	}
	if in != nil && in.Description == nil && in.DisplayDescription != nil {
		in.Description = in.DisplayDescription
	}
	if in == nil || in.Name == nil && in.Description == nil {
		return nil, rpcerr.Invalid("Missing required element 'volume' in request body: want {\"volume\": {\"name\": ..., \"description\": ...}}")
	}
	cols := map[string]any{}
	if in.Name != nil {
		if err := validate.Text("name", in.GetName()); err != nil {
			return nil, err
		}
		cols["name"] = in.GetName()
	}
	if in.Description != nil {
		if err := validate.Text("description", in.GetDescription()); err != nil {
			return nil, err
		}
		cols["description"] = in.GetDescription()
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if v.Temporary {
		return nil, rpcerr.Precondition("volume %s is a temporary volume of the backup service's; it cannot be renamed", v.ID)
	}
	if err := s.db.UpdateVolume(ctx, v.ID, cols); err != nil {
		return nil, err
	}
	out, err := s.volumeView(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.UpdateVolumeResponse{Volume: out}, nil
}

// ListVolumes implements VolumeManagerService.
func (s *Server) ListVolumes(ctx context.Context, req *volumev1.ListVolumesRequest) (*volumev1.ListVolumesResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	if err := validate.OptionalUUID("marker", req.GetMarker()); err != nil {
		return nil, err
	}
	if req.GetLimit() < 0 {
		return nil, rpcerr.Invalid("limit must not be negative")
	}
	project, err := listScope(ctx, req.GetProjectId(), req.GetAllTenants())
	if err != nil {
		return nil, err
	}
	rows, err := s.db.ListVolumes(ctx, volumedb.VolumeFilter{
		Project: project, Name: req.GetName(), Status: req.GetStatus(),
		IncludeTemporary: req.GetIncludeTemporary(),
		Page:             store.Page{Limit: int(req.GetLimit()), Marker: req.GetMarker()},
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, rpcerr.Invalid("marker %s names no volume", req.GetMarker())
		}
		return nil, err
	}
	resp := &volumev1.ListVolumesResponse{}
	for i := range rows {
		v, err := s.toVolume(ctx, &rows[i])
		if err != nil {
			return nil, err
		}
		resp.Volumes = append(resp.Volumes, v)
	}
	if req.GetLimit() > 0 && len(rows) == int(req.GetLimit()) {
		resp.VolumesLinks = []*volumev1.Link{{Rel: "next", Href: fmt.Sprintf("/v3/%s/volumes?limit=%d&marker=%s", req.GetProjectId(), req.GetLimit(), rows[len(rows)-1].ID)}}
	}
	return resp, nil
}

// DeleteVolume implements VolumeManagerService.
func (s *Server) DeleteVolume(ctx context.Context, req *volumev1.DeleteVolumeRequest) (*volumev1.DeleteVolumeResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	snaps, atts, err := s.db.CountVolumeDependents(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	if atts > 0 {
		return nil, rpcerr.Precondition("volume %s has %d attachment(s); detach it before deleting it", v.ID, atts)
	}
	if snaps > 0 {
		return nil, rpcerr.Precondition("volume %s has %d snapshot(s); delete them before deleting the volume", v.ID, snaps)
	}
	// The backup service's temporary snapshots go with the volume (those
	// kept for changed-block tracking), unless a backup reads one now.
	temps, err := s.db.TemporarySnapshots(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	for _, sn := range temps {
		if _, err := s.db.SnapshotExport(ctx, sn.ID); err == nil {
			return nil, rpcerr.Precondition("volume %s is being backed up (its temporary snapshot %s is attached); wait for the backup to end", v.ID, sn.ID)
		}
	}
	if cur, err := s.db.TransitionVolume(ctx, v.ID, lifecycle.Delete, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, rpcerr.Precondition("volume %s is %s; only an available or failed volume can be deleted", v.ID, cur)
		}
		return nil, err
	}
	// A live restore stops here: its fill, its device, its state file.
	s.dropLive(v.ID)
	for _, sn := range temps {
		if err := s.removeSnapshot(ctx, &sn); err != nil {
			s.db.TransitionVolume(context.WithoutCancel(ctx), v.ID, lifecycle.DeleteFailed, map[string]any{"fail_reason": err.Error()})
			return nil, fmt.Errorf("delete volume %s: %w", v.ID, err)
		}
	}
	if err := s.driver.DeleteVolume(ctx, v.ID); err != nil {
		s.db.TransitionVolume(context.WithoutCancel(ctx), v.ID, lifecycle.DeleteFailed, map[string]any{"fail_reason": err.Error()})
		return nil, fmt.Errorf("delete volume %s: %w", v.ID, err)
	}
	if err := s.db.DeleteVolume(ctx, v.ID); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "volume deleted", "volume_id", v.ID, "project_id", v.ProjectID)
	return &volumev1.DeleteVolumeResponse{}, nil
}

// ExtendVolume implements VolumeManagerService.
func (s *Server) ExtendVolume(ctx context.Context, req *volumev1.ExtendVolumeRequest) (*volumev1.ExtendVolumeResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	size, err := sizeBytes("new_size", int64(req.GetNewSize()), req.GetNewSizeBytes())
	if err != nil {
		return nil, err
	}
	ext, ok := s.driver.(volume.Extender)
	if !ok {
		return nil, fmt.Errorf("driver %s cannot extend volumes: %w", s.driver.Name(), volume.ErrUnsupported)
	}
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if err := liveRefusal(v, "extending it"); err != nil {
		return nil, err
	}
	if size <= v.SizeBytes {
		return nil, rpcerr.Invalid("new size %d bytes must be larger than the current %d bytes", size, v.SizeBytes)
	}
	if !v.Temporary {
		// The quota lock is held until the new size is recorded.
		unlock, err := s.checkQuota(ctx, v.ProjectID, 0, 0, quota.GiB(size)-quota.GiB(v.SizeBytes))
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if cur, err := s.db.TransitionVolume(ctx, v.ID, lifecycle.BeginExtend, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, rpcerr.Precondition("volume %s is %s; only an available volume can be extended", v.ID, cur)
		}
		return nil, err
	}
	if err := ext.ExtendVolume(ctx, v.ID, size); err != nil {
		// The data is as it was: back to available, and say why.
		s.db.TransitionVolume(context.WithoutCancel(ctx), v.ID, lifecycle.EndExtend, nil)
		return nil, fmt.Errorf("extend volume %s to %d bytes: %w", v.ID, size, err)
	}
	if _, err := s.db.TransitionVolume(ctx, v.ID, lifecycle.EndExtend, map[string]any{"size_bytes": size}); err != nil {
		return nil, err
	}
	out, err := s.volumeView(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.ExtendVolumeResponse{Volume: out}, nil
}

// VolumeAction implements VolumeManagerService (the REST action endpoint).
func (s *Server) VolumeAction(ctx context.Context, req *volumev1.VolumeActionRequest) (*volumev1.VolumeActionResponse, error) {
	switch a := req.GetAction().(type) {
	case *volumev1.VolumeActionRequest_OsExtend:
		_, err := s.ExtendVolume(ctx, &volumev1.ExtendVolumeRequest{ProjectId: req.GetProjectId(), VolumeId: req.GetVolumeId(),
			NewSize: a.OsExtend.GetNewSize(), NewSizeBytes: a.OsExtend.GetNewSizeBytes()})
		if err != nil {
			return nil, err
		}
	case *volumev1.VolumeActionRequest_OsResetStatus:
		_, err := s.ResetVolumeStatus(ctx, &volumev1.ResetVolumeStatusRequest{ProjectId: req.GetProjectId(), VolumeId: req.GetVolumeId(), Status: a.OsResetStatus.GetStatus()})
		if err != nil {
			return nil, err
		}
	case *volumev1.VolumeActionRequest_OsAttach:
		if err := s.osAttach(ctx, req.GetProjectId(), req.GetVolumeId(), a.OsAttach); err != nil {
			return nil, err
		}
	case *volumev1.VolumeActionRequest_OsDetach:
		if err := s.osDetach(ctx, req.GetProjectId(), req.GetVolumeId(), a.OsDetach); err != nil {
			return nil, err
		}
	default:
		return nil, rpcerr.Invalid("the action body must hold one of os-extend, os-reset_status, os-attach, os-detach")
	}
	return &volumev1.VolumeActionResponse{}, nil
}

// ResetVolumeStatus implements VolumeManagerService: an operator's repair
// of a volume whose status no longer matches reality.
func (s *Server) ResetVolumeStatus(ctx context.Context, req *volumev1.ResetVolumeStatusRequest) (*volumev1.ResetVolumeStatusResponse, error) {
	if err := auth.RequireAdmin(ctx, "os-reset_status"); err != nil {
		return nil, err
	}
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	if !lifecycle.Volumes.Known(req.GetStatus()) {
		return nil, rpcerr.Invalid("status %q is not a volume status", req.GetStatus())
	}
	if _, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	if _, err := s.db.TransitionVolume(ctx, req.GetVolumeId(), lifecycle.ResetStatus(req.GetStatus()), nil); err != nil {
		return nil, err
	}
	out, err := s.volumeView(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	return &volumev1.ResetVolumeStatusResponse{Volume: out}, nil
}

func (s *Server) volumeView(ctx context.Context, id string) (*volumev1.Volume, error) {
	v, err := s.db.GetVolume(ctx, "", id)
	if err != nil {
		return nil, err
	}
	return s.toVolume(ctx, v)
}

func (s *Server) toVolume(ctx context.Context, v *volumedb.Volume) (*volumev1.Volume, error) {
	atts, err := s.db.ListAttachments(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	out := &volumev1.Volume{
		Id: v.ID, ProjectId: v.ProjectID, Name: v.Name, Description: v.Description,
		Size: int32((v.SizeBytes + gib - 1) / gib), SizeBytes: v.SizeBytes, Status: v.Status, PreviousStatus: v.PreviousStatus,
		SnapshotId: v.SnapshotID, SourceVolid: v.SourceVolID, AvailabilityZone: v.AvailabilityZone,
		VolumeType: v.VolumeType, Bootable: "false", Multiattach: v.Multiattach, Metadata: store.DecodeMap(v.Metadata),
		CreatedAt: store.Timestamp(v.CreatedAt), UpdatedAt: store.Timestamp(v.UpdatedAt), FailReason: v.FailReason,
		Temporary: v.Temporary, LiveRestore: s.liveView(v),
		Links: []*volumev1.Link{
			{Rel: "self", Href: fmt.Sprintf("/v3/%s/volumes/%s", v.ProjectID, v.ID)},
			{Rel: "bookmark", Href: fmt.Sprintf("/%s/volumes/%s", v.ProjectID, v.ID)},
		},
	}
	for i := range atts {
		out.Attachments = append(out.Attachments, s.toAttachment(&atts[i], nil))
	}
	return out, nil
}
