package e2etest

import (
	"testing"

	"github.com/blockvault/blockvault/pkg/cpuprio"
)

// TestBackupServiceRunsNiced checks that the backup service runs every
// thread at nice 10 by default (so the workloads it backs up win the CPU),
// that --nice sets another value, and that the volume manager, which
// serves those workloads, is left alone. The daemons start at the test's
// own nice value (0, or more under `nice make test`), and the backup
// service only ever raises it.
func TestBackupServiceRunsNiced(t *testing.T) {
	base, err := cpuprio.Nice()
	if err != nil {
		t.Fatal(err)
	}
	s := Start(t, Options{})
	checkNice(t, "backup-service", s.Backup.cmd.Process.Pid, max(base, 10))
	checkNice(t, "volume-manager", s.VolumeManager.cmd.Process.Pid, base)

	s2 := Start(t, Options{BackupArgs: []string{"--nice", "3"}})
	checkNice(t, "backup-service --nice 3", s2.Backup.cmd.Process.Pid, max(base, 3))
}

// checkNice checks the nice value of every thread of pid.
func checkNice(t *testing.T, name string, pid, want int) {
	t.Helper()
	nices, err := cpuprio.ThreadNices(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(nices) < 2 {
		t.Fatalf("%s: only %d threads seen", name, len(nices))
	}
	for tid, got := range nices {
		if got != want {
			t.Errorf("%s thread %d runs at nice %d, want %d", name, tid, got, want)
		}
	}
}
