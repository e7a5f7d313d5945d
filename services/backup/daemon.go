package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
}

// DefaultDaemonConfig returns the embedded defaults.
func DefaultDaemonConfig() DaemonConfig {
	host, _ := os.Hostname()
	return DaemonConfig{Listen: "127.0.0.1:7200", VolumeManager: "127.0.0.1:7100", DataDir: "data/backup-service", NodeID: host}
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
	db, err := store.Open(ctx, cfg.databaseURL(), log)
	if err != nil {
		return err
	}
	defer store.Close(db)
	bdb, err := backupdb.New(ctx, db)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(cfg.VolumeManager,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(requestid.UnaryClientInterceptor()))
	if err != nil {
		return fmt.Errorf("volume manager client: %w", err)
	}
	defer conn.Close()
	srv := New(Config{NodeID: cfg.NodeID}, bdb, volumev1.NewVolumeManagerServiceClient(conn), log)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	gs := daemon.NewGRPCServer(log)
	backupv1.RegisterBackupServiceServer(gs, srv)
	gs.Health.SetServingStatus(backupv1.BackupService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	log.Info("backup-service serving", "grpc", ln.Addr().String(), "volume_manager", cfg.VolumeManager,
		"database", store.Dialect(db), "node_id", cfg.NodeID, "version", daemon.Version)
	return daemon.Run(ctx, daemon.ServeGRPC(gs, ln))
}
