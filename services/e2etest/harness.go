// Package e2etest runs the real daemons (built from cmd/) as separate
// processes on loopback and talks to them over gRPC, REST and NBD, the way
// users and operators do. The harness lives here; the tests beside it.
package e2etest

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds the commands once per test binary and returns their directory.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "blockvault-bin-")
		if err != nil {
			buildErr = err
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		args := []string{"build", "-o", dir + "/"}
		if _, err := os.Stat("/usr/include/rbd/librbd.h"); err == nil {
			// The rbd driver is compiled in where librbd-dev is, as
			// `make build` does (the Ceph tests need it).
			args = append(args, "-tags", "rbd")
		}
		if os.Getenv("BLOCKVAULT_TEST_RACE") != "" {
			// The daemons run with the race detector; a race they report
			// fails the test that ran them (see Start's cleanup).
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/...")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binDir = dir
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Daemon is one running daemon process.
type Daemon struct {
	Name string
	Args []string
	// Env is added to the process's environment.
	Env []string
	// Bin is the program (default: the daemon Name among Binaries).
	Bin  string
	Addr string
	Log  string
	cmd  *exec.Cmd
	t    testing.TB
	done chan struct{}
}

// Start (re)starts the process.
func (d *Daemon) Start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	bin := d.Bin
	if bin == "" {
		bin = filepath.Join(Binaries(d.t), d.Name)
	}
	d.cmd = exec.Command(bin, d.Args...)
	d.cmd.Env = append(os.Environ(), d.Env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// The daemon dies with the test process, also when that is killed
	// (Pdeathsig fires when the starting thread exits, which Go threads
	// do only with the process here; see testenv's Ceph daemons).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start %s: %v", d.Name, err)
	}
	d.done = make(chan struct{})
	go func() { d.cmd.Wait(); logf.Close(); close(d.done) }()
}

// Kill sends SIGKILL (a crash) and waits for the process to end.
func (d *Daemon) Kill() { d.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (a graceful stop) and waits.
func (d *Daemon) Stop() { d.signal(syscall.SIGTERM) }

func (d *Daemon) signal(sig syscall.Signal) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// Running reports whether the process is alive.
func (d *Daemon) Running() bool {
	select {
	case <-d.done:
		return false
	default:
		return d.cmd != nil
	}
}

// Logs returns what the daemon wrote.
func (d *Daemon) Logs() string {
	b, _ := os.ReadFile(d.Log)
	return string(b)
}

// Options shape a Stack.
type Options struct {
	// DatabaseURL is a PostgreSQL URL for both daemons ("" = SQLite each).
	DatabaseURL string
	// VolumeManagerArgs and BackupArgs are extra flags.
	VolumeManagerArgs []string
	BackupArgs        []string
	// SameNode gives both daemons one node id (local paths possible).
	SameNode bool
	// NoGateway skips the REST gateway.
	NoGateway bool
	// VolumeManagerDir is the volume manager's data directory (default: a
	// temp dir; an XFS mount gives reflink mode).
	VolumeManagerDir string
	// RepositoryDir is the backup repository (default: in the backup
	// service's data directory).
	RepositoryDir string
	// Tokens turns authentication on: the daemons check signed tokens
	// (Stack.Token mints them); otherwise they run with --auth noauth.
	Tokens bool
	// TLS gives the daemons and the gateway certificates of a CA made for
	// the stack (Stack.TLS): gRPC between them is mutual TLS.
	TLS bool
	// Ceph runs the volume manager on the rbd driver, its volumes in a
	// namespace of their own in the cluster's pool.
	Ceph *testenv.CephCluster
}

// Stack is the three daemons with their clients.
type Stack struct {
	t             testing.TB
	Dir           string
	PoolDir       string
	VolumeManager *Daemon
	Backup        *Daemon
	Gateway       *Daemon
	NBDAddr       string
	// MetricsAddr is the volume manager's /metrics address; BackupMetrics the
	// backup service's.
	MetricsAddr, BackupMetrics string
	Volumes                    volumev1.VolumeManagerServiceClient
	Backups                    backupv1.BackupServiceClient
	conns                      []*grpc.ClientConn
	// SigningKey signs tokens when Options.Tokens is set; SigningKeyFile
	// holds it.
	SigningKey     []byte
	SigningKeyFile string
	// TLS is the PEM files every process of a TLS stack uses.
	TLS mtls.Files
	// Ceph and RBDNamespace are where an rbd stack's images live
	// (Options.Ceph); Ceph is nil on the file driver.
	Ceph         *testenv.CephCluster
	RBDNamespace string
	dialOpt      grpc.DialOption
	clientToken  string
}

// Token mints a token for project with roles (Options.Tokens stacks).
func (s *Stack) Token(project string, roles ...string) string {
	s.t.Helper()
	if s.SigningKey == nil {
		s.t.Fatal("Token: the stack runs without authentication (Options.Tokens)")
	}
	return auth.Mint(s.SigningKey, auth.Identity{Project: project, Roles: roles, User: "test"})
}

// FreeAddr returns a free 127.0.0.1 address, reserved for this test
// binary (testenv.FreeAddr: below the ephemeral range, never handed out
// twice on the machine while the binary lives).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return testenv.FreeAddr(t)
}

// Start brings a stack up: the volume manager and the backup service in
// directories of their own (the backup service cannot see the pool), and
// the gateway; it waits until all are healthy and stops them at cleanup.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	dir := t.TempDir()
	s := &Stack{t: t, Dir: dir}
	vmNode, bsNode := "storage-node", "backup-node"
	if o.SameNode {
		bsNode = vmNode
	}
	vmAddr, bsAddr, nbdAddr := FreeAddr(t), FreeAddr(t), FreeAddr(t)
	s.NBDAddr, s.MetricsAddr, s.BackupMetrics = nbdAddr, FreeAddr(t), FreeAddr(t)
	vmDir := o.VolumeManagerDir
	if vmDir == "" {
		vmDir = filepath.Join(dir, "vm")
	}
	s.PoolDir = filepath.Join(vmDir, "pool")
	vmArgs := []string{"--listen", vmAddr, "--nbd-listen", nbdAddr, "--data-dir", vmDir, "--node-id", vmNode, "--log-level", "debug", "--http-listen", s.MetricsAddr}
	bsArgs := []string{"--listen", bsAddr, "--volume-manager", vmAddr, "--data-dir", filepath.Join(dir, "bs"), "--node-id", bsNode, "--log-level", "debug", "--http-listen", s.BackupMetrics}
	if o.RepositoryDir != "" {
		bsArgs = append(bsArgs, "--repository", o.RepositoryDir)
	}
	s.dialOpt = grpc.WithTransportCredentials(insecure.NewCredentials())
	var gwTLS []string
	if o.TLS {
		s.TLS = MakeCerts(t, filepath.Join(dir, "tls"))
		tlsArgs := []string{"--tls-cert", s.TLS.Cert, "--tls-key", s.TLS.Key, "--tls-ca", s.TLS.CA}
		vmArgs = append(vmArgs, tlsArgs...)
		bsArgs = append(bsArgs, tlsArgs...)
		gwTLS = tlsArgs
		opt, err := mtls.DialOption(s.TLS)
		if err != nil {
			t.Fatal(err)
		}
		s.dialOpt = opt
	}
	if o.Ceph != nil {
		s.Ceph, s.RBDNamespace = o.Ceph, o.Ceph.NewNamespace(t)
		vmArgs = append(vmArgs, "--driver", "rbd", "--ceph-conf", o.Ceph.Conf, "--rbd-pool", o.Ceph.Pool, "--rbd-namespace", s.RBDNamespace)
	}
	// No quotas unless a test gives its own (its flags come later and win).
	vmArgs = append(vmArgs, "--quota-volumes", "-1", "--quota-gigabytes", "-1", "--quota-snapshots", "-1")
	bsArgs = append(bsArgs, "--quota-backups", "-1", "--quota-backup-gigabytes", "-1")
	if o.Tokens {
		s.SigningKey = []byte(strings.Repeat("k", 16) + requestidLike(t))
		keyFile := filepath.Join(dir, "signing.key")
		s.SigningKeyFile = keyFile
		if err := os.WriteFile(keyFile, s.SigningKey, 0o600); err != nil {
			t.Fatal(err)
		}
		vmArgs = append(vmArgs, "--auth", "token", "--auth-signing-key-file", keyFile)
		bsArgs = append(bsArgs, "--auth", "token", "--auth-signing-key-file", keyFile)
	} else {
		vmArgs = append(vmArgs, "--auth", "noauth")
		bsArgs = append(bsArgs, "--auth", "noauth")
	}
	if o.DatabaseURL != "" {
		vmArgs = append(vmArgs, "--database-url", o.DatabaseURL)
		bsArgs = append(bsArgs, "--database-url", o.DatabaseURL)
	}
	s.VolumeManager = &Daemon{Name: "volume-manager", Args: append(vmArgs, o.VolumeManagerArgs...), Addr: vmAddr, Log: filepath.Join(dir, "volume-manager.log"), t: t}
	s.Backup = &Daemon{Name: "backup-service", Args: append(bsArgs, o.BackupArgs...), Addr: bsAddr, Log: filepath.Join(dir, "backup-service.log"), t: t}
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
		failed := t.Failed()
		for _, d := range []*Daemon{s.Gateway, s.Backup, s.VolumeManager} {
			if d == nil {
				continue
			}
			if failed {
				// A failed test may have left a daemon stuck: SIGQUIT
				// makes the Go runtime write every goroutine's stack to
				// the log before the process ends.
				d.signal(syscall.SIGQUIT)
			}
			d.Stop()
		}
		// Daemons built with BLOCKVAULT_TEST_RACE=1 write the races they
		// find to their logs, up to their exit.
		for _, d := range []*Daemon{s.Gateway, s.Backup, s.VolumeManager} {
			if d == nil {
				continue
			}
			if _, race, found := strings.Cut(d.Logs(), "WARNING: DATA RACE"); found {
				t.Errorf("%s reported a data race:\nWARNING: DATA RACE%s", d.Name, head(race, 80))
				failed = true
			}
		}
		if failed {
			keep := os.Getenv("BLOCKVAULT_TEST_LOGS")
			for _, d := range []*Daemon{s.VolumeManager, s.Backup, s.Gateway} {
				if d == nil {
					continue
				}
				logs := d.Logs()
				shown := logs
				if crash := crashReport(logs); crash != "" {
					t.Logf("---- %s crashed ----\n%s", d.Name, crash)
					shown, _, _ = strings.Cut(logs, crash[:min(len(crash), 40)])
				}
				before, stacks, _ := strings.Cut(shown, "SIGQUIT: quit")
				t.Logf("---- %s log (without per-call debug lines) ----\n%s", d.Name, tail(withoutRPCLines(before), 60))
				if ours := ourGoroutines(stacks); ours != "" {
					t.Logf("---- %s goroutines in blockvault code at the end ----\n%s", d.Name, head(ours, 150))
				}
				if keep != "" {
					name := filepath.Join(keep, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"."+d.Name+".log")
					if err := os.MkdirAll(keep, 0o755); err == nil && os.WriteFile(name, []byte(logs), 0o644) == nil {
						t.Logf("the whole %s log, goroutine stacks included: %s", d.Name, name)
					}
				}
			}
		}
	})
	s.VolumeManager.Start()
	s.WaitHealthy(s.VolumeManager)
	s.Backup.Start()
	s.WaitHealthy(s.Backup)
	if !o.NoGateway {
		gwAddr := FreeAddr(t)
		s.Gateway = &Daemon{Name: "api-gateway", Args: append([]string{"--listen", gwAddr, "--volume-manager", vmAddr, "--backup-service", bsAddr}, gwTLS...),
			Addr: gwAddr, Log: filepath.Join(dir, "api-gateway.log"), t: t}
		s.Gateway.Start()
		s.waitHTTP(s.Gateway, "http://"+gwAddr+"/healthz")
	}
	// The harness's own clients are an admin's when tokens are on.
	if o.Tokens {
		s.clientToken = s.Token("admin", auth.RoleAdmin)
	}
	s.Volumes = volumev1.NewVolumeManagerServiceClient(s.dial(vmAddr))
	s.Backups = backupv1.NewBackupServiceClient(s.dial(bsAddr))
	return s
}

