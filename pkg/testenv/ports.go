package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Ports for test servers are taken below the kernel's ephemeral range, so
// the port a client connection picks for itself (any test's, any
// process's) can never be the one a daemon is about to listen on; and each
// is reserved with a lock file that other test processes honour while this
// one lives, so two test binaries (two packages, or two CI runs on one
// machine) cannot hand out the same port either. A port from "listen on
// :0, close, pass the number on" had both races: under load another
// socket could take it before the daemon bound it, and the daemon then
// exited with "address already in use".
var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
	portLocks []*os.File // held open (and locked) until the process ends
)

// portLockDir is where the lock files live: one per port, shared by every
// test process on the machine.
var portLockDir = filepath.Join(os.TempDir(), "blockvault-test-ports")

// FreeAddr returns a 127.0.0.1 address nobody listens on, reserved for this
// test process: never handed out twice on this machine while the process
// lives.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}

// FreePort is FreeAddr's port alone.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := reservePort()
	if err != nil {
		t.Fatalf("testenv: no free port: %v", err)
	}
	return p
}

func reservePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	lo, hi := portRange()
	if err := os.MkdirAll(portLockDir, 0o777); err != nil {
		return 0, err
	}
	var last error
	for range 2000 {
		p := lo + rand.IntN(hi-lo)
		f, err := lockPort(p)
		if err != nil {
			last = err
			continue
		}
		if f == nil {
			continue
		}
		portsUsed[p] = true
		portLocks = append(portLocks, f)
		return p, nil
	}
	return 0, fmt.Errorf("2000 ports of %d-%d tried (last: %v)", lo, hi, last)
}

// FreePortRange reserves n consecutive ports the way FreePort reserves one
// and returns the first, for a daemon that picks its own ports within
// bounds (Ceph's "ms bind port min/max").
func FreePortRange(t testing.TB, n int) int {
	t.Helper()
	p, err := reservePortRange(n)
	if err != nil {
		t.Fatalf("testenv: no %d consecutive free ports: %v", n, err)
	}
	return p
}

func reservePortRange(n int) (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	lo, hi := portRange()
	if n < 1 || n > (hi-lo)/4 {
		return 0, fmt.Errorf("a block of %d ports asked for, from %d-%d", n, lo, hi)
	}
	if err := os.MkdirAll(portLockDir, 0o777); err != nil {
		return 0, err
	}
	var last error
	for range 2000 {
		start := lo + rand.IntN(hi-lo-n)
		var locks []*os.File
		for p := start; p < start+n; p++ {
			f, err := lockPort(p)
			if err != nil {
				last = err
			}
			if f == nil {
				break
			}
			locks = append(locks, f)
		}
		if len(locks) < n {
			for _, f := range locks {
				f.Close()
			}
			continue
		}
		for p := start; p < start+n; p++ {
			portsUsed[p] = true
		}
		portLocks = append(portLocks, locks...)
		return start, nil
	}
	return 0, fmt.Errorf("2000 blocks of %d ports in %d-%d tried (last: %v)", n, lo, hi, last)
}

// lockPort takes port p's lock file and checks that p can be listened on;
// it returns the locked file, or nil if p is taken (by this process,
// another test process, or something else: then with the error that says
// so). portsMu must be held.
func lockPort(p int) (*os.File, error) {
	if portsUsed[p] {
		return nil, nil
	}
	f, err := os.OpenFile(filepath.Join(portLockDir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close() // another test process holds it
		return nil, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		f.Close() // in use by something that is not a test of ours
		return nil, err
	}
	l.Close()
	return f, nil
}

// portRange is the ports below the ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range; 32768-60999 by default), from
// 20000 up: clear of the well-known and registered services tests start
// (PostgreSQL's 5432, NBD's 10809, the daemons' 7100-8776).
func portRange() (lo, hi int) {
	lo, hi = 20000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
				hi = start
			}
		}
	}
	return lo, hi
}
