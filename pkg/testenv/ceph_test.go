package testenv

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCeph starts a cluster, uses its pool through the rbd CLI in a fresh
// namespace (create, write, import, list, snapshot, export), starts a
// second cluster while the first runs (their ports must not collide) and
// uses that too; after their cleanup no daemon of either is left and their
// directories are gone.
func TestCeph(t *testing.T) {
	type life struct {
		dir  string
		pids map[string]int // daemon -> pid, from its pid file
	}
	var lives []life
	t.Run("cluster", func(t *testing.T) {
		a := StartCeph(t)
		lives = append(lives, life{a.Dir, cephPidFiles(t, a)})
		useCeph(t, a)
		b := StartCeph(t)
		lives = append(lives, life{b.Dir, cephPidFiles(t, b)})
		if a.Dir == b.Dir || a.Conf == b.Conf {
			t.Fatalf("two clusters share %s", a.Dir)
		}
		if fa, fb := a.Ceph(t, "fsid"), b.Ceph(t, "fsid"); fa == fb {
			t.Fatalf("the second cluster's client reached the first (fsid %s)", fa)
		}
		useCeph(t, b)
		useCeph(t, a) // still there
	})
	if len(lives) < 2 {
		t.Fatalf("only %d of 2 clusters started", len(lives))
	}
	for _, l := range lives {
		for name, pid := range l.pids {
			if isCephProc(pid, l.dir) {
				t.Errorf("ceph daemon %s (pid %d) of %s still runs after cleanup", name, pid, l.dir)
			}
		}
		if left := cephProcs(l.dir); len(left) > 0 {
			t.Errorf("processes %v of %s still run after cleanup", left, l.dir)
		}
		if _, err := os.Stat(l.dir); !os.IsNotExist(err) {
			t.Errorf("the cluster's directory %s is still there after cleanup (stat: %v)", l.dir, err)
		}
	}
}

