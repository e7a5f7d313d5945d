package backup

import (
	"context"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// vmClient is the volume manager over gRPC, as the job runner sees it
// (backupjob.VolumeManager), and as the handlers call it.
type vmClient struct {
	volumes volumev1.VolumeManagerServiceClient
	// internal is the volume manager's daemon-only service (begin/end of
	// backups and restores, temporary resources, snapshot exports).
	internal volumev1.VolumeManagerInternalServiceClient
}

var _ backupjob.VolumeManager = vmClient{}

func newVMClient(conn grpc.ClientConnInterface) vmClient {
	return vmClient{volumes: volumev1.NewVolumeManagerServiceClient(conn), internal: volumev1.NewVolumeManagerInternalServiceClient(conn)}
}

// peerError is an error of the volume manager's that keeps its message and
// status, and wraps the backupjob sentinel its code means.
type peerError struct {
	err, kind error
}

func (e *peerError) Error() string   { return e.err.Error() }
func (e *peerError) Unwrap() []error { return []error{e.err, e.kind} }

// vmErr gives err the sentinel of its code: NotFound is ErrNotFound; a
// volume manager that is down, slow or aborted for now is ErrUnavailable.
func vmErr(err error) error {
	switch status.Code(err) {
	case codes.OK:
		return err
	case codes.NotFound:
		return &peerError{err, backupjob.ErrNotFound}
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return &peerError{err, backupjob.ErrUnavailable}
	}
	return err
}

func (c vmClient) Capabilities(ctx context.Context) (backupjob.Capabilities, error) {
	r, err := c.volumes.GetCapabilities(ctx, &volumev1.GetCapabilitiesRequest{})
	if err != nil {
		return backupjob.Capabilities{}, vmErr(err)
	}
	x := r.GetCapabilities()
	return backupjob.Capabilities{Driver: x.GetDriver(), NodeID: x.GetNodeId(), LocalPath: x.GetLocalPath(), Snapshot: x.GetSnapshot(),
		SnapshotExport: x.GetSnapshotExport(), Clone: x.GetClone(), ChangedRanges: x.GetChangedRanges()}, nil
}

func (c vmClient) CreateTemporarySnapshot(ctx context.Context, project, id, volumeID, name, description string) error {
	_, err := c.internal.CreateTemporarySnapshot(ctx, &volumev1.CreateTemporarySnapshotRequest{ProjectId: project,
		Id: id, VolumeId: volumeID, Name: name, Description: description})
	return vmErr(err)
}

func (c vmClient) CreateTemporaryVolume(ctx context.Context, project, id, sourceVolumeID, name, description string) error {
	_, err := c.internal.CreateTemporaryVolume(ctx, &volumev1.CreateTemporaryVolumeRequest{ProjectId: project,
		Id: id, SourceVolid: sourceVolumeID, Name: name, Description: description})
	return vmErr(err)
}

func connector(c backupjob.Connector) *volumev1.Connector {
	mode := "rw"
	if c.ReadOnly {
		mode = "ro"
	}
	return &volumev1.Connector{Host: c.Host, Local: c.Local, Mode: mode, DirectIo: c.DirectIO}
}

func connection(ci *volumev1.ConnectionInfo) backupjob.Connection {
	d := ci.GetData()
	return backupjob.Connection{Type: ci.GetDriverVolumeType(), DevicePath: d.GetDevicePath(), Host: d.GetHost(),
		Port: int(d.GetPort()), ExportName: d.GetExportName(), TLS: d.GetTls()}
}

func (c vmClient) AttachSnapshot(ctx context.Context, project, snapshotID string, conn backupjob.Connector) (backupjob.Connection, error) {
	r, err := c.internal.AttachSnapshot(ctx, &volumev1.AttachSnapshotRequest{ProjectId: project, SnapshotId: snapshotID,
		Connector: connector(conn)})
	if err != nil {
		return backupjob.Connection{}, vmErr(err)
	}
	return connection(r.GetConnectionInfo()), nil
}

func (c vmClient) DetachSnapshot(ctx context.Context, project, snapshotID string) error {
	_, err := c.internal.DetachSnapshot(ctx, &volumev1.DetachSnapshotRequest{ProjectId: project, SnapshotId: snapshotID})
	return vmErr(err)
}

func (c vmClient) DeleteSnapshot(ctx context.Context, project, snapshotID string) error {
	_, err := c.volumes.DeleteSnapshot(ctx, &volumev1.DeleteSnapshotRequest{ProjectId: project, SnapshotId: snapshotID})
	return vmErr(err)
}

func (c vmClient) AttachVolume(ctx context.Context, project, volumeID, serverID string, conn backupjob.Connector) (backupjob.Attachment, error) {
	cn := connector(conn)
	r, err := c.internal.AttachForBackup(ctx, &volumev1.AttachForBackupRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: volumeID, InstanceUuid: serverID, Mode: cn.GetMode(), Connector: cn}})
	if err != nil {
		return backupjob.Attachment{}, vmErr(err)
	}
	a := r.GetAttachment()
	return backupjob.Attachment{ID: a.GetId(), ServerID: a.GetServerId(), Connection: connection(a.GetConnectionInfo())}, nil
}

