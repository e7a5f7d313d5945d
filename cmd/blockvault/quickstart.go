package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
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
	procs   []*proc
	gateway string
	// token is a member token of the demo project.
	token string
}

// proc is one daemon the quick start started; done is closed when it has
// exited (err is then its exit status).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startTimeout bounds the wait for each daemon to answer its health check.
// A daemon on an idle machine answers in well under a second; the bound is
// generous so a busy one (a build on both cores) still makes it, and a
// daemon that exits is reported at once, with its log, whatever the bound.
const startTimeout = 2 * time.Minute

// addrs are the addresses the quick start's daemons listen on.
type addrs struct {
	gateway, nbd, volumeManagerHTTP, backupServiceHTTP string
}

func quickstartCmd(g *globals) *cobra.Command {
	var dataDir string
	var a addrs
	var exit bool
	cmd := &cobra.Command{
		Use:   "quickstart",
		Short: "Start the three daemons on loopback (embedded defaults, data under ./data) and show them at work",
		Long: "quickstart starts volume-manager, backup-service and api-gateway (found next to this\n" +
			"binary) on 127.0.0.1 with SQLite and a file pool under --data-dir, waits until they are\n" +
			"healthy, runs the demonstration, and keeps the daemons running until Ctrl-C (or stops\n" +
			"them at once with --exit). Logs go to <data-dir>/logs. The demonstration takes about\n" +
			"half a minute on an idle 2-core machine.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := startStack(ctx, g, dataDir, a)
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
			select {
			case <-ctx.Done():
				fmt.Fprintln(stdout)
			case p := <-st.exited():
				// Ctrl-C reaches the daemons too (one process group), and
				// one may be gone before the CLI's own signal handler has
				// run (a loaded CI run saw it): a daemon that ends with the
				// CLI's Ctrl-C is no failure.
				select {
				case <-ctx.Done():
					fmt.Fprintln(stdout)
					return nil
				case <-time.After(5 * time.Second):
				}
				return fmt.Errorf("%s exited (%v); its log: %s\n%s", p.name, p.err, p.log, logTail(p.log, 20))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", "directory for the daemons' databases, pool, repository and logs")
	cmd.Flags().StringVar(&a.gateway, "gateway", "127.0.0.1:8776", "REST gateway listen address")
	cmd.Flags().StringVar(&a.nbd, "nbd-listen", "127.0.0.1:10809", "volume manager NBD listen address")
	cmd.Flags().StringVar(&a.volumeManagerHTTP, "volume-manager-http", "127.0.0.1:7101", "volume manager /metrics and /healthz address")
	cmd.Flags().StringVar(&a.backupServiceHTTP, "backup-service-http", "127.0.0.1:7201", "backup service /metrics and /healthz address")
	cmd.Flags().BoolVar(&exit, "exit", false, "stop the daemons after the demonstration")
	return cmd
}

// checkFree fails, naming the address, its use and the flag that moves it,
// when something already listens on one of the quick start's addresses (a
// quick start still running, say): the daemon would exit at once otherwise.
func checkFree(uses []addrUse) error {
	var errs []error
	for _, u := range uses {
		l, err := net.Listen("tcp", u.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s, flag %s) is taken: %w", u.addr, u.what, u.flag, err))
			continue
		}
		l.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("quickstart cannot listen where it would: %w\n(is another quick start or daemon running? stop it, or choose other addresses with the flags named)", errors.Join(errs...))
	}
	return nil
}

type addrUse struct{ addr, what, flag string }

// startStack starts the daemons and waits until each answers health checks.
func startStack(ctx context.Context, g *globals, dataDir string, a addrs) (*stack, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	bin := filepath.Dir(self)
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if err := checkFree([]addrUse{
		{g.volumeManager, "volume-manager gRPC", "--volume-manager"},
		{a.nbd, "volume-manager NBD", "--nbd-listen"},
		{a.volumeManagerHTTP, "volume-manager metrics", "--volume-manager-http"},
		{g.backupService, "backup-service gRPC", "--backup-service"},
		{a.backupServiceHTTP, "backup-service metrics", "--backup-service-http"},
		{a.gateway, "api-gateway REST", "--gateway"},
	}); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o750); err != nil {
		return nil, err
	}
	st := &stack{dir: dir, gateway: a.gateway}
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
		// wait is how the quick start knows the daemon is up.
		wait func(context.Context) error
	}{
		{"volume-manager", append([]string{"--listen", g.volumeManager, "--nbd-listen", a.nbd, "--http-listen", a.volumeManagerHTTP,
			"--data-dir", filepath.Join(dir, "volume-manager"), "--node-id", "quickstart"}, authArgs...),
			func(ctx context.Context) error { return waitHealthy(ctx, g.volumeManager) }},
		{"backup-service", append([]string{"--listen", g.backupService, "--http-listen", a.backupServiceHTTP, "--volume-manager", g.volumeManager,
			"--data-dir", filepath.Join(dir, "backup-service"), "--node-id", "quickstart"}, authArgs...),
			func(ctx context.Context) error { return waitHealthy(ctx, g.backupService) }},
		{"api-gateway", []string{"--listen", a.gateway, "--volume-manager", g.volumeManager, "--backup-service", g.backupService},
			func(ctx context.Context) error { return waitHTTP(ctx, "http://"+a.gateway+"/healthz") }},
	}
	fmt.Fprintf(stdout, "Starting the daemons (data in %s, logs in %s):\n", dir, filepath.Join(dir, "logs"))
	for _, d := range daemons {
		path := filepath.Join(bin, d.name)
		if _, err := os.Stat(path); err != nil {
			st.stop()
			return nil, fmt.Errorf("%s not found next to blockvault (%s): build all commands with 'make build'", d.name, bin)
		}
		logPath := filepath.Join(dir, "logs", d.name+".log")
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			st.stop()
			return nil, err
		}
		c := exec.Command(path, d.args...)
		c.Stdout, c.Stderr = logf, logf
		start := time.Now()
		if err := c.Start(); err != nil {
			logf.Close()
			st.stop()
			return nil, fmt.Errorf("start %s: %w", d.name, err)
		}
		p := &proc{name: d.name, cmd: c, log: logPath, done: make(chan struct{})}
		go func() { p.err = c.Wait(); logf.Close(); close(p.done) }()
		st.procs = append(st.procs, p)
		fmt.Fprintf(stdout, "  %-15s pid %-7d %s %s: ", d.name, c.Process.Pid, d.args[0], d.args[1])
		if err := st.await(ctx, p, d.wait); err != nil {
			fmt.Fprintln(stdout, "failed")
			st.stop()
			return nil, err
		}
		fmt.Fprintf(stdout, "healthy after %.1f s\n", time.Since(start).Seconds())
	}
	fmt.Fprintln(stdout, "  all three are healthy.")
	return st, nil
}

