package e2etest

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickstart runs the README's first command's program, `blockvault
// quickstart --exit`, as a new user would (on loopback ports of its own):
// it must end with a verified, point-in-time restore and exit 0, leaving
// no daemon behind.
func TestQuickstart(t *testing.T) {
	bin := Binaries(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "blockvault"), "quickstart", "--exit", "--data-dir", filepath.Join(dir, "data"),
		"--volume-manager", FreeAddr(t), "--backup-service", FreeAddr(t), "--gateway", FreeAddr(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quickstart: %v\n%s", err, out)
	}
	for _, want := range []string{
		"all three are healthy",
		"writer errors:            0",
		"ok:              true",
		"the writer's state at one instant",
		"Quick start finished: every step above succeeded.",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("quickstart output lacks %q:\n%s", want, out)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "data")).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("daemons left running after quickstart --exit: pids %s", out)
	}
}
