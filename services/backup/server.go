// Package backup is the backup service's gRPC service: it validates
// requests, keeps the backups table, and runs backups and restores in the
// background, calling the volume manager over gRPC for everything that
// touches storage (the blueprint's step 3).
package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/repository/location"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/validate"
	"google.golang.org/grpc"
)

// Config is what the service needs to know about where it runs.
type Config struct {
	// Jobs is how the backups, restores and deletes run.
	Jobs backupjob.Config
	// Container is the default repository container.
	Container string
	// Quotas limits each project's backups and backup gigabytes (nil: no
	// limits).
	Quotas *quota.Quotas
	// Cinder is where imported Cinder backups are read: URL is the
	// repository of records imported without one (--cinder-repository;
	// may be empty), the S3 settings are for Cinder's S3 buckets.
	Cinder location.Config
}

func (c Config) container() string {
	if c.Container == "" {
		return DefaultContainer
	}
	return c.Container
}

// Server implements BackupService.
type Server struct {
	backupv1.UnimplementedBackupServiceServer

	cfg    Config
	db     *backupdb.Store
	vm     vmClient
	engine *engine.Engine
	jobs   *backupjob.Runner
	cinder *cinderRepos
	// live: live restores are served (ServeLiveRestores).
	live bool
	log  *slog.Logger
}

// New returns a Server calling the volume manager on vm (both its public
// and its internal service; the connection carries a service token). Call
// Recover before serving, and Close to stop the running jobs.
func New(cfg Config, db *backupdb.Store, vm grpc.ClientConnInterface, eng *engine.Engine, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := newVMClient(vm)
	s := &Server{cfg: cfg, db: db, vm: c, engine: eng, jobs: backupjob.New(cfg.Jobs, db, c, eng, log),
		cinder: newCinderRepos(db, cfg.Cinder.URL, cfg.Cinder), log: log}
	s.jobs.RestoreImportedWith(s.cinder)
	return s
}

// ServeLiveRestores lets live restores export their backups with x. Call
// it before Recover, which resumes interrupted live restores.
func (s *Server) ServeLiveRestores(x backupjob.Exporter) {
	s.live = true
	s.jobs.ServeLiveRestoresWith(x)
}

// Recover finishes what a crash of this node interrupted (see
// backupjob.Runner.Recover).
func (s *Server) Recover(ctx context.Context) error { return s.jobs.Recover(ctx) }

// RunLeases renews this node's job leases and takes over lapsed ones, until
// ctx is done (see backupjob.Runner.RunLeases).
func (s *Server) RunLeases(ctx context.Context) error { return s.jobs.RunLeases(ctx) }

// Close cancels the running jobs and waits for their cleanup.
func (s *Server) Close() {
	s.jobs.Close()
	s.cinder.Close()
}

func checkRef(project, id string) error {
	if err := validate.Project(project); err != nil {
		return err
	}
	return validate.UUID("backup_id", id)
}

// GetBackup implements BackupService.
func (s *Server) GetBackup(ctx context.Context, req *backupv1.GetBackupRequest) (*backupv1.GetBackupResponse, error) {
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return nil, err
	}
	out, err := s.view(ctx, req.GetProjectId(), req.GetBackupId())
	if err != nil {
		return nil, err
	}
	return &backupv1.GetBackupResponse{Backup: out}, nil
}

func (s *Server) view(ctx context.Context, project, id string) (*backupv1.Backup, error) {
	b, err := s.db.Get(ctx, project, id)
	if err != nil {
		return nil, err
	}
	n, err := s.db.CountDependents(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	return toBackup(b, n), nil
}

// ListBackups implements BackupService.
func (s *Server) ListBackups(ctx context.Context, req *backupv1.ListBackupsRequest) (*backupv1.ListBackupsResponse, error) {
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	for _, c := range []error{validate.OptionalUUID("marker", req.GetMarker()), validate.OptionalUUID("volume_id", req.GetVolumeId())} {
		if c != nil {
			return nil, c
		}
	}
	if req.GetLimit() < 0 {
		return nil, rpcerr.Invalid("limit must not be negative")
	}
	project := req.GetProjectId()
	// A member's all_tenants is ignored, as the Block Storage API does.
	if req.GetAllTenants() && auth.IsAdmin(ctx) {
		project = ""
	}
	rows, err := s.db.List(ctx, backupdb.Filter{Project: project, Name: req.GetName(), Status: req.GetStatus(),
		VolumeID: req.GetVolumeId(), Page: store.Page{Limit: int(req.GetLimit()), Marker: req.GetMarker()}})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, rpcerr.Invalid("marker %s names no backup", req.GetMarker())
		}
		return nil, err
	}
	resp := &backupv1.ListBackupsResponse{}
	for i := range rows {
		n, err := s.db.CountDependents(ctx, rows[i].ID)
		if err != nil {
			return nil, err
		}
		resp.Backups = append(resp.Backups, toBackup(&rows[i], n))
	}
	if req.GetLimit() > 0 && len(rows) == int(req.GetLimit()) {
		resp.BackupsLinks = []*backupv1.Link{{Rel: "next", Href: fmt.Sprintf("/v3/%s/backups?limit=%d&marker=%s", req.GetProjectId(), req.GetLimit(), rows[len(rows)-1].ID)}}
	}
	return resp, nil
}