// ClientsAs returns gRPC clients of both daemons that send token.
func (s *Stack) ClientsAs(token string) (volumev1.VolumeManagerServiceClient, backupv1.BackupServiceClient) {
	saved := s.clientToken
	s.clientToken = token
	defer func() { s.clientToken = saved }()
	return volumev1.NewVolumeManagerServiceClient(s.dial(s.VolumeManager.Addr)), backupv1.NewBackupServiceClient(s.dial(s.Backup.Addr))
}

// requestidLike returns 32 random hex characters.
func requestidLike(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := cryptorand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// withoutRPCLines drops the per-call debug lines (level=DEBUG msg=rpc) that
// a test polling a status writes by the hundred.
func withoutRPCLines(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "level=DEBUG msg=rpc ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// crashReport is what a daemon that died of a signal or a fatal error
// wrote about it: the runtime's first lines (the signal, the faulting
// address, "signal arrived during cgo execution") and the goroutine that
// was running, which names the call (a C function through cgo shows as
// _Cfunc_...); "" when the log has none.
func crashReport(logs string) string {
	start := -1
	for _, marker := range []string{"\nSIGSEGV", "\nSIGABRT", "\nSIGBUS", "\nSIGILL", "\nfatal error:", "\npanic:"} {
		if i := strings.Index(logs, marker); i >= 0 && (start < 0 || i < start) {
			start = i + 1
		}
	}
	if start < 0 {
		return ""
	}
	crash := logs[start:]
	// The header and the first goroutine (the one that crashed) end at the
	// second blank line.
	end, blanks := len(crash), 0
	for i := 0; i+1 < len(crash); i++ {
		if crash[i] == '\n' && crash[i+1] == '\n' {
			if blanks++; blanks == 2 {
				end = i
				break
			}
		}
	}
	return head(crash[:end], 80)
}

// ourGoroutines keeps, of a Go runtime's goroutine dump, the goroutines
// whose stacks pass through blockvault's own code, each as its header and
// its functions outside the runtime (no file lines).
func ourGoroutines(dump string) string {
	var keep []string
	for _, g := range strings.Split(dump, "\n\n") {
		g = strings.TrimSpace(g)
		if !strings.HasPrefix(g, "goroutine ") || !strings.Contains(g, "github.com/blockvault/blockvault/") {
			continue
		}
		for i, l := range strings.Split(g, "\n") {
			if i == 0 || !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "runtime.") && !strings.HasPrefix(l, "internal/") {
				keep = append(keep, l)
			}
		}
	}
	return strings.Join(keep, "\n")
}

func head(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "[...]")
	}
	return strings.Join(lines, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *Stack) dial(addr string) *grpc.ClientConn {
	unary, stream := auth.ClientInterceptors(s.clientToken)
	c, err := grpc.NewClient(addr, s.dialOpt, daemon.ReconnectPromptly(),
		grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))
	if err != nil {
		s.t.Fatal(err)
	}
	s.conns = append(s.conns, c)
	return c
}

