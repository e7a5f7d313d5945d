package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CephCluster is a throwaway single-node Ceph cluster (one mon, one mgr,
// one bluestore OSD on a sparse file) on 127.0.0.1.
//
// Authentication is off (auth ... required = none, as in a developer's
// vstart cluster): a client needs only the ceph.conf, e.g. go-ceph's
// rados.NewConn(), conn.ReadConfigFile(c.Conf), conn.Connect().
type CephCluster struct {
	Dir  string // the cluster's directory (config, keyring, data, logs, pid files)
	Conf string // path of its ceph.conf; clients (go-ceph, the rbd CLI) use it with the client.admin keyring it names
	Pool string // an RBD pool created and initialised (rbd pool init) for the tests, "rbd"

	bin        map[string]string // program name -> path
	monPort    int               // the mon's v2 port
	bindPort   int               // the first of the cephPorts ports the other daemons bind
	owner      *os.File          // <Dir>/owner, locked while this process lives
	ctx        context.Context   // cancelled, with the cause, when a daemon exits on its own
	cancel     context.CancelCauseFunc
	daemons    []*cephDaemon
	stopping   atomic.Bool
	namespaces atomic.Int64
}

// cephDaemon is one daemon of a cluster, started in the foreground (-f) as
// a child of the test process.
type cephDaemon struct {
	name string // "mon.a", "mgr.x", "osd.0"
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and been reaped
	err  error         // cmd.Wait's, once done is closed
}

// cephParent holds every cluster of every test process on the machine, one
// directory each, so that a run can find and remove what a killed run left.
var cephParent = filepath.Join(os.TempDir(), "blockvault-ceph")

const (
	// cephOSDSize is the size of the OSD's block file StartCeph makes. The
	// file is sparse: it takes on disk what the tests write, no more.
	cephOSDSize = 8 << 30
	// cephPorts is how many ports the OSD and the mgr may bind (the OSD's
	// public, cluster and two heartbeat messengers, the mgr's one, and
	// slack for a messenger that rebinds).
	cephPorts = 12
)

// cephStopWait bounds how long a daemon has to exit on SIGTERM before it
// gets SIGKILL (a variable for the sweep's test).
var cephStopWait = 15 * time.Second

// errCephTimeout is the cause of a ceph or rbd command killed after
// Patience.
var errCephTimeout = fmt.Errorf("no answer within %v", Patience)

// StartCeph starts a cluster for the test and stops it (and removes its
// files) at t's cleanup. Missing ceph-mon/ceph-osd/ceph-mgr/ceph/rbd
// programs, or not root, go through Missing (fail in CI, skip elsewhere).
//
// Before it starts one, it removes the clusters that test processes which
// have since died left behind (their daemons, then their directories). The
// daemons it starts die with the test process (Pdeathsig) even when that
// is killed and no cleanup runs.
func StartCeph(t testing.TB) *CephCluster {
	t.Helper()
	return StartCephSized(t, cephOSDSize)
}

// StartCephSized is StartCeph with an OSD of osdSize bytes (a sparse
// file), for tests and benchmarks that write more than StartCeph's 8 GiB.
func StartCephSized(t testing.TB, osdSize int64) *CephCluster {
	t.Helper()
	RequireRoot(t)
	bin := map[string]string{}
	for _, p := range []string{"ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd", "ceph-authtool", "monmaptool"} {
		bin[p] = LookPath(t, p)
	}
	began := time.Now()
	var steps []string
	step := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("ceph: %s: %v", what, err)
		}
		steps = append(steps, fmt.Sprintf("%s %.1fs", what, time.Since(start).Seconds()))
	}

	var c *CephCluster
	step("sweep", func() (err error) {
		c, err = newCephDir()
		return err
	})
	c.bin = bin
	c.Conf = filepath.Join(c.Dir, "ceph.conf")
	c.Pool = "rbd"
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	t.Cleanup(func() { c.stop(t) })

	monPort := FreePort(t)
	bindPort := FreePortRange(t, cephPorts)
	c.monPort, c.bindPort = monPort, bindPort
	fsid, osdUUID := newUUID(), newUUID()
	step("config", func() error {
		for _, d := range []string{"mon.a", "mgr.x", "osd.0", "run", "log"} {
			if err := os.Mkdir(filepath.Join(c.Dir, d), 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(c.Conf, []byte(cephConf(c.Dir, fsid, monPort, bindPort, osdSize)), 0o644); err != nil {
			return err
		}
		keyring := filepath.Join(c.Dir, "keyring")
		if err := c.tool("ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"); err != nil {
			return err
		}
		if err := c.tool("ceph-authtool", keyring, "--gen-key", "-n", "client.admin",
			"--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"); err != nil {
			return err
		}
		return c.tool("monmaptool", "--create", "--fsid", fsid,
			"--addv", "a", fmt.Sprintf("[v2:127.0.0.1:%d]", monPort), filepath.Join(c.Dir, "monmap"))
	})
	// The OSD's mkfs needs no mon (--no-mon-config; the fsid is in
	// ceph.conf), so it runs while the mon and the mgr start.
	osdMkfs := make(chan error, 1)
	go func() {
		osdMkfs <- c.tool("ceph-osd", "--conf", c.Conf, "--no-mon-config", "-i", "0", "--mkfs", "--osd-uuid", osdUUID)
	}()
	step("mon", func() error {
		if err := c.tool("ceph-mon", "--conf", c.Conf, "--mkfs", "-i", "a",
			"--monmap", filepath.Join(c.Dir, "monmap"), "--keyring", filepath.Join(c.Dir, "keyring")); err != nil {
			return err
		}
		if err := c.startDaemon("mon", "a"); err != nil {
			return err
		}
		return c.startDaemon("mgr", "x")
	})
	step("osd new", func() error {
		// The first command the mon answers: it also waits for the mon.
		if _, err := c.cli(c.ctx, "ceph", "osd", "new", osdUUID, "0"); err != nil {
			return fmt.Errorf("%w\n%s", err, c.Logs())
		}
		return nil
	})
	step("osd mkfs", func() error { return <-osdMkfs })
	step("osd up", func() error {
		if err := c.startDaemon("osd", "0"); err != nil {
			return err
		}
		if _, err := c.cli(c.ctx, "ceph", "osd", "pool", "create", c.Pool, "8", "8"); err != nil {
			return fmt.Errorf("%w\n%s", err, c.Logs())
		}
		return c.waitOSDUp()
	})
	step("pool", func() error {
		// rbd pool init writes to the pool, so it returns once the pool's
		// placement groups are active: once the pool is usable.
		if _, err := c.cli(c.ctx, "rbd", "pool", "init", c.Pool); err != nil {
			return fmt.Errorf("the pool %q did not become usable: %w\n%s", c.Pool, err, c.Logs())
		}
		return nil
	})
	step("pool in ceph df", c.waitPoolInDF)
	t.Logf("ceph: cluster in %s (mon v2:127.0.0.1:%d, OSD and mgr on ports %d-%d) up in %.1fs (%s)",
		c.Dir, monPort, bindPort, bindPort+cephPorts-1, time.Since(began).Seconds(), strings.Join(steps, ", "))
	return c
}

// RBD runs the rbd CLI against the cluster (--conf c.Conf) and returns its
// stdout; it fails the test on error, with stderr.
func (c *CephCluster) RBD(t testing.TB, args ...string) string {
	t.Helper()
	return c.mustCLI(t, "rbd", args...)
}

// Ceph runs the ceph CLI against the cluster likewise.
func (c *CephCluster) Ceph(t testing.TB, args ...string) string {
	t.Helper()
	return c.mustCLI(t, "ceph", args...)
}

// NewNamespace creates a fresh RBD namespace in c.Pool (rbd namespace
// create) and returns its name, so each driver under test sees an empty
// pool without the cost of a new pool.
func (c *CephCluster) NewNamespace(t testing.TB) string {
	t.Helper()
	ns := fmt.Sprintf("ns%d", c.namespaces.Add(1))
	c.RBD(t, "namespace", "create", "--pool", c.Pool, "--namespace", ns)
	return ns
}

// Logs returns the end of each daemon's log (for failure messages).
func (c *CephCluster) Logs() string {
	files, _ := filepath.Glob(filepath.Join(c.Dir, "log", "*"))
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		tail := tailFile(f, 25, 6000)
		if strings.TrimSpace(tail) == "" {
			continue
		}
		fmt.Fprintf(&b, "--- end of %s ---\n%s\n", f, strings.TrimRight(tail, "\n"))
	}
	if b.Len() == 0 {
		return "(no ceph daemon logs in " + filepath.Join(c.Dir, "log") + ")"
	}
	return b.String()
}

