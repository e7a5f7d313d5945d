// Package backup is the backup service's gRPC service: it validates
// requests, keeps the backups table, and runs backups and restores in the
// background, calling the volume manager over gRPC for everything that
// touches storage (the blueprint's step 3).
package backup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/validate"
	"google.golang.org/grpc"
)

// Config is what the service needs to know about where it runs.
type Config struct {
	// NodeID names this node: the same as the volume manager's makes a
	// local-path read possible (the blueprint's step 1).
	NodeID string
	// LocalReads allows reading through local paths when on the volume
	// manager's node (default true in the daemon).
	LocalReads bool
	// Strategy forces how in-use volumes are read: "" (choose from the
	// backend's capabilities), local-snapshot, attached-snapshot or
	// temporary-volume.
	Strategy string
	// MaxConcurrent caps the backups and restores running at once; more wait.
	MaxConcurrent int
	// Container is the default repository container.
	Container string
	// Quotas limits each project's backups and backup gigabytes (nil: no
	// limits).
	Quotas *quota.Quotas
	// CleanupTimeout bounds the retries of cleanup steps while the volume
	// manager is unreachable (default 2 minutes).
	CleanupTimeout time.Duration
	// LeaseDuration is how long a node's claim on its running jobs lasts
	// without a heartbeat; after that another node takes them over
	// (default 30 s).
	LeaseDuration time.Duration
	// ChangedBlockTracking keeps the snapshot each backup of an in-use
	// volume was read from, so that the next incremental backup of the
	// volume reads only the ranges the volume manager reports changed
	// since (drivers with the changed-ranges capability).
	ChangedBlockTracking bool
	// NBDTLS is the client TLS configuration (certificate and CA) for NBD
	// exports that require TLS; nil: such exports cannot be read.
	NBDTLS *tls.Config
}

func (c Config) leaseDuration() time.Duration {
	if c.LeaseDuration <= 0 {
		return 30 * time.Second
	}
	return c.LeaseDuration
}

// lease is the end of a claim made now.
func (s *Server) lease() time.Time { return time.Now().UTC().Add(s.cfg.leaseDuration()) }

func (c Config) cleanupTimeout() time.Duration {
	if c.CleanupTimeout <= 0 {
		return 2 * time.Minute
	}
	return c.CleanupTimeout
}

func (c Config) container() string {
	if c.Container == "" {
		return DefaultContainer
	}
	return c.Container
}

// ValidateStrategy checks a Strategy value.
func ValidateStrategy(s string) error {
	switch s {
	case "", StrategyLocalSnapshot, StrategyAttachedSnapshot, StrategyTemporaryVolume:
		return nil
	}
	return fmt.Errorf("strategy %q: want empty (auto), %s, %s or %s", s, StrategyLocalSnapshot, StrategyAttachedSnapshot, StrategyTemporaryVolume)
}

// Server implements BackupService.
type Server struct {
	backupv1.UnimplementedBackupServiceServer

	cfg     Config
	db      *backupdb.Store
	volumes volumev1.VolumeManagerServiceClient
	// internal is the volume manager's daemon-only service (begin/end of
	// backups and restores, temporary resources, snapshot exports).
	internal volumev1.VolumeManagerInternalServiceClient
	engine   Engine
	log      *slog.Logger

	baseCtx context.Context
	stop    context.CancelFunc
	slots   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	jobs    map[string]context.CancelFunc
}

// New returns a Server calling the volume manager on vm (both its public
// and its internal service; the connection carries a service token). Call
// Recover before serving, and Close to stop the running jobs.
func New(cfg Config, db *backupdb.Store, vm grpc.ClientConnInterface, engine Engine, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 4
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Server{cfg: cfg, db: db, volumes: volumev1.NewVolumeManagerServiceClient(vm),
		internal: volumev1.NewVolumeManagerInternalServiceClient(vm), engine: engine, log: log, baseCtx: ctx, stop: stop,
		slots: make(chan struct{}, cfg.MaxConcurrent), jobs: map[string]context.CancelFunc{}}
}

// Close cancels the running jobs and waits for their cleanup.
func (s *Server) Close() {
	s.stop()
	s.wg.Wait()
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
