// Command backup-service runs the backup service daemon: backups of volumes,
// attached or not, into a backup repository, and restores.
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
	"github.com/blockvault/blockvault/pkg/repository/location"
	"github.com/blockvault/blockvault/services/backup"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // --help printed the flags: not a failure
		}
		fmt.Fprintln(os.Stderr, "backup-service:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := backup.DefaultDaemonConfig()
	fs := flag.NewFlagSet("backup-service", flag.ContinueOnError)
	fs.String("config", "", "config file of \"key: value\" lines (keys are the flag names)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address")
	fs.StringVar(&cfg.VolumeManager, "volume-manager", cfg.VolumeManager, "volume manager gRPC address")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the SQLite database and the default repository")
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "database URL (postgres://...); default: SQLite in data-dir")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "name of this node (the volume manager's node id allows local-path reads)")
	location.Flags(fs, &cfg.Repository, "<data-dir>/repository")
	fs.StringVar(&cfg.NBDListen, "nbd-listen", cfg.NBDListen, "address backups are served on over NBD to the volume manager's live restores (port 0: a free one; the volume manager is told the address with each live restore)")
	fs.StringVar(&cfg.NBDAdvertise, "nbd-advertise", cfg.NBDAdvertise, "host the volume manager dials for live restores (default: the host of --nbd-listen)")
	fs.StringVar(&cfg.CinderRepository, "cinder-repository", cfg.CinderRepository,
		"where Cinder's backup drivers wrote the backups imported from Cinder records that name no repository: a directory (backup_posix_path, or the NFS share mounted) or s3://host:port (s3s:// for TLS; the S3 credentials are --s3-access-key/--s3-secret-key); read only")
	fs.StringVar(&cfg.KeyFile, "encryption-key-file", cfg.KeyFile, "file holding the repository key (at least 32 bytes); new containers are encrypted with it")
	fs.IntVar(&cfg.MaxConcurrent, "max-concurrent", cfg.MaxConcurrent, "backups, restores and deletes running at once (more wait in a queue; live restores are not counted: their users are waiting)")
	fs.StringVar(&cfg.Strategy, "strategy", cfg.Strategy, "force how in-use volumes are read: local-snapshot, attached-snapshot, temporary-volume (default: chosen from the backend's capabilities)")
	fs.StringVar(&cfg.Container, "container", cfg.Container, "default repository container")
	fs.IntVar(&cfg.ChunkSize, "chunk-size", cfg.ChunkSize,
		"chunk size in bytes of new repository containers: a power of two from 65536 to 67108864 (0: 4 MiB); smaller chunks make incremental backups of small changes store less, larger ones mean fewer objects")
	fs.BoolVar(&cfg.ChangedBlockTracking, "changed-block-tracking", cfg.ChangedBlockTracking,
		"keep the snapshot each backup of an in-use volume was read from, so the next incremental backup reads only what changed (costs copy-before-write on the volume manager in that mode)")
	fs.IntVar(&cfg.Nice, "nice", cfg.Nice,
		"nice value to run at, 0 to 19: above 0 the workloads being backed up win the CPU when they compete with backups and restores (0: as started)")
	fs.BoolVar(&cfg.NoLocalReads, "no-local-reads", cfg.NoLocalReads, "never read through local paths, even on the volume manager's node")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "address of /metrics, /healthz and /readyz (empty: off)")
	fs.DurationVar(&cfg.LeaseDuration, "lease-duration", cfg.LeaseDuration, "how long this node's claim on its running jobs lasts without a heartbeat; backup services sharing a database take over a dead node's jobs after it")
	auth.Flags(fs, &cfg.Auth)
	mtls.Flags(fs, &cfg.TLS)
	quota.Flags(fs, &cfg.Quota, quota.Backups, quota.BackupGigabytes)
	fs.StringVar(&cfg.ServiceTokenFile, "service-token-file", cfg.ServiceTokenFile, "file holding the token (service role) to call the volume manager with (default: minted with --auth-signing-key-file)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	version := fs.Bool("version", false, "print the version and exit")
	if err := config.Parse(fs, os.Args[1:]); err != nil {
		return err
	}
	if *version {
		fmt.Println("backup-service", daemon.Version)
		return nil
	}
	log, err := daemon.NewLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return backup.RunDaemon(ctx, cfg, log)
}
