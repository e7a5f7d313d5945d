package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/cpuprio"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/repository/location"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DaemonConfig is the backup-service daemon's configuration.
type DaemonConfig struct {
	// Listen is the gRPC address.
	Listen string
	// VolumeManager is the volume manager's gRPC address.
	VolumeManager string
	// DataDir holds the SQLite database and the default repository.
	DataDir string
	// DatabaseURL overrides the SQLite file (postgres://...).
	DatabaseURL string
	// NodeID names this node (default: the host name).
	NodeID string
	// Repository is where backups go (its URL, see pkg/repository/location;
	// an empty URL is <data-dir>/repository) and the S3 credentials.
	Repository location.Config
	// CinderRepository is where imported Cinder backups are read when their
	// import names no repository: Cinder's backup directory (posix, NFS
	// mounted) or s3://host:port (its S3 bucket; the credentials are
	// Repository's).
	CinderRepository string
	// NBDListen is where backups are served read-only over NBD to the
	// volume manager's live restores (default 127.0.0.1:0, a free port: the
	// volume manager is told the address with each live restore; empty:
	// no live restores).
	NBDListen string
	// NBDAdvertise is the host the volume manager dials (default: the host
	// of NBDListen).
	NBDAdvertise string
	// KeyFile holds the repository key (32 bytes or more) that encrypts new
	// containers; empty leaves them unencrypted.
	KeyFile string
	// MaxConcurrent caps the jobs running at once.
	MaxConcurrent int
	// Strategy forces how in-use volumes are read ("" = auto).
	Strategy string
	// Container is the default repository container.
	Container string
	// NoLocalReads disables local-path reads on the volume manager's node.
	NoLocalReads bool
	// HTTPListen serves /metrics, /healthz and /readyz ("" = off).
	HTTPListen string
	// Auth is how callers are authenticated.
	Auth auth.Config
	// Quota is the per-project limits of backups and backup gigabytes.
	Quota quota.Config
	// LeaseDuration is how long this node's claim on its running jobs lasts
	// without a heartbeat (several backup services on one database take
	// over each other's jobs after it).
	LeaseDuration time.Duration
	// TLS is this daemon's certificate, key and CA, for its gRPC server and
	// for its calls to the volume manager (mutual TLS; empty: plaintext).
	TLS mtls.Files
	// ServiceTokenFile holds the token (service role) this daemon sends to
	// the volume manager; with a signing key it can mint its own instead.
	ServiceTokenFile string
	// ChangedBlockTracking keeps each backup's snapshot for the next
	// incremental backup's changed ranges (see Config).
	ChangedBlockTracking bool
	// ChunkSize is the chunk size of new containers in bytes (0: the
	// engine's default, 4 MiB); existing containers keep theirs.
	ChunkSize int
	// Nice is the nice value the daemon runs at (0 to 19; default 10), so
	// the workloads it backs up win the CPU when they compete with it.
	Nice int
}

// DefaultDaemonConfig returns the embedded defaults.
func DefaultDaemonConfig() DaemonConfig {
	host, _ := os.Hostname()
	return DaemonConfig{Listen: "127.0.0.1:7200", VolumeManager: "127.0.0.1:7100", DataDir: "data/backup-service", NodeID: host,
		MaxConcurrent: 4, Container: DefaultContainer, Nice: 10, HTTPListen: "127.0.0.1:7201", NBDListen: "127.0.0.1:0", LeaseDuration: 30 * time.Second, Auth: auth.Config{Mode: auth.ModeToken},
		Quota: quota.Config{Defaults: quota.DefaultLimits()}}
}