// cephConf is the cluster's configuration: msgr2 on 127.0.0.1 only, the
// mon on monPort, the other daemons within [bindPort,
// bindPort+cephPorts), no authentication, a pool size of one, small memory;
// a client's call fails after Patience instead of hanging (librados waits
// forever by default) when the cluster is gone.
// Admin sockets, pid files and log files are set for the daemons only, so
// that concurrent clients do not fight over client.admin's.
func cephConf(dir, fsid string, monPort, bindPort int, osdSize int64) string {
	daemon := fmt.Sprintf(`admin socket = %[1]s/run/$name.asok
pid file = %[1]s/run/$name.pid
log file = %[1]s/log/$name.log
`, dir)
	return fmt.Sprintf(`[global]
fsid = %[2]s
mon host = v2:127.0.0.1:%[3]d
mon initial members = a
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = %[4]d
ms bind port max = %[5]d
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
osd crush chooseleaf type = 0
run dir = %[1]s/run
keyring = %[1]s/keyring
[client]
client mount timeout = %[8]d
rados mon op timeout = %[8]d
rados osd op timeout = %[8]d
[mon]
%[6]smon data = %[1]s/$name
mon data avail warn = 1
mon data avail crit = 0
[mgr]
%[6]smgr data = %[1]s/$name
[osd]
%[6]sosd data = %[1]s/$name
osd objectstore = bluestore
bluestore block create = true
bluestore block size = %[7]d
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
osd memory target = 1073741824
bluestore cache autotune = false
bluestore cache size = 134217728
`, dir, fsid, monPort, bindPort, bindPort+cephPorts-1, daemon, osdSize, int(Patience.Seconds()))
}

