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

	"github.com/blockvault/blockvault/pkg/config"
	"github.com/blockvault/blockvault/pkg/daemon"
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
		return grpc.NewClient(addr, creds)
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
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("api-gateway serving", "http", ln.Addr().String(), "volume_manager", *volumes, "backup_service", *backups, "version", daemon.Version)
	return daemon.Run(ctx, daemon.ServeHTTP(h, ln))
}
