package testenv

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFreePort: ports come from below the ephemeral range, are never handed
// out twice, can be listened on, and stay locked against other test
// processes (a second open file description cannot take the lock).
func TestFreePort(t *testing.T) {
	lo, hi := portRange()
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("listen on the free port %d: %v", p, err)
		}
		l.Close()
		checkPortLocked(t, p)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		t.Logf("ephemeral range %q; test ports from %d-%d", b, lo, hi)
	}
}

// checkPortLocked fails the test unless port p's lock file is locked (by
// this process), so that another test process cannot take the port.
func checkPortLocked(t *testing.T, p int) {
	t.Helper()
	f, err := os.Open(filepath.Join(portLockDir, strconv.Itoa(p)))
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	f.Close()
	if !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("the lock of port %d could be taken by another process (flock: %v)", p, err)
	}
}
