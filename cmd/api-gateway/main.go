// Command api-gateway runs the REST endpoint (Block Storage API v3 shapes)
// in front of the volume manager and the backup service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/blockvault/blockvault/pkg/config"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/services/gateway"
	"google.golang.org/grpc"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // --help printed the flags: not a failure
		}
		fmt.Fprintln(os.Stderr, "api-gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("api-gateway", flag.ContinueOnError)
	fs.String("config", "", "config file of \"key: value\" lines (keys are the flag names)")
	listen := fs.String("listen", "127.0.0.1:8776", "HTTP listen address")
	volumes := fs.String("volume-manager", "127.0.0.1:7100", "volume manager gRPC address")
	backups := fs.String("backup-service", "127.0.0.1:7200", "backup service gRPC address")
	httpListen := fs.String("http-listen", "", "address of its own for /metrics, /healthz and /readyz (empty: /metrics and /readyz are served on --listen beside the REST API)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	version := fs.Bool("version", false, "print the version and exit")
	var tlsFiles mtls.Files
	mtls.Flags(fs, &tlsFiles)
	if err := config.Parse(fs, os.Args[1:]); err != nil {
		return err
	}
	if *version {
		fmt.Println("api-gateway", daemon.Version)
		return nil
	}
	log, err := daemon.NewLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	creds, err := mtls.DialOption(tlsFiles)
	if err != nil {
		return err
	}
	dial := func(addr string) (*grpc.ClientConn, error) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("address %q: %w", addr, err)
		}
		return grpc.NewClient(addr, creds, daemon.ReconnectPromptly())
	}
	vc, err := dial(*volumes)
	if err != nil {
		return err
	}
	defer vc.Close()
	bc, err := dial(*backups)
	if err != nil {
		return err
	}
	defer bc.Close()
	h, err := gateway.New(ctx, gateway.Config{Volumes: vc, Backups: bc, Log: log})
	if err != nil {
		return err
	}
	// Monitoring: every REST request is counted and timed; /readyz says
	// whether both daemons answer their health checks.
	ready := &metrics.Ready{}
	go gateway.WatchBackends(ctx, ready, 2*time.Second, vc, bc)
	mon := metrics.Handler(metrics.Registry(metrics.GatewaySeries()...), ready)
	api := gateway.Observe(h)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *httpListen == "" {
		log.Info("api-gateway serving", "http", ln.Addr().String(), "metrics", "on the REST port", "volume_manager", *volumes, "backup_service", *backups, "version", daemon.Version)
		return daemon.Run(ctx, daemon.ServeHTTP(gateway.WithMonitoring(api, mon), ln))
	}
	hl, err := net.Listen("tcp", *httpListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("http-listen: %w", err)
	}
	log.Info("api-gateway serving", "http", ln.Addr().String(), "metrics", hl.Addr().String(), "volume_manager", *volumes, "backup_service", *backups, "version", daemon.Version)
	return daemon.Run(ctx, daemon.ServeHTTP(api, ln), daemon.ServeHTTP(mon, hl))
}
