// Command blockvault is the command-line client: volumes, snapshots,
// attachments and backups over gRPC, progress bars for long work, and a
// quick start that shows the system at work.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

// Exit codes scripts can rely on.
const (
	exitOK       = 0
	exitError    = 1 // the request failed (the server's message is printed)
	exitUsage    = 2 // bad command line
	exitNotFound = 3 // the named resource does not exist
	exitFailed   = 4 // a waited-for backup or restore ended in error
)

type usageError struct{ error }

type failedError struct{ error }

type notFoundError struct{ error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	var fe failedError
	var nf notFoundError
	switch {
	case errors.As(err, &nf):
		fmt.Fprintln(os.Stderr, "blockvault:", err)
		return exitNotFound
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "blockvault:", err)
		return exitUsage
	case errors.As(err, &fe):
		fmt.Fprintln(os.Stderr, "blockvault:", err)
		return exitFailed
	}
	if s, ok := status.FromError(err); ok {
		fmt.Fprintf(os.Stderr, "blockvault: %s (%s)\n", s.Message(), s.Code())
		if s.Code().String() == "NotFound" {
			return exitNotFound
		}
		return exitError
	}
	fmt.Fprintln(os.Stderr, "blockvault:", err)
	return exitError
}

type globals struct {
	volumeManager string
	backupService string
	project       string
	token         string
	output        string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "blockvault",
		Short:         "Block storage with non-disruptive backup",
		Version:       daemon.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("--output %q: want table or json", g.output)}
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.volumeManager, "volume-manager", envOr("BLOCKVAULT_VOLUME_MANAGER", "127.0.0.1:7100"), "volume manager gRPC address")
	pf.StringVar(&g.backupService, "backup-service", envOr("BLOCKVAULT_BACKUP_SERVICE", "127.0.0.1:7200"), "backup service gRPC address")
	pf.StringVar(&g.project, "project", envOr("BLOCKVAULT_PROJECT", "demo"), "project id")
	pf.StringVar(&g.token, "token", os.Getenv("BLOCKVAULT_TOKEN"), "auth token sent with every call (default: $BLOCKVAULT_TOKEN)")
	pf.StringVarP(&g.output, "output", "o", "table", "output: table or json")
	pf.StringVar(&tlsFiles.Cert, "tls-cert", os.Getenv("BLOCKVAULT_TLS_CERT"), "PEM client certificate, when the daemons require mutual TLS")
	pf.StringVar(&tlsFiles.Key, "tls-key", os.Getenv("BLOCKVAULT_TLS_KEY"), "PEM private key of --tls-cert")
	pf.StringVar(&tlsFiles.CA, "tls-ca", os.Getenv("BLOCKVAULT_TLS_CA"), "PEM CA certificate of the daemons")
	root.AddCommand(volumeCmd(g), snapshotCmd(g), backupCmd(g), repositoryCmd(g), tokenCmd(g), quickstartCmd(g), healthCmd())
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
