// Command volume-manager runs the volume manager daemon beside the storage:
// volumes, snapshots, attachments and NBD exports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/config"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/volume/drivers"
	"github.com/blockvault/blockvault/services/volumemanager"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // --help printed the flags: not a failure
		}
		fmt.Fprintln(os.Stderr, "volume-manager:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := volumemanager.DefaultDaemonConfig()
	fs := flag.NewFlagSet("volume-manager", flag.ContinueOnError)
	fs.String("config", "", "config file of \"key: value\" lines (keys are the flag names)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address")
	fs.StringVar(&cfg.NBDListen, "nbd-listen", cfg.NBDListen, "NBD server listen address (the data plane)")
	fs.BoolVar(&cfg.NBDPlaintext, "nbd-plaintext", cfg.NBDPlaintext, "serve NBD exports without TLS even with --tls-cert/--tls-key/--tls-ca (by default they then require mutual TLS too)")
	fs.Int64Var(&cfg.LiveFillRate, "live-fill-rate", cfg.LiveFillRate, "cap on each live restore's background fill, in bytes a second (0: full speed); reads and writes of the volume are not paced")
	fs.StringVar(&cfg.NBDAdvertise, "nbd-advertise", cfg.NBDAdvertise, "host consumers dial for NBD exports (default: the nbd-listen host)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the volume pool and the SQLite database")
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "database URL (postgres://...); default: SQLite in data-dir")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "name of this node")
	driverFlags := drivers.Default().Flags(fs, &cfg.Driver) // --driver and each driver's own flags
	fs.BoolVar(&cfg.DisableSnapshotExport, "disable-snapshot-export", cfg.DisableSnapshotExport, "refuse to attach snapshots (backups of in-use volumes then use a temporary clone)")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "address of /metrics, /healthz and /readyz (empty: off)")
	auth.Flags(fs, &cfg.Auth)
	mtls.Flags(fs, &cfg.TLS)
	quota.Flags(fs, &cfg.Quota, quota.Volumes, quota.Gigabytes, quota.Snapshots)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	version := fs.Bool("version", false, "print the version and exit")
	if err := config.Parse(fs, os.Args[1:]); err != nil {
		return err
	}
	if *version {
		fmt.Println("volume-manager", daemon.Version)
		return nil
	}
	var err error
	if cfg.DriverConfig, err = driverFlags.Config(); err != nil {
		return err
	}
	log, err := daemon.NewLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return volumemanager.RunDaemon(ctx, cfg, log)
}
