// Package testenv decides what a test does when a real dependency it needs
// (a program such as nbdinfo or initdb, root, a loop device) is missing: in CI
// (CI=true) the test fails, so a missing install step cannot pass unnoticed;
// on a developer's machine it is skipped with the reason.
package testenv

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Missing fails the test in CI and skips it elsewhere, saying what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test dependency missing (CI=true): "+format, args...)
	}
	t.Skipf("skipped, test dependency missing: "+format, args...)
}

// LookPath returns the path of program, or ends the test through Missing.
func LookPath(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/lib/postgresql/15/bin"} {
			if _, serr := os.Stat(dir + "/" + program); serr == nil {
				return dir + "/" + program
			}
		}
		Missing(t, "program %q not found in PATH", program)
	}
	return p
}

// RequireRoot ends the test through Missing unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root privileges (loop devices, mounts, runuser)")
	}
}

// Patience is how long a test waits for an event a healthy system brings
// about (a server answering, a status reached, a line logged) before it
// gives up and says what it waited for. It is generous on purpose: a test
// waits on the event, never for a fixed time, so on an idle machine it
// costs nothing, and on a loaded one (both cores busy with another build,
// a shared CI machine) the event still comes well within it.
const Patience = 2 * time.Minute