// WaitHealthy waits until d answers gRPC health checks with SERVING. It
// fails at once, with the log, when d exits first, and after
// testenv.Patience otherwise.
func (s *Stack) WaitHealthy(d *Daemon) {
	s.t.Helper()
	c, err := grpc.NewClient(d.Addr, s.dialOpt)
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	h := healthpb.NewHealthClient(c)
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			if waited := time.Since(start); waited > 5*time.Second {
				s.t.Logf("%s answered health checks after %v", d.Name, waited.Round(time.Millisecond))
			}
			s.waitReachable(d, start)
			return
		}
		if !d.Running() {
			s.t.Fatalf("%s exited before it answered health checks on %s (last check: %v); log:\n%s", d.Name, d.Addr, err, tail(d.Logs(), 40))
		}
		if time.Since(start) > testenv.Patience {
			s.t.Fatalf("%s did not answer gRPC health checks on %s with SERVING within %v (last check: %v); log:\n%s",
				d.Name, d.Addr, testenv.Patience, err, tail(d.Logs(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReachable waits, after d (re)started, until the clients that reach
// it again do: the harness's own gRPC connections to it are ready, and the
// gateway's calls to it no longer fail with 503 (a client whose server went
// away reconnects after a backoff; the test's next call must not fall in
// it).
func (s *Stack) waitReachable(d *Daemon, start time.Time) {
	s.t.Helper()
	for _, c := range s.conns {
		if c.Target() != d.Addr {
			continue
		}
		c.Connect()
		for st := c.GetState(); st != connectivity.Ready; st = c.GetState() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c.WaitForStateChange(ctx, st)
			cancel()
			if time.Since(start) > testenv.Patience {
				s.t.Fatalf("the test's connection to %s on %s is still %s %v after it started", d.Name, d.Addr, c.GetState(), testenv.Patience)
			}
		}
	}
	if s.Gateway == nil || !s.Gateway.Running() || (d != s.VolumeManager && d != s.Backup) {
		return
	}
	// Any project will do: the list is empty or not, but answered.
	const probe = "harness-probe"
	path := "/v3/" + probe + "/volumes?limit=1"
	if d == s.Backup {
		path = "/v3/" + probe + "/backups?limit=1"
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		req, _ := http.NewRequest("GET", "http://"+s.Gateway.Addr+path, nil)
		if s.SigningKey != nil {
			req.Header.Set("X-Auth-Token", auth.Mint(s.SigningKey, auth.Identity{Project: probe, Roles: []string{auth.RoleAdmin}, User: "harness"}))
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				return
			}
			err = fmt.Errorf("HTTP %s", resp.Status)
		}
		if time.Since(start) > testenv.Patience {
			s.t.Fatalf("the gateway still cannot reach %s %v after it started: GET %s: %v", d.Name, testenv.Patience, path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitHTTP waits until url answers 200 while d runs (testenv.Patience at
// most).
func (s *Stack) waitHTTP(d *Daemon, url string) {
	s.t.Helper()
	start := time.Now()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if !d.Running() {
			s.t.Fatalf("%s exited before %s answered (last try: %v); log:\n%s", d.Name, url, err, tail(d.Logs(), 40))
		}
		if time.Since(start) > testenv.Patience {
			s.t.Fatalf("%s: %s did not answer 200 within %v (last try: %v); log:\n%s", d.Name, url, testenv.Patience, err, tail(d.Logs(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// REST sends a JSON request to the gateway and returns the status code and
// the decoded body (nil when empty).
func (s *Stack) REST(method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, "http://"+s.Gateway.Addr+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			s.t.Fatalf("%s %s: HTTP %d, body not JSON: %q", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, out
}

// Metric returns the value of a Prometheus series (name with labels, as
// printed on /metrics) from addr, or -1 when absent.
func (s *Stack) Metric(addr, series string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		s.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	return -1
}
