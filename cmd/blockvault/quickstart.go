package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// stack is the three daemons the quick start runs.
type stack struct {
	dir     string
	procs   []*exec.Cmd
	gateway string
	// token is a member token of the demo project.
	token string
}

func quickstartCmd(g *globals) *cobra.Command {
	var dataDir, gateway string
	var exit bool
	cmd := &cobra.Command{
		Use:   "quickstart",
		Short: "Start the three daemons on loopback (embedded defaults, data under ./data) and show them at work",
		Long: "quickstart starts volume-manager, backup-service and api-gateway (found next to this\n" +
			"binary) on 127.0.0.1 with SQLite and a file pool under --data-dir, waits until they are\n" +
			"healthy, runs the demonstration, and keeps the daemons running until Ctrl-C (or stops\n" +
			"them at once with --exit). Logs go to <data-dir>/logs.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := startStack(ctx, g, dataDir, gateway)
			if err != nil {
				return err
			}
			defer st.stop()
			if err := runDemo(ctx, g, st); err != nil {
				return fmt.Errorf("quickstart: %w (daemon logs: %s)", err, filepath.Join(st.dir, "logs"))
			}
			if exit {
				return nil
			}
			fmt.Fprintf(stdout, "\nThe daemons keep running (gRPC %s and %s, REST http://%s); press Ctrl-C to stop them.\n",
				g.volumeManager, g.backupService, st.gateway)
			tokenFile := filepath.Join(st.dir, g.project+".token")
			fmt.Fprintf(stdout, "They check tokens; a member token of project %q is in %s:\n", g.project, tokenFile)
			fmt.Fprintf(stdout, "  export BLOCKVAULT_TOKEN=$(cat %s)   # for the blockvault CLI\n", tokenFile)
			fmt.Fprintf(stdout, "  curl -H \"X-Auth-Token: $BLOCKVAULT_TOKEN\" http://%s/v3/%s/volumes\n", st.gateway, g.project)
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", "directory for the daemons' databases, pool, repository and logs")
	cmd.Flags().StringVar(&gateway, "gateway", "127.0.0.1:8776", "REST gateway listen address")
	cmd.Flags().BoolVar(&exit, "exit", false, "stop the daemons after the demonstration")
	return cmd
}

// startStack starts the daemons and waits until each answers health checks.
func startStack(ctx context.Context, g *globals, dataDir, gateway string) (*stack, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	bin := filepath.Dir(self)
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o750); err != nil {
		return nil, err
	}
	st := &stack{dir: dir, gateway: gateway}
	// Authentication stays on: the daemons check tokens signed with a key
	// made here once, and the demonstration uses a member token of its
	// project, saved for the user in <data-dir>/<project>.token.
	keyFile := filepath.Join(dir, "auth-signing.key")
	if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	key, err := auth.ReadKey(keyFile)
	if err != nil {
		return nil, err
	}
	st.token = auth.Mint(key, auth.Identity{Project: g.project, Roles: []string{auth.RoleMember}, User: "quickstart"})
	if err := os.WriteFile(filepath.Join(dir, g.project+".token"), []byte(st.token+"\n"), 0o600); err != nil {
		return nil, err
	}
	if g.token == "" {
		g.token = st.token
	}
	authArgs := []string{"--auth", "token", "--auth-signing-key-file", keyFile}
	daemons := []struct {
		name string
		args []string
	}{
		{"volume-manager", append([]string{"--listen", g.volumeManager, "--data-dir", filepath.Join(dir, "volume-manager"), "--node-id", "quickstart"}, authArgs...)},
		{"backup-service", append([]string{"--listen", g.backupService, "--volume-manager", g.volumeManager, "--data-dir", filepath.Join(dir, "backup-service"), "--node-id", "quickstart"}, authArgs...)},
		{"api-gateway", []string{"--listen", gateway, "--volume-manager", g.volumeManager, "--backup-service", g.backupService}},
	}
	fmt.Fprintf(stdout, "Starting the daemons (data in %s):\n", dir)
	for _, d := range daemons {
		path := filepath.Join(bin, d.name)
		if _, err := os.Stat(path); err != nil {
			st.stop()
			return nil, fmt.Errorf("%s not found next to blockvault (%s): build all commands with 'make build'", d.name, bin)
		}
		logf, err := os.OpenFile(filepath.Join(dir, "logs", d.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			st.stop()
			return nil, err
		}
		c := exec.Command(path, d.args...)
		c.Stdout, c.Stderr = logf, logf
		if err := c.Start(); err != nil {
			st.stop()
			return nil, fmt.Errorf("start %s: %w", d.name, err)
		}
		st.procs = append(st.procs, c)
		fmt.Fprintf(stdout, "  %-15s pid %-7d %s\n", d.name, c.Process.Pid, strings.Join(d.args[:2], " "))
	}
	deadline, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, addr := range []string{g.volumeManager, g.backupService} {
		if err := waitHealthy(deadline, addr); err != nil {
			st.stop()
			return nil, fmt.Errorf("daemon at %s did not become healthy: %w (logs in %s)", addr, err, filepath.Join(dir, "logs"))
		}
	}
	if err := waitHTTP(deadline, "http://"+gateway+"/healthz"); err != nil {
		st.stop()
		return nil, fmt.Errorf("gateway did not become healthy: %w", err)
	}
	fmt.Fprintln(stdout, "  all three are healthy.")
	return st, nil
}

func (st *stack) stop() {
	for i := len(st.procs) - 1; i >= 0; i-- {
		p := st.procs[i]
		p.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	st.procs = nil
}

func waitHealthy(ctx context.Context, addr string) error {
	conn, err := dial(addr, "")
	if err != nil {
		return err
	}
	defer conn.Close()
	h := healthpb.NewHealthClient(conn)
	for {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitHTTP(ctx context.Context, url string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
