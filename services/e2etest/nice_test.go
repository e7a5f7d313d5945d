package e2etest

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestBackupServiceRunsNiced checks that the backup service runs every
// thread at nice 10 by default (so the workloads it backs up win the CPU),
// that --nice sets another value, and that the volume manager, which
// serves those workloads, is left alone.
func TestBackupServiceRunsNiced(t *testing.T) {
	s := Start(t, Options{})
	checkNice(t, "backup-service", s.Backup.cmd.Process.Pid, 10)
	checkNice(t, "volume-manager", s.VolumeManager.cmd.Process.Pid, 0)

	s2 := Start(t, Options{BackupArgs: []string{"--nice", "3"}})
	checkNice(t, "backup-service --nice 3", s2.Backup.cmd.Process.Pid, 3)
}

// checkNice reads the nice value of every thread of pid from /proc.
func checkNice(t *testing.T, name string, pid, want int) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/stat")
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command name's ')': state is field 3, nice 19.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if got, _ := strconv.Atoi(f[16]); got != want {
			t.Errorf("%s thread %s runs at nice %d, want %d", name, e.Name(), got, want)
		}
		checked++
	}
	if checked < 2 {
		t.Fatalf("%s: only %d threads seen", name, checked)
	}
}