// Validate checks the configuration.
func (c DaemonConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if _, _, err := net.SplitHostPort(c.VolumeManager); err != nil {
		errs = append(errs, fmt.Errorf("volume-manager %q: %w", c.VolumeManager, err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir is required"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("node-id is required"))
	}
	if c.LeaseDuration < 3*time.Second {
		errs = append(errs, fmt.Errorf("lease-duration %s must be at least 3s", c.LeaseDuration))
	}
	if c.MaxConcurrent < 1 {
		errs = append(errs, fmt.Errorf("max-concurrent %d must be at least 1", c.MaxConcurrent))
	}
	if c.Nice < 0 || c.Nice > cpuprio.Max {
		errs = append(errs, fmt.Errorf("nice %d must be 0 to %d", c.Nice, cpuprio.Max))
	}
	if err := backupjob.ValidateStrategy(c.Strategy); err != nil {
		errs = append(errs, err)
	}
	if err := checkContainer(c.Container); err != nil || c.Container == "" {
		errs = append(errs, fmt.Errorf("container %q: letters, digits, '-' and '_' only", c.Container))
	}
	return errors.Join(errs...)
}

func (c DaemonConfig) databaseURL() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	return "sqlite://" + filepath.Join(c.DataDir, "backup-service.db")
}

// RunDaemon runs the backup service until ctx is done.
func RunDaemon(ctx context.Context, cfg DaemonConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	up := daemon.NewStartup(log, "backup-service")
	// Only ever lower the priority: a daemon started at a higher nice
	// value (systemd's Nice=) keeps it.
	if cur, err := cpuprio.Nice(); cfg.Nice > 0 && (err != nil || cur < cfg.Nice) {
		if err := cpuprio.SetNice(cfg.Nice); err != nil {
			return err
		}
	}
	authn, err := auth.New(cfg.Auth)
	if err != nil {
		return err
	}
	if authn.NoAuth() {
		log.Warn("authentication is off (--auth noauth): every caller is an admin; for development only")
	}
	serviceToken, err := cfg.serviceToken(authn)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.databaseURL(), log)
	if err != nil {
		return err
	}
	defer store.Close(db)
	bdb, err := backupdb.New(ctx, db)
	if err != nil {
		return err
	}
	up.Step("database open and migrated", "database", store.Dialect(db))
	tokenUnary, tokenStream := auth.ClientInterceptors(serviceToken)
	creds, err := mtls.DialOption(cfg.TLS)
	if err != nil {
		return err
	}
	tlsOpts, err := mtls.ServerOption(cfg.TLS)
	if err != nil {
		return err
	}
	nbdTLS, err := mtls.ClientConfig(cfg.TLS)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(cfg.VolumeManager, creds, daemon.ReconnectPromptly(),
		grpc.WithChainUnaryInterceptor(requestid.UnaryClientInterceptor(), tokenUnary),
		grpc.WithChainStreamInterceptor(tokenStream))
	if err != nil {
		return fmt.Errorf("volume manager client: %w", err)
	}
	defer conn.Close()
	eng, err := openEngine(ctx, cfg)
	if err != nil {
		return err
	}
	repo := eng.Repository()
	up.Step("repository open", "repository", repo.Location())

	quotas, err := quota.New(cfg.Quota)
	if err != nil {
		return err
	}
	if err := LoadQuotaLimits(ctx, bdb, quotas); err != nil {
		return err
	}
	cinder := location.Config{URL: cfg.CinderRepository, S3AccessKey: cfg.Repository.S3AccessKey,
		S3SecretKey: cfg.Repository.S3SecretKey, S3Region: cfg.Repository.S3Region}
	srv := New(Config{Container: cfg.Container, Quotas: quotas, Cinder: cinder, Jobs: backupjob.Config{NodeID: cfg.NodeID, LocalReads: !cfg.NoLocalReads,
		Strategy: cfg.Strategy, MaxConcurrent: cfg.MaxConcurrent, LeaseDuration: cfg.LeaseDuration,
		ChangedBlockTracking: cfg.ChangedBlockTracking, NBDTLS: nbdTLS}}, bdb, conn, eng, log)
	defer srv.Close()
	stopNBD, err := serveLiveRestores(cfg, srv, eng, log)
	if err != nil {
		return err
	}
	defer stopNBD()
	if err := srv.Recover(ctx); err != nil {
		// Recovery is retried at the next start; new work is still accepted.
		log.Error("recovery after restart left work undone", "err", err)
	}
	up.Step("recovery of interrupted jobs done")

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	gs := daemon.NewGRPCServer(log, daemon.Auth{Authenticator: authn}, tlsOpts...)
	backupv1.RegisterBackupServiceServer(gs, srv)
	gs.Health.SetServingStatus(backupv1.BackupService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	tasks := []daemon.Task{daemon.ServeGRPC(gs, ln), srv.RunLeases}
	if cfg.HTTPListen != "" {
		hl, err := net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
		ready := &metrics.Ready{}
		ready.Set(true)
		tasks = append(tasks, daemon.ServeHTTP(metrics.Handler(metrics.Registry(metrics.BackupSeries()...), ready), hl))
	}
	up.Step("listening")
	log.Info("backup-service serving", "grpc", ln.Addr().String(), "volume_manager", cfg.VolumeManager,
		"database", store.Dialect(db), "node_id", cfg.NodeID, "repository", repo.Location(), "encrypted", cfg.KeyFile != "", "version", daemon.Version)
	return daemon.Run(ctx, tasks...)
}

// serviceToken is the token the backup service calls the volume manager
// with: read from ServiceTokenFile, or minted with the signing key (service
// role), or none when authentication is off.
func (c DaemonConfig) serviceToken(a *auth.Authenticator) (string, error) {
	switch {
	case c.ServiceTokenFile != "":
		b, err := os.ReadFile(c.ServiceTokenFile)
		if err != nil {
			return "", fmt.Errorf("service token: %w", err)
		}
		return string(bytes.TrimSpace(b)), nil
	case c.Auth.SigningKeyFile != "":
		key, err := auth.ReadKey(c.Auth.SigningKeyFile)
		if err != nil {
			return "", err
		}
		return auth.Mint(key, auth.Identity{Project: "blockvault", Roles: []string{auth.RoleService}, User: "backup-service:" + c.NodeID}), nil
	case a.NoAuth():
		return "", nil
	}
	return "", errors.New("service-token-file is required: the token (service role) the backup service calls the volume manager with, when tokens come from a token file")
}

// openEngine opens the repository the configuration names (Repository,
// KeyFile) with the backup engine.
func openEngine(ctx context.Context, cfg DaemonConfig) (*engine.Engine, error) {
	rc := cfg.Repository
	if rc.URL == "" {
		rc.URL = filepath.Join(cfg.DataDir, "repository")
	}
	repo, err := location.Open(ctx, rc)
	if err != nil {
		return nil, err
	}
	var key []byte
	if cfg.KeyFile != "" {
		if key, err = engine.ReadKeyFile(cfg.KeyFile); err != nil {
			return nil, err
		}
	}
	return engine.New(repo, engine.Options{Key: key, ChunkSize: cfg.ChunkSize})
}

// serveLiveRestores starts the NBD server that live restores export their
// backups on (TLS when the daemon has certificates) and hands the service
// the exporter; stop shuts it down.
func serveLiveRestores(cfg DaemonConfig, srv *Server, eng *engine.Engine, log *slog.Logger) (stop func(), err error) {
	addr := cfg.NBDListen
	if addr == "" {
		log.Info("no --nbd-listen: live restores are refused")
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nbd-listen %s: %w", addr, err)
	}
	host, portStr, _ := net.SplitHostPort(ln.Addr().String())
	if cfg.NBDAdvertise != "" {
		host = cfg.NBDAdvertise
	}
	port, _ := strconv.Atoi(portStr)
	tlsCfg, err := mtls.ServerConfig(cfg.TLS)
	if err != nil {
		ln.Close()
		return nil, err
	}
	nbdSrv := nbd.NewServer(nbd.ServerOptions{Logger: log, TLSConfig: tlsCfg})
	go nbdSrv.Serve(ln)
	srv.ServeLiveRestores(&backupjob.NBDExporter{Engine: eng, Server: nbdSrv, Host: host, Port: port, TLS: tlsCfg != nil})
	log.Info("serving backups to live restores over NBD", "nbd", ln.Addr().String(), "advertised", net.JoinHostPort(host, portStr))
	return func() { nbdSrv.Shutdown(context.Background()) }, nil
}
