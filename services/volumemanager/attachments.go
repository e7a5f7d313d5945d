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
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
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
	return s.attach(ctx, req, true, false)
}

// AttachForBackup implements VolumeManagerInternalService: the backup
// service's attachments, which may also reach a volume it is backing up
// (read-only) or restoring into (read-write), and leave its status alone.
func (s *Server) AttachForBackup(ctx context.Context, req *volumev1.AttachForBackupRequest) (*volumev1.AttachForBackupResponse, error) {
	r, err := s.attach(ctx, &volumev1.AttachVolumeRequest{ProjectId: req.GetProjectId(), Attachment: req.GetAttachment()}, true, true)
	if err != nil {
		return nil, err
	}
	return &volumev1.AttachForBackupResponse{Attachment: r.GetAttachment()}, nil
}

// attach makes an attachment; with export, the consumer's connection too
// (an NBD export or a local path). Without, it is the bookkeeping of the
// os-attach action: a compute service that reached the volume on its own
// says the volume is in use by an instance. forBackup is the backup
// service's (AttachForBackup).
func (s *Server) attach(ctx context.Context, req *volumev1.AttachVolumeRequest, export, forBackup bool) (*volumev1.AttachVolumeResponse, error) {
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
	if forBackup {
		if err := liveRefusal(v, "the backup service's attachment"); err != nil {
			return nil, err
		}
	}
	conn := in.GetConnector()
	if conn.GetLocal() && v.LiveStatus != "" {
		// A local path would bypass the fill (reads of what is not
		// restored yet would see zeros, the fill would overwrite writes):
		// a live volume is attached over NBD instead, through its fill;
		// the connection info says so (driver_volume_type "nbd").
		conn = proto.Clone(conn).(*volumev1.Connector)
		conn.Local = false
	}

	// Attaching makes an available volume in-use. The backup service's own
	// attachments leave the status alone: it reads a backing-up volume
	// read-only, and writes a restoring-backup volume read-write.
	becameInUse := false
	switch {
	case v.Status == lifecycle.VolumeAvailable:
		if cur, err := s.db.TransitionVolume(ctx, v.ID, lifecycle.Attach, nil); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, rpcerr.Precondition("volume %s is %s; it must be available to be attached", v.ID, cur)
			}
			return nil, err
		}
		becameInUse = true
	case v.Status == lifecycle.VolumeInUse && v.Multiattach:
	case v.Status == lifecycle.VolumeBackingUp && readOnly && forBackup:
	case v.Status == lifecycle.VolumeRestoringBackup && !readOnly && forBackup:
	default:
		return nil, rpcerr.Precondition("volume %s is %s; it must be available to be attached", v.ID, v.Status)
	}
	undo := func() {
		if becameInUse {
			s.db.TransitionVolume(context.WithoutCancel(ctx), v.ID, lifecycle.Detach, nil)
		}
	}

	var (
		info       *volumev1.ConnectionInfo
		exportName string
	)
	if export {
		if info, exportName, err = s.connection(ctx, conn, v.ID, "", readOnly, v.SizeBytes); err != nil {
			undo()
			return nil, err
		}
	}
	a := &volumedb.Attachment{ID: uuid.NewString(), ProjectID: v.ProjectID, VolumeID: v.ID, ServerID: in.GetInstanceUuid(),
		HostName: in.GetConnector().GetHost(), Mode: mode, Local: export && exportName == "", ExportName: exportName}
	var e *volumedb.Export
	if exportName != "" {
		e = &volumedb.Export{Name: exportName, ProjectID: v.ProjectID, VolumeID: v.ID, AttachmentID: a.ID, ReadOnly: readOnly}
		dev, err := s.openVolume(ctx, v.ID, readOnly, in.GetConnector().GetDirectIo())
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
	s.log.InfoContext(ctx, "volume attached", "volume_id", v.ID, "attachment_id", a.ID, "mode", mode, "type", info.GetDriverVolumeType(), "export", export)
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
		s.db.TransitionVolume(ctx, a.VolumeID, lifecycle.Detach, nil)
		s.db.DetachedDuringBackup(ctx, a.VolumeID)
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

// osAttach is the os-attach volume action: the volume is in use by an
// instance (instance_uuid) or a host (host_name), its connection made
// elsewhere; no export is made.
func (s *Server) osAttach(ctx context.Context, project, volumeID string, in *volumev1.AttachAction) error {
	if in.GetInstanceUuid() == "" && in.GetHostName() == "" {
		return rpcerr.Invalid("os-attach needs instance_uuid or host_name: what the volume is attached to")
	}
	if in.GetInstanceUuid() != "" && in.GetHostName() != "" {
		return rpcerr.Invalid("os-attach takes instance_uuid or host_name, not both")
	}
	for _, c := range []error{validate.UUID("volume_id", volumeID), validate.Text("host_name", in.GetHostName()), validate.Text("mountpoint", in.GetMountpoint())} {
		if c != nil {
			return c
		}
	}
	if in.GetInstanceUuid() != "" {
		if err := validate.UUID("instance_uuid", in.GetInstanceUuid()); err != nil {
			return err
		}
	}
	mode := in.GetMode()
	if mode == "" {
		mode = "rw"
	}
	_, err := s.attach(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: volumeID, InstanceUuid: in.GetInstanceUuid(), Mode: mode, Connector: &volumev1.Connector{Host: in.GetHostName()}}}, false, false)
	return err
}

// osDetach is the os-detach volume action: it removes the attachment
// attachment_id of the volume, or its only attachment when none is named.
func (s *Server) osDetach(ctx context.Context, project, volumeID string, in *volumev1.DetachAction) error {
	if err := s.checkVolumeRef(project, volumeID); err != nil {
		return err
	}
	if err := validate.OptionalUUID("attachment_id", in.GetAttachmentId()); err != nil {
		return err
	}
	v, err := s.db.GetVolume(ctx, project, volumeID)
	if err != nil {
		return err
	}
	atts, err := s.db.ListAttachments(ctx, v.ID)
	if err != nil {
		return err
	}
	id := in.GetAttachmentId()
	switch {
	case id == "" && len(atts) == 0:
		return rpcerr.Invalid("Invalid volume: volume %s is not attached", v.ID)
	case id == "" && len(atts) > 1:
		return rpcerr.Invalid("Invalid volume: volume %s has %d attachments; os-detach needs attachment_id", v.ID, len(atts))
	case id == "":
		id = atts[0].ID
	}
	found := false
	for _, a := range atts {
		found = found || a.ID == id
	}
	if !found {
		return fmt.Errorf("attachment %s of volume %s: %w", id, v.ID, store.ErrNotFound)
	}
	_, err = s.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: id})
	return err
}
