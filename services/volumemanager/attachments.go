package volumemanager

import (
	"context"
	"errors"
	"fmt"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/validate"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/google/uuid"
)

// connection decides how a consumer reaches a volume or snapshot: a local
// path when it asks for one from this node and the driver offers it, else
// an NBD export (export name set; the caller publishes it).
func (s *Server) connection(ctx context.Context, conn *volumev1.Connector, volumeID, snapshotID string, readOnly bool, size int64) (*volumev1.ConnectionInfo, string, error) {
	if conn.GetLocal() {
		lp, ok := s.driver.(volume.LocalPather)
		if !ok || !s.driver.Capabilities().LocalPath {
			return nil, "", fmt.Errorf("driver %s has no local paths: %w", s.driver.Name(), volume.ErrUnsupported)
		}
		if conn.GetHost() != s.cfg.NodeID {
			return nil, "", rpcerr.Precondition("a local attachment needs the consumer on node %q, not %q", s.cfg.NodeID, conn.GetHost())
		}
		path, err := lp.LocalPath(ctx, volumeID, snapshotID)
		if err != nil {
			return nil, "", err
		}
		return &volumev1.ConnectionInfo{DriverVolumeType: "local", Data: &volumev1.ConnectionData{
			DevicePath: path, ReadOnly: readOnly, SizeBytes: size}}, "", nil
	}
	name := newExportName()
	return &volumev1.ConnectionInfo{DriverVolumeType: "nbd", Data: &volumev1.ConnectionData{
		Host: s.cfg.ExportHost, Port: int32(s.cfg.ExportPort), ExportName: name, Tls: s.cfg.ExportTLS,
		ReadOnly: readOnly, SizeBytes: size}}, name, nil
}

// AttachVolume implements VolumeManagerService.
func (s *Server) AttachVolume(ctx context.Context, req *volumev1.AttachVolumeRequest) (*volumev1.AttachVolumeResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	in := req.GetAttachment()
	if in == nil {
		return nil, rpcerr.Invalid("the request has no attachment object")
	}
	if err := validate.UUID("volume_uuid", in.GetVolumeUuid()); err != nil {
		return nil, err
	}
	if err := validate.Text("instance_uuid", in.GetInstanceUuid()); err != nil {
		return nil, err
	}
	mode := in.GetMode()
	if mode == "" {
		mode = in.GetConnector().GetMode()
	}
	if mode == "" {
		mode = "rw"
	}
	if mode != "rw" && mode != "ro" {
		return nil, rpcerr.Invalid("mode %q must be rw or ro", mode)
	}
	readOnly := mode == "ro"
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), in.GetVolumeUuid())
	if err != nil {
		return nil, err
	}

	// Attaching makes an available volume in-use. The backup service's own
	// attachments leave the status alone: it reads a backing-up volume
	// read-only, and writes a restoring-backup volume read-write.
	becameInUse := false
	switch {
	case v.Status == lifecycle.VolumeAvailable:
		if cur, err := s.db.TransitionVolume(ctx, v.ID, []string{lifecycle.VolumeAvailable}, lifecycle.VolumeInUse, nil); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, rpcerr.Precondition("volume %s is %s; it must be available to be attached", v.ID, cur)
			}
			return nil, err
		}
		becameInUse = true
	case v.Status == lifecycle.VolumeInUse && v.Multiattach:
	case v.Status == lifecycle.VolumeBackingUp && readOnly:
	case v.Status == lifecycle.VolumeRestoringBackup && !readOnly:
	default:
		return nil, rpcerr.Precondition("volume %s is %s; it must be available to be attached", v.ID, v.Status)
	}
	undo := func() {
		if becameInUse {
			s.db.TransitionVolume(context.WithoutCancel(ctx), v.ID, []string{lifecycle.VolumeInUse}, lifecycle.VolumeAvailable, nil)
		}
	}

	info, exportName, err := s.connection(ctx, in.GetConnector(), v.ID, "", readOnly, v.SizeBytes)
	if err != nil {
		undo()
		return nil, err
	}
	a := &volumedb.Attachment{ID: uuid.NewString(), ProjectID: v.ProjectID, VolumeID: v.ID, ServerID: in.GetInstanceUuid(),
		HostName: in.GetConnector().GetHost(), Mode: mode, Local: exportName == "", ExportName: exportName}
	var e *volumedb.Export
	if exportName != "" {
		e = &volumedb.Export{Name: exportName, ProjectID: v.ProjectID, VolumeID: v.ID, AttachmentID: a.ID, ReadOnly: readOnly}
		var dev blockdev.Device
		if bo, ok := s.driver.(volume.BulkOpener); ok && !readOnly && in.GetConnector().GetDirectIo() {
			dev, err = bo.OpenVolumeForBulkWrites(ctx, v.ID)
		} else {
			dev, err = s.driver.OpenVolume(ctx, v.ID, readOnly)
		}
		if err != nil {
			undo()
			return nil, fmt.Errorf("open volume %s: %w", v.ID, err)
		}
		if err := s.publish(exportName, dev, readOnly); err != nil {
			undo()
			return nil, err
		}
	}
	if err := s.db.CreateAttachment(ctx, a, e); err != nil {
		if exportName != "" {
			s.unpublish(exportName)
		}
		undo()
		return nil, err
	}
	s.log.InfoContext(ctx, "volume attached", "volume_id", v.ID, "attachment_id", a.ID, "mode", mode, "type", info.GetDriverVolumeType())
	return &volumev1.AttachVolumeResponse{Attachment: s.toAttachment(a, info)}, nil
}

// DetachVolume implements VolumeManagerService.
func (s *Server) DetachVolume(ctx context.Context, req *volumev1.DetachVolumeRequest) (*volumev1.DetachVolumeResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	if err := validate.UUID("attachment_id", req.GetAttachmentId()); err != nil {
		return nil, err
	}
	a, err := s.db.GetAttachment(ctx, req.GetProjectId(), req.GetAttachmentId())
	if err != nil {
		return nil, err
	}
	if a.ExportName != "" {
		// The export goes first: once detached, nobody can reach the data.
		s.unpublish(a.ExportName)
	}
	if err := s.db.DeleteAttachment(ctx, a.ID); err != nil {
		return nil, err
	}
	rest, err := s.db.ListAttachments(ctx, a.VolumeID)
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 {
		// Nobody attached any more: in-use becomes available (also as the
		// status a running backup will return the volume to).
		s.db.TransitionVolume(ctx, a.VolumeID, []string{lifecycle.VolumeInUse}, lifecycle.VolumeAvailable, nil)
		if v, err := s.db.GetVolume(ctx, "", a.VolumeID); err == nil && v.Status == lifecycle.VolumeBackingUp && v.PreviousStatus == lifecycle.VolumeInUse {
			s.db.UpdateVolume(ctx, v.ID, map[string]any{"previous_status": lifecycle.VolumeAvailable})
		}
	}
	s.log.InfoContext(ctx, "volume detached", "volume_id", a.VolumeID, "attachment_id", a.ID)
	return &volumev1.DetachVolumeResponse{}, nil
}

func (s *Server) toAttachment(a *volumedb.Attachment, info *volumev1.ConnectionInfo) *volumev1.Attachment {
	return &volumev1.Attachment{
		Id: a.ID, AttachmentId: a.ID, VolumeId: a.VolumeID, ServerId: a.ServerID, HostName: a.HostName,
		AttachedAt: store.Timestamp(a.CreatedAt), AttachMode: a.Mode, ConnectionInfo: info,
	}
}