// await waits until wait succeeds, p exits (an error with the end of its
// log), or startTimeout passes (an error saying what was waited for).
func (st *stack) await(ctx context.Context, p *proc, wait func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- wait(ctx) }()
	select {
	case err := <-errc:
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it answered its health check (%v); the end of %s:\n%s", p.name, p.err, p.log, logTail(p.log, 20))
		default:
		}
		return fmt.Errorf("%s did not answer its health check within %v: %w (pid %d still runs; its log: %s)", p.name, startTimeout, err, p.cmd.Process.Pid, p.log)
	case <-p.done:
		return fmt.Errorf("%s exited before it answered its health check (%v); the end of %s:\n%s", p.name, p.err, p.log, logTail(p.log, 20))
	}
}

// exited yields the first daemon that exits.
func (st *stack) exited() <-chan *proc {
	ch := make(chan *proc, len(st.procs))
	for _, p := range st.procs {
		go func() { <-p.done; ch <- p }()
	}
	return ch
}

// stop stops the daemons, the last started first, and says so.
func (st *stack) stop() {
	if len(st.procs) == 0 {
		return
	}
	fmt.Fprint(stdout, "Stopping the daemons:")
	for i := len(st.procs) - 1; i >= 0; i-- {
		p := st.procs[i]
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		fmt.Fprintf(stdout, " %s", p.name)
	}
	fmt.Fprintf(stdout, " stopped (data and logs kept in %s).\n", st.dir)
	st.procs = nil
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
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