// newCephDir sweeps cephParent of the clusters of dead test processes and
// makes a directory for a new one, owned by this process: <dir>/owner
// holds its pid (for people) and a lock this process holds while it lives
// (for the sweep, since pids get reused). A global lock (cephParent/.lock)
// keeps sweeps and creations apart, so a sweep never sees a directory
// whose owner has yet to lock it.
func newCephDir() (*CephCluster, error) {
	if err := os.MkdirAll(cephParent, 0o755); err != nil {
		return nil, err
	}
	global, err := os.OpenFile(filepath.Join(cephParent, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer global.Close()
	if err := unix.Flock(int(global.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", global.Name(), err)
	}
	if err := sweepCeph(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cephParent, "")
	if err != nil {
		return nil, err
	}
	owner, err := os.Create(filepath.Join(dir, "owner"))
	if err == nil {
		err = unix.Flock(int(owner.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err == nil {
		_, err = fmt.Fprintf(owner, "%d\n", os.Getpid())
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("take ownership of %s: %w", dir, err)
	}
	return &CephCluster{Dir: dir, owner: owner}, nil
}

// sweepCeph removes the clusters under cephParent whose owner is gone:
// their owner file is unlocked (or missing). Their daemons are stopped
// first. The caller holds cephParent/.lock.
func sweepCeph() error {
	entries, err := os.ReadDir(cephParent)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(cephParent, e.Name())
		owner, err := os.OpenFile(filepath.Join(dir, "owner"), os.O_RDWR, 0)
		if err == nil {
			if err := unix.Flock(int(owner.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				owner.Close() // its test process is alive
				continue
			}
		}
		left := killCephProcs(dir)
		if owner != nil {
			owner.Close()
		}
		if len(left) > 0 {
			return fmt.Errorf("the processes %v of the abandoned cluster %s survive SIGKILL; stop them and remove the directory", left, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove the abandoned cluster %s: %w", dir, err)
		}
	}
	return nil
}

// killCephProcs stops every process of the cluster in dir that is not a
// child of this process: those its pid files name and those whose command
// line names the directory (all of them are started with --conf
// dir/ceph.conf), SIGTERM first, SIGKILL after cephStopWait. It returns the
// pids that survive even SIGKILL.
func killCephProcs(dir string) []int {
	pids := map[int]bool{}
	files, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				pids[pid] = true
			}
		}
	}
	for _, pid := range cephProcs(dir) {
		pids[pid] = true
	}
	// A pidfd names the process itself, not its number: checked once to be
	// the cluster's, it cannot be some later process that reuses the pid.
	fds := map[int]int{}
	for pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone
		}
		if !isCephProc(pid, dir) {
			unix.Close(fd)
			continue
		}
		fds[pid] = fd
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	signalAll := func(sig unix.Signal) {
		for _, fd := range fds {
			unix.PidfdSendSignal(fd, sig, nil, 0)
		}
	}
	signalAll(unix.SIGTERM)
	if waitPidfds(fds, cephStopWait) {
		return nil
	}
	signalAll(unix.SIGKILL)
	waitPidfds(fds, 5*time.Second)
	var left []int
	for pid, fd := range fds {
		if !pidfdExited(fd) {
			left = append(left, pid)
		}
	}
	return left
}

// waitPidfds waits up to d for every process of fds to exit and reports
// whether they all have.
func waitPidfds(fds map[int]int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for _, fd := range fds {
		for !pidfdExited(fd) {
			left := time.Until(deadline)
			if left <= 0 {
				return false
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			unix.Poll(pfd, int(left.Milliseconds())+1)
		}
	}
	return true
}

// pidfdExited reports whether the process of a pidfd has exited (the pidfd
// is readable then).
func pidfdExited(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	return err == nil && n > 0
}

// cephProcs returns the pids of the processes whose command line names dir.
func cephProcs(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if isCephProc(pid, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isCephProc reports whether pid runs with an argument in dir (a zombie's
// command line is empty: it has exited).
func isCephProc(pid int, dir string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte(dir+"/"))
}

// startDaemon starts ceph-<kind> -i id in the foreground, in its own
// process group, killed if the test process dies; its stdout and stderr
// (little more than a crash's trace: it logs to its log file) go to
// log/<kind>.<id>.out.
func (c *CephCluster) startDaemon(kind, id string) error {
	name := kind + "." + id
	out, err := os.Create(filepath.Join(c.Dir, "log", name+".out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(c.bin["ceph-"+kind], "--conf", c.Conf, "-f", "-i", id)
	cmd.Env = cephEnv()
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig fires when the thread that started the daemon exits; Go
	// ends threads only under runtime.LockOSThread, which the tests do not
	// use, so in practice it fires when the test process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d := &cephDaemon{name: name, cmd: cmd, done: make(chan struct{})}
	c.daemons = append(c.daemons, d)
	go func() {
		d.err = cmd.Wait()
		close(d.done)
		if !c.stopping.Load() {
			c.cancel(fmt.Errorf("ceph daemon %s exited (%v)", name, d.err))
		}
	}()
	return nil
}

// stop stops the daemons (the OSD and the mgr, then the mon an OSD
// reports its shutdown to: SIGTERM, SIGKILL after cephStopWait), kills
// any other process of the cluster (a ceph or rbd command left running)
// and removes the directory.
func (c *CephCluster) stop(t testing.TB) {
	t.Helper()
	c.stopping.Store(true)
	c.cancel(errors.New("the cluster is being stopped"))
	var mons, others []*cephDaemon
	for _, d := range c.daemons {
		if strings.HasPrefix(d.name, "mon.") {
			mons = append(mons, d)
		} else {
			others = append(others, d)
		}
	}
	began := time.Now()
	ok := true
	for _, group := range [][]*cephDaemon{others, mons} {
		for _, d := range group {
			d.cmd.Process.Signal(syscall.SIGTERM)
		}
		deadline := time.Now().Add(cephStopWait)
		for _, d := range group {
			select {
			case <-d.done:
				continue
			case <-time.After(time.Until(deadline)):
			}
			t.Logf("ceph: %s did not exit within %v of SIGTERM; SIGKILL", d.name, cephStopWait)
			d.cmd.Process.Signal(syscall.SIGKILL)
			select {
			case <-d.done:
			case <-time.After(5 * time.Second):
				t.Errorf("ceph: %s (pid %d) survives SIGKILL; its directory %s is kept", d.name, d.cmd.Process.Pid, c.Dir)
				ok = false
			}
		}
	}
	if left := killCephProcs(c.Dir); len(left) > 0 {
		t.Errorf("ceph: the processes %v of %s survive SIGKILL; its directory is kept", left, c.Dir)
		ok = false
	}
	if ok {
		if err := os.RemoveAll(c.Dir); err != nil {
			t.Errorf("ceph: remove the cluster's directory: %v", err)
		}
	}
	c.owner.Close()
	t.Logf("ceph: cluster in %s stopped and removed in %.1fs", c.Dir, time.Since(began).Seconds())
}

// Run runs prog (ceph or rbd) against the cluster and returns its stdout,
// or an error with its stderr: for callers that cannot fail a test.
func (c *CephCluster) Run(ctx context.Context, prog string, args ...string) (string, error) {
	if c.bin[prog] == "" {
		return "", fmt.Errorf("ceph: %q is not one of the cluster's programs", prog)
	}
	return c.cli(ctx, prog, args...)
}

// mustCLI runs a ceph or rbd command and fails the test if it fails.
func (c *CephCluster) mustCLI(t testing.TB, prog string, args ...string) string {
	t.Helper()
	out, err := c.cli(c.ctx, prog, args...)
	if err != nil {
		if c.ctx.Err() != nil || errors.Is(err, errCephTimeout) {
			t.Fatalf("%v\n%s", err, c.Logs())
		}
		t.Fatal(err)
	}
	return out
}

// cli runs prog (ceph or rbd) --conf c.Conf args and returns its stdout; it
// is killed after Patience or when ctx ends (a daemon exited), and its
// error says which, with stderr.
func (c *CephCluster) cli(ctx context.Context, prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, Patience, errCephTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin[prog], append([]string{"--conf", c.Conf}, args...)...)
	cmd.Env = cephEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %v", context.Cause(ctx), err)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// tool runs one of the cluster-making programs (ceph-authtool, monmaptool,
// the mkfs of a daemon) to completion.
func (c *CephCluster) tool(prog string, args ...string) error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), Patience, errCephTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin[prog], args...)
	cmd.Env = cephEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %v", context.Cause(ctx), err)
		}
		return fmt.Errorf("%s %s: %w\n%s\n%s", prog, strings.Join(args, " "), err, bytes.TrimSpace(out), c.Logs())
	}
	return nil
}

// waitOSDUp waits, up to Patience, until the mon counts the OSD up.
func (c *CephCluster) waitOSDUp() error {
	deadline := time.Now().Add(Patience)
	var last string
	for {
		out, err := c.cli(c.ctx, "ceph", "osd", "stat", "-f", "json")
		if err != nil {
			last = err.Error()
		} else {
			last = strings.TrimSpace(out)
			var st struct {
				Up int `json:"num_up_osds"`
			}
			if json.Unmarshal([]byte(out), &st) == nil && st.Up == 1 {
				return nil
			}
		}
		if c.ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("the OSD did not come up (ceph osd stat: num_up_osds 1) within %v: %v; last osd stat: %s\n%s",
				Patience, context.Cause(c.ctx), last, c.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitPoolInDF waits, up to Patience, until ceph df lists the pool with
// its space: the mgr reports a new pool's statistics to the mon on its own
// time (on a busy machine, seconds after the pool is usable), and the rbd
// driver sizes volumes against the pool's MAX AVAIL there.
func (c *CephCluster) waitPoolInDF() error {
	deadline := time.Now().Add(Patience)
	var last string
	for {
		out, err := c.cli(c.ctx, "ceph", "df", "-f", "json")
		if err != nil {
			last = err.Error()
		} else {
			last = strings.TrimSpace(out)
			var df struct {
				Pools []struct {
					Name  string `json:"name"`
					Stats struct {
						MaxAvail int64 `json:"max_avail"`
					} `json:"stats"`
				} `json:"pools"`
			}
			if json.Unmarshal([]byte(out), &df) == nil {
				for _, p := range df.Pools {
					if p.Name == c.Pool && p.Stats.MaxAvail > 0 {
						return nil
					}
				}
			}
		}
		if c.ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("ceph df did not list the pool %q with its space within %v: %v; last ceph df: %s\n%s",
				c.Pool, Patience, context.Cause(c.ctx), last, c.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cephEnv is the environment without the variables that would point the
// ceph programs at another cluster or add arguments.
func cephEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CEPH_") {
			env = append(env, kv)
		}
	}
	return env
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// tailFile returns the last lines of path, at most max bytes.
func tailFile(path string, lines, max int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - int64(max)
	if off < 0 {
		off = 0
	}
	b := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(b, off)
	s := string(b[:n])
	all := strings.Split(s, "\n")
	if off > 0 && len(all) > 1 {
		all = all[1:] // a partial first line
	}
	all = slices.DeleteFunc(all, func(l string) bool { return strings.TrimSpace(l) == "" })
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