// useCeph exercises c's pool in a new namespace with the rbd CLI and checks
// what it reports.
func useCeph(t *testing.T, c *CephCluster) {
	t.Helper()
	if pools := strings.Fields(c.Ceph(t, "osd", "pool", "ls")); !slices.Contains(pools, c.Pool) {
		t.Fatalf("ceph osd pool ls: %v, no %q", pools, c.Pool)
	}
	checkCephPorts(t, c)
	ns := c.NewNamespace(t)
	spec := c.Pool + "/" + ns + "/"
	c.RBD(t, "create", "--size", "64M", spec+"bench")
	out := c.RBD(t, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "4M", spec+"bench")
	if !strings.Contains(out, "elapsed:") {
		t.Errorf("rbd bench printed no summary:\n%s", out)
	}

	data := make([]byte, 1<<20)
	rand.Read(data)
	src := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.RBD(t, "import", src, spec+"img")
	if got := strings.Fields(c.RBD(t, "ls", "--pool", c.Pool, "--namespace", ns)); !slices.Equal(got, []string{"bench", "img"}) {
		t.Fatalf("rbd ls of namespace %s: %q, want [bench img]", ns, got)
	}
	if got := strings.Fields(c.RBD(t, "ls", "--pool", c.Pool)); slices.Contains(got, "img") {
		t.Fatalf("rbd ls of the default namespace shows the image of namespace %s: %q", ns, got)
	}
	if other := c.NewNamespace(t); other == ns {
		t.Fatalf("NewNamespace returned %q twice", ns)
	} else if got := c.RBD(t, "ls", "--pool", c.Pool, "--namespace", other); strings.TrimSpace(got) != "" {
		t.Fatalf("a fresh namespace %s is not empty: %q", other, got)
	}

	// A snapshot keeps the imported bytes while the image is overwritten.
	c.RBD(t, "snap", "create", spec+"img@s1")
	var snaps []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(c.RBD(t, "snap", "ls", "--format", "json", spec+"img")), &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Name != "s1" {
		t.Fatalf("rbd snap ls: %+v, want the one snapshot s1", snaps)
	}
	c.RBD(t, "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "1M", "--io-pattern", "seq", spec+"img")
	dir := t.TempDir()
	c.RBD(t, "export", spec+"img@s1", filepath.Join(dir, "snap"))
	c.RBD(t, "export", spec+"img", filepath.Join(dir, "head"))
	if b, err := os.ReadFile(filepath.Join(dir, "snap")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the snapshot's export differs from the imported data (%d bytes, %v)", len(b), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "head")); err != nil || bytes.Equal(b, data) {
		t.Fatalf("the image did not change after rbd bench wrote to it (%v)", err)
	}
}

// cephPidFiles returns the pid of each of c's daemons, from the pid files
// they write, and checks that they are the processes StartCeph started.
func cephPidFiles(t *testing.T, c *CephCluster) map[string]int {
	t.Helper()
	pids := map[string]int{}
	for _, d := range c.daemons {
		b, err := os.ReadFile(filepath.Join(c.Dir, "run", d.name+".pid"))
		if err != nil {
			t.Fatalf("ceph daemon %s wrote no pid file: %v", d.name, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid != d.cmd.Process.Pid {
			t.Fatalf("ceph daemon %s: pid file says %q, started as pid %d", d.name, b, d.cmd.Process.Pid)
		}
		pids[d.name] = pid
	}
	if len(pids) != 3 {
		t.Fatalf("%d ceph daemons (%v), want mon, mgr and osd", len(pids), pids)
	}
	return pids
}

// TestCephSweep: a cluster directory whose owner is gone is removed, and
// the processes it names (pid file or command line) are killed; one whose
// owner lives is left alone. It needs no Ceph: a shell stands in for the
// daemons.
func TestCephSweep(t *testing.T) {
	if err := os.MkdirAll(cephParent, 0o755); err != nil {
		t.Fatal(err)
	}
	mkdir := func() string {
		dir, err := os.MkdirTemp(cephParent, "sweeptest-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// "daemon" starts a process that ignores SIGTERM, so the sweep needs
	// SIGKILL, with $0 in dir (as --conf dir/ceph.conf is for a daemon).
	daemon := func(dir string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`, filepath.Join(dir, "ceph.conf"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil { // the trap is set
			t.Fatalf("the stand-in daemon did not start: %v", err)
		}
		return cmd
	}

	defer func(d time.Duration) { cephStopWait = d }(cephStopWait)
	cephStopWait = time.Second

	dead := mkdir()
	if err := os.WriteFile(filepath.Join(dead, "owner"), []byte("999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	orphan := daemon(dead)
	if err := os.WriteFile(filepath.Join(dead, "run", "osd.0.pid"), []byte(strconv.Itoa(orphan.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	alive := mkdir()
	owner, err := os.Create(filepath.Join(alive, "owner"))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if err := unix.Flock(int(owner.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	kept := daemon(alive)

	c, err := newCephDir() // sweeps
	if err != nil {
		t.Fatal(err)
	}
	c.owner.Close()
	os.RemoveAll(c.Dir)

	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the directory of a dead owner's cluster is still there (stat: %v)", err)
	}
	if isCephProc(orphan.Process.Pid, dead) {
		t.Errorf("the dead owner's daemon (pid %d) still runs", orphan.Process.Pid)
	}
	if _, err := os.Stat(alive); err != nil {
		t.Errorf("the directory of a live owner's cluster was removed: %v", err)
	}
	if !isCephProc(kept.Process.Pid, alive) {
		t.Errorf("the live owner's daemon (pid %d) was killed", kept.Process.Pid)
	}
}

// checkCephPorts checks that the mon listens on its port and the OSD and the
// mgr on ports of the cluster's reserved block, as the mon's maps say.
func checkCephPorts(t *testing.T, c *CephCluster) {
	t.Helper()
	type addrvec struct {
		Addrvec []struct {
			Type string `json:"type"`
			Addr string `json:"addr"`
		} `json:"addrvec"`
	}
	var osds struct {
		OSDs []struct {
			Public  addrvec `json:"public_addrs"`
			Cluster addrvec `json:"cluster_addrs"`
			HBBack  addrvec `json:"heartbeat_back_addrs"`
			HBFront addrvec `json:"heartbeat_front_addrs"`
		} `json:"osds"`
	}
	if err := json.Unmarshal([]byte(c.Ceph(t, "osd", "dump", "-f", "json")), &osds); err != nil {
		t.Fatal(err)
	}
	var mgr struct {
		Active addrvec `json:"active_addrs"`
	}
	// The mgr becomes active on its own time (StartCeph does not wait
	// for it: RBD needs no mgr); on a busy machine, after the OSD.
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		if err := json.Unmarshal([]byte(c.Ceph(t, "mgr", "dump", "-f", "json")), &mgr); err != nil {
			t.Fatal(err)
		}
		if len(mgr.Active.Addrvec) > 0 || time.Since(start) > Patience {
			break
		}
	}
	var mon struct {
		Mons []struct {
			Public addrvec `json:"public_addrs"`
		} `json:"mons"`
	}
	if err := json.Unmarshal([]byte(c.Ceph(t, "mon", "dump", "-f", "json")), &mon); err != nil {
		t.Fatal(err)
	}
	check := func(who string, v addrvec, lo, hi int) {
		t.Helper()
		if len(v.Addrvec) == 0 {
			t.Errorf("%s has no address", who)
		}
		for _, a := range v.Addrvec {
			host, port, _ := strings.Cut(a.Addr, ":")
			p, _ := strconv.Atoi(port)
			if a.Type != "v2" || host != "127.0.0.1" || p < lo || p > hi {
				t.Errorf("%s binds %s %s, want v2 127.0.0.1:%d-%d", who, a.Type, a.Addr, lo, hi)
			}
		}
	}
	if len(osds.OSDs) != 1 || len(mon.Mons) != 1 {
		t.Fatalf("%d OSDs and %d mons, want one each", len(osds.OSDs), len(mon.Mons))
	}
	lo, hi := c.bindPort, c.bindPort+cephPorts-1
	check("mon.a", mon.Mons[0].Public, c.monPort, c.monPort)
	check("the mgr", mgr.Active, lo, hi)
	o := osds.OSDs[0]
	check("osd.0 (public)", o.Public, lo, hi)
	check("osd.0 (cluster)", o.Cluster, lo, hi)
	check("osd.0 (heartbeat back)", o.HBBack, lo, hi)
	check("osd.0 (heartbeat front)", o.HBFront, lo, hi)
}

// TestCephFreePortRange: the blocks of ports a cluster's daemons bind are
// consecutive, below the ephemeral range, locked against other test
// processes, and never overlap each other or FreePort's ports.
func TestCephFreePortRange(t *testing.T) {
	lo, hi := portRange()
	seen := map[int]bool{FreePort(t): true}
	for range 20 {
		start := FreePortRange(t, cephPorts)
		for p := start; p < start+cephPorts; p++ {
			if p < lo || p >= hi {
				t.Fatalf("port %d of block %d outside %d-%d", p, start, lo, hi)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			checkPortLocked(t, p)
		}
	}
}