func (c vmClient) DetachVolume(ctx context.Context, project, attachmentID string) error {
	_, err := c.volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: attachmentID})
	return vmErr(err)
}

func (c vmClient) Attachments(ctx context.Context, project, volumeID string) ([]backupjob.Attachment, error) {
	v, err := c.volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: volumeID})
	if err != nil {
		return nil, vmErr(err)
	}
	var out []backupjob.Attachment
	for _, a := range v.GetVolume().GetAttachments() {
		out = append(out, backupjob.Attachment{ID: a.GetId(), ServerID: a.GetServerId(), Connection: connection(a.GetConnectionInfo())})
	}
	return out, nil
}

func (c vmClient) DeleteVolume(ctx context.Context, project, volumeID string) error {
	_, err := c.volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: volumeID})
	return vmErr(err)
}

func (c vmClient) ChangedRanges(ctx context.Context, project, volumeID, fromSnapshotID, toSnapshotID string) ([]engine.Range, error) {
	r, err := c.internal.GetChangedRanges(ctx, &volumev1.GetChangedRangesRequest{ProjectId: project, VolumeId: volumeID,
		FromSnapshotId: fromSnapshotID, ToSnapshotId: toSnapshotID})
	if err != nil {
		return nil, vmErr(err)
	}
	out := make([]engine.Range, 0, len(r.GetRanges()))
	for _, x := range r.GetRanges() {
		out = append(out, engine.Range{Offset: x.GetOffset(), Length: x.GetLength()})
	}
	return out, nil
}

func (c vmClient) EndBackup(ctx context.Context, project, volumeID, snapshotID string) error {
	_, err := c.internal.EndBackup(ctx, &volumev1.EndBackupRequest{ProjectId: project, VolumeId: volumeID, SnapshotId: snapshotID})
	return vmErr(err)
}

func (c vmClient) EndRestore(ctx context.Context, project, volumeID string, success bool, failReason string) error {
	_, err := c.internal.EndRestore(ctx, &volumev1.EndRestoreRequest{ProjectId: project, VolumeId: volumeID,
		Success: success, FailReason: failReason})
	return vmErr(err)
}

func (c vmClient) StartLiveRestore(ctx context.Context, project, volumeID, backupID string, src backupjob.Connection, size int64) error {
	_, err := c.internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: project, VolumeId: volumeID, BackupId: backupID,
		SizeBytes: size, Source: &volumev1.ConnectionInfo{DriverVolumeType: src.Type, Data: &volumev1.ConnectionData{
			Host: src.Host, Port: int32(src.Port), ExportName: src.ExportName, Tls: src.TLS, ReadOnly: true, SizeBytes: size}}})
	return vmErr(err)
}

func (c vmClient) LiveRestore(ctx context.Context, project, volumeID string) (backupjob.LiveRestore, error) {
	v, err := c.volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: volumeID})
	if err != nil {
		return backupjob.LiveRestore{}, vmErr(err)
	}
	l := v.GetVolume().GetLiveRestore()
	if l == nil {
		if v.GetVolume().GetStatus() == lifecycle.VolumeRestoringBackup {
			return backupjob.LiveRestore{Pending: true}, nil
		}
		return backupjob.LiveRestore{Done: true}, nil
	}
	return backupjob.LiveRestore{Failed: l.GetStatus() == "failed", Reason: v.GetVolume().GetFailReason(),
		Filled: l.GetBytesFilled(), Total: l.GetBytesTotal()}, nil
}
