package backup

import (
	"context"
	"errors"
	"sync"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/validate"
	"github.com/google/uuid"
)

// DefaultContainer is the repository container of backups that name none.
const DefaultContainer = engine.DefaultContainer

// CreateBackup implements BackupService: checks, the status swap on the
// volume, a backup row creating, and the work started in the background.
func (s *Server) CreateBackup(ctx context.Context, req *backupv1.CreateBackupRequest) (*backupv1.CreateBackupResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	in := req.GetBackup()
	if in == nil {
		return nil, rpcerr.Invalid("the request has no backup object")
	}
	name, description := in.GetName(), in.GetDescription()
	if name == "" {
		name = in.GetDisplayName()
	}
	if description == "" {
		description = in.GetDisplayDescription()
	}
	container := in.GetContainer()
	if container == "" {
		container = s.cfg.container()
	}
	for _, c := range []error{
		validate.UUID("volume_id", in.GetVolumeId()), validate.OptionalUUID("snapshot_id", in.GetSnapshotId()),
		validate.Text("name", name), validate.Text("description", description), validate.Metadata(in.GetMetadata()),
		checkContainer(container),
	} {
		if c != nil {
			return nil, c
		}
	}

	var parent *backupdb.Backup
	if in.GetIncremental() {
		p, err := s.db.LatestAvailable(ctx, req.GetProjectId(), in.GetVolumeId())
		if errors.Is(err, store.ErrNotFound) {
			return nil, rpcerr.Invalid("Invalid backup: no available backup of volume %s to base an incremental backup on.", in.GetVolumeId())
		}
		if err != nil {
			return nil, err
		}
		if p.Container != container {
			return nil, rpcerr.Invalid("Invalid backup: the parent backup %s is in container %q, not %q.", p.ID, p.Container, container)
		}
		parent = p
	}

	// Quotas: checked before anything changes, and held until the backup's
	// row is in, so two requests cannot both take the last unit.
	unlock := func() {}
	if q := s.cfg.Quotas; q != nil && !q.Unlimited(req.GetProjectId(), quota.Backups, quota.BackupGigabytes) {
		gv, err := s.vm.volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: req.GetProjectId(), VolumeId: in.GetVolumeId()})
		if err != nil {
			return nil, err
		}
		var once sync.Once
		release := q.Lock(req.GetProjectId())
		unlock = func() { once.Do(release) }
		defer unlock()
		n, bytes, err := s.db.ProjectUsage(ctx, req.GetProjectId())
		if err != nil {
			return nil, err
		}
		if err := q.CheckCount(req.GetProjectId(), quota.Backups, n); err != nil {
			return nil, err
		}
		if err := q.CheckGigabytes(req.GetProjectId(), quota.BackupGigabytes, quota.GiB(bytes), quota.GiB(gv.GetVolume().GetSizeBytes())); err != nil {
			return nil, err
		}
	}

	// The status swap: the volume manager moves the volume (or snapshot)
	// to backing-up in one conditional update, or says why not.
	begin, err := s.vm.internal.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: req.GetProjectId(),
		VolumeId: in.GetVolumeId(), SnapshotId: in.GetSnapshotId(), Force: in.GetForce()})
	if err != nil {
		return nil, err
	}
	vol := begin.GetVolume()
	now := time.Now().UTC()
	b := &backupdb.Backup{
		ID: uuid.NewString(), ProjectID: req.GetProjectId(), VolumeID: vol.GetId(), SnapshotID: in.GetSnapshotId(),
		Name: name, Description: description, Container: container, Status: lifecycle.BackupCreating,
		SizeBytes: vol.GetSizeBytes(), IsIncremental: parent != nil, AvailabilityZone: vol.GetAvailabilityZone(),
		Metadata: store.EncodeMap(in.GetMetadata()), OwnerNode: s.cfg.Jobs.NodeID, LeaseExpiresAt: ptr(s.jobs.Lease()), ProgressOp: "backup",
		BytesTotal: vol.GetSizeBytes(), StartedAt: &now, DataTimestamp: &now,
	}
	if parent != nil {
		b.ParentID = parent.ID
	}
	err = s.db.Create(ctx, b)
	unlock()
	if err != nil {
		s.endBackup(context.WithoutCancel(ctx), b)
		return nil, err
	}
	s.log.InfoContext(ctx, "backup accepted", "backup_id", b.ID, "volume_id", b.VolumeID, "previous_status", vol.GetPreviousStatus(),
		"incremental", b.IsIncremental, "snapshot_id", b.SnapshotID)
	s.jobs.Backup(ctx, b.ID, vol.GetPreviousStatus())
	out, err := s.view(ctx, b.ProjectID, b.ID)
	if err != nil {
		return nil, err
	}
	return &backupv1.CreateBackupResponse{Backup: out}, nil
}

// checkContainer keeps container names to one safe path segment, so a
// container cannot escape the repository root.
func checkContainer(c string) error {
	if len(c) > 64 {
		return rpcerr.Invalid("container %q is longer than 64 characters", c)
	}
	for _, r := range c {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return rpcerr.Invalid("container %q may contain only letters, digits, '-' and '_'", c)
		}
	}
	if err := repository.ValidateName(c); err != nil {
		return rpcerr.Invalid("container %q: %v", c, err)
	}
	return nil
}

// endBackup returns the volume (or snapshot) of a backup whose row could not
// be written to its previous status.
func (s *Server) endBackup(ctx context.Context, b *backupdb.Backup) {
	if err := s.vm.EndBackup(ctx, b.ProjectID, b.VolumeID, b.SnapshotID); err != nil {
		s.log.Error("end backup: the volume may stay backing-up until the next recovery", "backup_id", b.ID, "volume_id", b.VolumeID, "err", err)
	}
}

func ptr[T any](v T) *T { return &v }
