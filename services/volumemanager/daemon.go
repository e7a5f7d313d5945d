package volumemanager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/file"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DaemonConfig is the volume-manager daemon's configuration.
type DaemonConfig struct {
	// Listen is the gRPC address.
	Listen string
	// NBDListen is the address of the NBD server (the data plane).
	NBDListen string
	// NBDPlaintext serves NBD exports without TLS even when TLS is set
	// (by default, with TLS the exports require it too, with the same
	// certificates: mutual TLS).
	NBDPlaintext bool
	// LiveFillRate caps a live restore's background fill, in bytes a
	// second (0: full speed).
	LiveFillRate int64
	// NBDAdvertise is the host consumers dial for exports (default: the
	// host of NBDListen).
	NBDAdvertise string
	// DataDir holds the pool and the SQLite database.
	DataDir string
	// DatabaseURL overrides the SQLite file (postgres://...).
	DatabaseURL string
	// NodeID names this node (default: the host name).
	NodeID string
	// Driver names the storage backend (pkg/volume/drivers): "file" (a
	// directory of files, the default) or "rbd" (Ceph RBD images; compiled
	// in with -tags rbd).
	Driver string
	// DriverConfig is that driver's own settings (a *file.Config, a
	// *rbd.Config).
	DriverConfig volume.DriverConfig
	// DisableSnapshotExport makes the driver refuse to attach snapshots, so
	// backups of in-use volumes take the temporary-clone path.
	DisableSnapshotExport bool
	// HTTPListen serves /metrics, /healthz and /readyz ("" = off).
	HTTPListen string
	// Auth is how callers are authenticated.
	Auth auth.Config
	// Quota is the per-project limits of volumes, gigabytes and snapshots.
	Quota quota.Config
	// TLS is the gRPC server's certificate, key and CA (mutual TLS; empty:
	// plaintext).
	TLS mtls.Files
}

// DefaultDaemonConfig returns the embedded defaults.
func DefaultDaemonConfig() DaemonConfig {
	host, _ := os.Hostname()
	return DaemonConfig{Listen: "127.0.0.1:7100", NBDListen: "127.0.0.1:10809", DataDir: "data/volume-manager",
		NodeID: host, Driver: "file", DriverConfig: file.Factory().NewConfig(), HTTPListen: "127.0.0.1:7101", Auth: auth.Config{Mode: auth.ModeToken},
		Quota: quota.Config{Defaults: quota.DefaultLimits()}}
}

// Validate checks the configuration.
func (c DaemonConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if _, _, err := net.SplitHostPort(c.NBDListen); err != nil {
		errs = append(errs, fmt.Errorf("nbd-listen %q: %w", c.NBDListen, err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir is required"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("node-id is required"))
	}
	if c.DriverConfig == nil {
		errs = append(errs, fmt.Errorf("driver %q: no settings for it", c.Driver))
	} else if err := c.DriverConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c DaemonConfig) databaseURL() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	return "sqlite://" + filepath.Join(c.DataDir, "volume-manager.db")
}

// Internal is the services only blockvault's own daemons call: every
// method of VolumeManagerInternalService needs the service (or admin) role.
var Internal = auth.Internal{volumev1.VolumeManagerInternalService_ServiceDesc.ServiceName}

// RunDaemon runs the volume manager until ctx is done.
func RunDaemon(ctx context.Context, cfg DaemonConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	up := daemon.NewStartup(log, "volume-manager")
	authn, err := auth.New(cfg.Auth)
	if err != nil {
		return err
	}
	if authn.NoAuth() {
		log.Warn("authentication is off (--auth noauth): every caller is an admin; for development only")
	}
	db, err := store.Open(ctx, cfg.databaseURL(), log)
	if err != nil {
		return err
	}
	defer store.Close(db)
	vdb, err := volumedb.New(ctx, db)
	if err != nil {
		return err
	}
	up.Step("database open and migrated", "database", store.Dialect(db))
	driver, err := cfg.DriverConfig.Open(volume.OpenOptions{DataDir: cfg.DataDir,
		DisableSnapshotOpen: cfg.DisableSnapshotExport, Logger: log})
	if err != nil {
		return err
	}
	if c, ok := driver.(io.Closer); ok {
		defer c.Close()
	}
	up.Step("storage driver ready", "driver", driver.Name(), "mode", driver.Capabilities().Mode)

	nbdLn, err := net.Listen("tcp", cfg.NBDListen)
	if err != nil {
		return fmt.Errorf("nbd listen: %w", err)
	}
	host, portStr, _ := net.SplitHostPort(nbdLn.Addr().String())
	if cfg.NBDAdvertise != "" {
		host = cfg.NBDAdvertise
	}
	port, _ := strconv.Atoi(portStr)
	var nbdTLS *tls.Config
	if !cfg.NBDPlaintext {
		if nbdTLS, err = mtls.ServerConfig(cfg.TLS); err != nil {
			nbdLn.Close()
			return err
		}
	}
	nbdSrv := nbd.NewServer(nbd.ServerOptions{Logger: log, TLSConfig: nbdTLS})

	quotas, err := quota.New(cfg.Quota)
	if err != nil {
		return err
	}
	if err := LoadQuotaLimits(ctx, vdb, quotas); err != nil {
		return err
	}
	// Live restores dial the backup service's exports with the daemons'
	// client certificate.
	sourceTLS, err := mtls.ClientConfig(cfg.TLS)
	if err != nil {
		return err
	}
	srv := New(Config{NodeID: cfg.NodeID, ExportHost: host, ExportPort: port, ExportTLS: nbdTLS != nil, Quotas: quotas,
		LiveDir: filepath.Join(cfg.DataDir, "live"), LiveFillRate: cfg.LiveFillRate, SourceTLS: sourceTLS}, vdb, driver, nbdSrv, log)
	if err := srv.Restore(ctx); err != nil {
		return err
	}
	defer srv.Close()
	up.Step("volumes, attachments and exports restored")

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		nbdLn.Close()
		return err
	}
	tlsOpts, err := mtls.ServerOption(cfg.TLS)
	if err != nil {
		ln.Close()
		nbdLn.Close()
		return err
	}
	gs := daemon.NewGRPCServer(log, daemon.Auth{Authenticator: authn, Internal: Internal}, tlsOpts...)
	volumev1.RegisterVolumeManagerServiceServer(gs, srv)
	volumev1.RegisterVolumeManagerInternalServiceServer(gs, srv)
	gs.Health.SetServingStatus(volumev1.VolumeManagerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	gs.Health.SetServingStatus(volumev1.VolumeManagerInternalService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	caps := driver.Capabilities()
	up.Step("listening")
	log.Info("volume-manager serving", "grpc", ln.Addr().String(), "nbd", nbdLn.Addr().String(),
		"nbd_tls", nbdTLS != nil, "driver", driver.Name(), "mode", caps.Mode, "database", store.Dialect(db), "node_id", cfg.NodeID, "version", daemon.Version)
	tasks := []daemon.Task{daemon.ServeGRPC(gs, ln)}
	if cfg.HTTPListen != "" {
		hl, err := net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
		ready := &metrics.Ready{}
		ready.Set(true)
		tasks = append(tasks, daemon.ServeHTTP(metrics.Handler(metrics.Registry(metrics.VolumeSeries()...), ready), hl))
	}
	return daemon.Run(ctx, append(tasks, func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- nbdSrv.Serve(nbdLn) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		return nbdSrv.Shutdown(context.WithoutCancel(ctx))
	})...)
}
