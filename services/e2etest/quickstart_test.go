package e2etest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestQuickstart runs the README's first command's program, `blockvault
// quickstart --exit`, as a new user would (on loopback ports of its own):
// it must end with a verified, point-in-time restore and exit 0, leaving
// no daemon behind.
func TestQuickstart(t *testing.T) {
	bin := Binaries(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Every port of its own: the defaults (7100, 10809, ...) may be taken
	// by a quick start or a CI run beside this one.
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "blockvault"), "quickstart", "--exit", "--data-dir", filepath.Join(dir, "data"),
		"--volume-manager", FreeAddr(t), "--backup-service", FreeAddr(t), "--gateway", FreeAddr(t),
		"--nbd-listen", FreeAddr(t), "--volume-manager-http", FreeAddr(t), "--backup-service-http", FreeAddr(t))
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		// The data dir goes with the test: a failed run shows the daemons'
		// logs first, start-up steps and all.
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "data", "logs", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("---- %s ----\n%s", filepath.Base(l), tail(withoutRPCLines(string(b)), 40))
			}
		}
	})
	if err != nil {
		t.Fatalf("quickstart: %v\n%s", err, out)
	}
	for _, want := range []string{
		"all three are healthy",
		"writer errors:            0",
		"ok:              true",
		"Quick start finished: every step above succeeded.",
		"Stopping the daemons: api-gateway backup-service volume-manager stopped",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("quickstart output lacks %q:\n%s", want, out)
		}
	}
	// The snapshot falls inside a round of the writer (blocks of two
	// rounds) or, about once in 256 runs, between two rounds (all blocks of
	// one): both are one point in time, and anything else fails the quick
	// start itself.
	if !strings.Contains(string(out), "the writer's state at one instant") && !strings.Contains(string(out), ": a consistent point in time") {
		t.Errorf("quickstart output does not say the restore is one point in time of the writer:\n%s", out)
	}
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "data")).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("daemons left running after quickstart --exit: pids %s", out)
	}
}

// TestQuickstartPortTaken: a quick start whose address is taken (another
// quick start still running, say) says at once which address, what it is
// for and which flag moves it, and starts nothing.
func TestQuickstartPortTaken(t *testing.T) {
	bin := Binaries(t)
	dir := t.TempDir()
	taken := FreeAddr(t)
	l, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "blockvault"), "quickstart", "--exit", "--data-dir", filepath.Join(dir, "data"),
		"--volume-manager", FreeAddr(t), "--backup-service", FreeAddr(t), "--gateway", FreeAddr(t),
		"--nbd-listen", taken, "--volume-manager-http", FreeAddr(t), "--backup-service-http", FreeAddr(t))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("quickstart with its NBD address taken succeeded:\n%s", out)
	}
	if want := taken + " (volume-manager NBD, flag --nbd-listen) is taken"; !strings.Contains(string(out), want) {
		t.Fatalf("quickstart's error lacks %q:\n%s", want, out)
	}
	if strings.Contains(string(out), "Starting the daemons") {
		t.Fatalf("quickstart started daemons with an address taken:\n%s", out)
	}
}

// TestQuickstartCtrlC: a quick start left running stops its daemons on
// Ctrl-C (SIGINT to its process group, as a terminal sends it), says so,
// and leaves none behind.
func TestQuickstartCtrlC(t *testing.T) {
	bin := Binaries(t)
	dir := t.TempDir()
	var out syncBuffer
	cmd := exec.Command(filepath.Join(bin, "blockvault"), "quickstart", "--data-dir", filepath.Join(dir, "data"),
		"--volume-manager", FreeAddr(t), "--backup-service", FreeAddr(t), "--gateway", FreeAddr(t),
		"--nbd-listen", FreeAddr(t), "--volume-manager-http", FreeAddr(t), "--backup-service-http", FreeAddr(t))
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		exec.Command("pkill", "-KILL", "-f", filepath.Join(dir, "data")).Run()
	})
	for start := time.Now(); !strings.Contains(out.String(), "press Ctrl-C to stop them"); time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("quickstart exited before it waited for Ctrl-C (%v):\n%s", err, out.String())
		default:
		}
		if time.Since(start) > 2*testenv.Patience {
			t.Fatalf("quickstart did not get to its Ctrl-C prompt within %v:\n%s", 2*testenv.Patience, out.String())
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("quickstart after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(testenv.Patience):
		t.Fatalf("quickstart still runs %v after Ctrl-C:\n%s", testenv.Patience, out.String())
	}
	if want := "Stopping the daemons: api-gateway backup-service volume-manager stopped"; !strings.Contains(out.String(), want) {
		t.Errorf("after Ctrl-C the quick start did not say %q:\n%s", want, out.String())
	}
	if pids, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "data")).Output(); len(strings.TrimSpace(string(pids))) > 0 {
		t.Errorf("daemons left running after Ctrl-C: pids %s", pids)
	}
}

// syncBuffer is a bytes.Buffer a process writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
