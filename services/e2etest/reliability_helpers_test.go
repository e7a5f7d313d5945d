package e2etest

// Helpers of the reliability tests: a PostgreSQL cluster of the test's own
// that it can stop and start, content recorded while written and compared
// after a restore, tolerant waits, process memory and latency figures.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// ---- a PostgreSQL cluster the test owns ----------------------------------

// ---- content written, then compared ---------------------------------------

const relChunk = 4 << 20

// relFill writes random data over [off, off+n) of dev in 4 MiB pieces
// and returns the SHA-256 of each piece, to compare a restore with.
func relFill(t *testing.T, dev *nbd.Client, off, n int64) [][32]byte {
	t.Helper()
	buf := make([]byte, relChunk)
	var sums [][32]byte
	for o := off; o < off+n; o += relChunk {
		rand.Read(buf)
		if _, err := dev.WriteAt(buf, o); err != nil {
			t.Fatalf("write at %d: %v", o, err)
		}
		sums = append(sums, sha256.Sum256(buf))
	}
	if err := dev.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return sums
}

// relSameContent reads [off, off+4 MiB*len(sums)) of dev and reports the first
// piece whose bytes differ from what was written.
func relSameContent(dev *nbd.Client, off int64, sums [][32]byte) error {
	buf := make([]byte, relChunk)
	for i, want := range sums {
		o := off + int64(i)*relChunk
		if _, err := dev.ReadAt(buf, o); err != nil {
			return fmt.Errorf("read at %d: %v", o, err)
		}
		if sha256.Sum256(buf) != want {
			return fmt.Errorf("the 4 MiB at offset %d differ from what was written", o)
		}
	}
	return nil
}

// ---- tolerant waits and restores ------------------------------------------

// relGetBackup is GetBackup without failing the test.
func relGetBackup(s *Stack, id string) (*backupv1.Backup, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
	return r.GetBackup(), err
}

// relSettle waits until the backup leaves creating/restoring/deleting, like
// waitBackup, but lets GetBackup fail meanwhile (the database is coming
// back); it returns the backup and the errors seen.
func relSettle(t *testing.T, s *Stack, id string, timeout time.Duration) (*backupv1.Backup, []error) {
	t.Helper()
	var errs []error
	deadline := time.Now().Add(timeout)
	var last *backupv1.Backup
	for {
		b, err := relGetBackup(s, id)
		if err != nil {
			errs = append(errs, err)
		} else {
			last = b
			switch b.GetStatus() {
			case "creating", "restoring", "deleting":
			default:
				return b, errs
			}
		}
		if time.Now().After(deadline) {
			if last == nil {
				t.Fatalf("backup %s: GetBackup failed for %v: %v", id, timeout, errs[len(errs)-1])
			}
			return last, errs
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relWaitVolume waits (up to timeout) for the volume to reach status and
// returns it as last seen.
func relWaitVolume(t *testing.T, s *Stack, id, status string, timeout time.Duration) *volumev1.Volume {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: id})
		cancel()
		if err == nil && r.GetVolume().GetStatus() == status {
			return r.GetVolume()
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("volume %s: %v", id, err)
			}
			return r.GetVolume()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relRestored restores a backup into a new volume, checks the backup is
// available again and the volume available, and attaches the volume
// read-only; done closes and detaches it (also run at cleanup).
func relRestored(t *testing.T, s *Stack, backupID string) (dev *nbd.Client, done func()) {
	t.Helper()
	ctx := context.Background()
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: backupID, Restore: &backupv1.RestoreInput{}})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if b := waitBackup(t, s, backupID, testenv.Patience); b.GetStatus() != "available" || b.GetFailReason() != "" {
		t.Fatalf("after the restore the backup is %s: %q", b.GetStatus(), b.GetFailReason())
	}
	vid := rr.GetRestore().GetVolumeId()
	if v := volumeStatus(t, s, vid); v.GetStatus() != "available" {
		t.Fatalf("the restored volume is %s (%s)", v.GetStatus(), v.GetFailReason())
	}
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: vid, Mode: "ro", Connector: &volumev1.Connector{Host: "checker"}}})
	if err != nil {
		t.Fatal(err)
	}
	dev = dialExportWith(t, ar.GetAttachment().GetConnectionInfo(), s.TLS)
	var once sync.Once
	done = func() {
		once.Do(func() {
			dev.Close()
			s.Volumes.DetachVolume(context.Background(), &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: ar.GetAttachment().GetId()})
		})
	}
	t.Cleanup(done)
	return dev, done
}

// relLogOnFailure logs, if the test fails, the daemons' log lines other
// than the per-call debug lines (which crowd the harness's tail out).
func relLogOnFailure(t *testing.T, s *Stack) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, d := range []*Daemon{s.VolumeManager, s.Backup} {
			var keep []string
			for _, line := range strings.Split(d.Logs(), "\n") {
				if line != "" && !strings.Contains(line, "msg=rpc ") {
					keep = append(keep, line)
				}
			}
			t.Logf("---- %s log without the rpc lines ----\n%s", d.Name, tail(strings.Join(keep, "\n"), 80))
		}
	})
}

// verified runs VerifyBackup and fails unless it is ok with chunks checked.
func relVerify(t *testing.T, s *Stack, id string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Patience)
	defer cancel()
	v, err := s.Backups.VerifyBackup(ctx, &backupv1.VerifyBackupRequest{ProjectId: project, BackupId: id})
	if err != nil {
		t.Fatalf("verify %s: %v", id, err)
	}
	if !v.GetOk() || v.GetChunksChecked() <= 0 || len(v.GetDamaged()) != 0 {
		t.Fatalf("verify %s: ok=%v, %d chunks checked, damaged %v", id, v.GetOk(), v.GetChunksChecked(), v.GetDamaged())
	}
	return v.GetChunksChecked()
}

// ---- metrics, memory, latency -----------------------------------------------

// relMetric reads one series from a /metrics endpoint (-1 when absent);
// unlike Stack.Metric it returns errors, so goroutines can use it.
func relMetric(addr, series string) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series+" ")), 64)
		}
	}
	return -1, nil
}

// relProcStatus returns a "kB" field of /proc/<pid>/status in bytes.
func relProcStatus(t *testing.T, d *Daemon, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s status: %v", d.Name, err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 3 && f[0] == field+":" && f[2] == "kB" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n << 10
		}
	}
	t.Fatalf("%s: no %s in /proc status", d.Name, field)
	return 0
}

// relResetPeakRSS resets the process's VmHWM to its current RSS (Linux
// clear_refs 5); it reports whether that worked.
func relResetPeakRSS(d *Daemon) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.cmd.Process.Pid), []byte("5"), 0) == nil
}

// relLatencies summarises call durations.
type relLatencies []time.Duration

func (l relLatencies) quantile(q float64) time.Duration {
	s := append(relLatencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func (l relLatencies) String() string {
	if len(l) == 0 {
		return "no calls"
	}
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), l.quantile(0.5).Round(10*time.Microsecond),
		l.quantile(0.99).Round(10*time.Microsecond), l.quantile(1).Round(10*time.Microsecond))
}

func relMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
