package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// liveFillRate paces the volume manager's live-restore fills in these
// tests (--live-fill-rate) so that the checks below run while the fill
// still goes on, restarts of both daemons included (on rbd a restart
// takes seconds): the 64 MiB of data of liveRestore's volume fill in 21 s
// (holes are not paced).
const liveFillRate = 3 << 20

// TestLiveRestore: backup restore --live of a 128 MiB backup (data and a
// hole) gives a volume that is usable at once. While its fill still runs,
// nbdcopy reads it byte for byte equal to the backup, qemu-io writes into
// filled, unfilled and unaligned ranges, the volume manager and then the
// backup service are killed with SIGKILL and started again; the fill
// resumes and ends, the volume becomes an ordinary one, the backup is
// available with its progress whole, and the volume holds the backup with
// every write on top. On the file driver in both of its modes (TestRBD
// runs it on rbd).
func TestLiveRestore(t *testing.T) {
	paced := []string{"--live-fill-rate", fmt.Sprint(liveFillRate)}
	t.Run("copy-before-write", func(t *testing.T) {
		s := Start(t, Options{VolumeManagerArgs: paced})
		checkDriver(t, s, "file", "copy-before-write")
		liveRestore(t, s)
	})
	t.Run("reflink", func(t *testing.T) {
		s := Start(t, Options{VolumeManagerArgs: paced, VolumeManagerDir: testenv.XFSDir(t, 2<<30)})
		checkDriver(t, s, "file", "reflink")
		liveRestore(t, s)
	})
}

// liveRestore is TestLiveRestore on one stack, whose volume manager paces
// fills at liveFillRate.
func liveRestore(t *testing.T, s *Stack) {
	nbdcopy := testenv.LookPath(t, "nbdcopy")
	qemuIO := testenv.LookPath(t, "qemu-io")
	const size = 128 << 20
	relLogOnFailure(t, s)
	ctx := context.Background()

	src, _, dev := attached(t, s, size)
	want := make([]byte, size)
	rand.Read(want[:size/2]) // the second half stays a hole
	if _, err := dev.WriteAt(want[:size/2], 0); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: src.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	if b := waitBackup(t, s, id, testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("backup %s: %s", b.GetStatus(), b.GetFailReason())
	}

	// The live restore answers once the volume is usable.
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: id, Restore: &backupv1.RestoreInput{Live: true}})
	if err != nil {
		t.Fatal(err)
	}
	vid := rr.GetRestore().GetVolumeId()
	filling := func(what string) *volumev1.LiveRestore {
		t.Helper()
		v := volumeStatus(t, s, vid)
		l := v.GetLiveRestore()
		if v.GetStatus() != "available" && v.GetStatus() != "in-use" || l == nil || l.GetStatus() != "filling" || l.GetBytesFilled() >= l.GetBytesTotal() {
			t.Fatalf("%s: the volume is %s, live restore %v: want usable and still filling (slow the fill down?)", what, v.GetStatus(), l)
		}
		return l
	}
	filling("right after the restore answered")
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: vid, InstanceUuid: "vm-live", Connector: &volumev1.Connector{Host: "compute-1"}}})
	if err != nil {
		t.Fatalf("attach the live volume: %v", err)
	}
	uri := nbdURI(ar.GetAttachment().GetConnectionInfo())
	if g, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id}); err != nil ||
		g.GetBackup().GetStatus() != "restoring" || g.GetBackup().GetProgress().GetOperation() != "restore" {
		t.Fatalf("during the live restore the backup is %v (%v)", g.GetBackup(), err)
	}

	// A client reads it all, byte for byte, before the fill ends.
	dir := t.TempDir()
	copyOf := func(name string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		nbdtRun(t, nbdcopy, uri, p)
		return p
	}
	p := copyOf("before.img")
	nbdtSameBytes(t, p, want)
	if got, _ := os.ReadFile(p); nbdtFirstDiff(got, want) >= 0 {
		t.Fatalf("read during the fill: differs from the backup at byte %d", nbdtFirstDiff(got, want))
	}
	l := filling("after a whole read")
	t.Logf("nbdcopy read the whole volume while %d of %d bytes were filled", l.GetBytesFilled(), l.GetBytesTotal())

	// Writes during the fill: into what is filled (the start), what is
	// not (the hole at the end), and unaligned across a region's edge.
	writes := []struct {
		pattern byte
		off, n  int64
	}{{0xab, 1 << 20, 64 << 10}, {0xcd, size - 3<<20, 4096}, {0xef, 2<<20 - 3000, 7000}, {0x17, size / 2, 1 << 20}}
	qemuWrite := func(pattern byte, off, n int64) {
		t.Helper()
		out, err := exec.Command(qemuIO, "-f", "raw", "-c", fmt.Sprintf("write -P %#x %d %d", pattern, off, n), uri).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-io write: %v\n%s", err, out)
		}
		for i := off; i < off+n; i++ {
			want[i] = pattern
		}
	}
	qemuRead := func(pattern byte, off, n int64, when string) {
		t.Helper()
		out, err := exec.Command(qemuIO, "-f", "raw", "-c", fmt.Sprintf("read -P %#x %d %d", pattern, off, n), uri).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: qemu-io read -P %#x %d %d: %v\n%s", when, pattern, off, n, err, out)
		}
	}
	for _, w := range writes[:3] {
		qemuWrite(w.pattern, w.off, w.n)
	}
	filling("after the writes")

	// kill -9 of the volume manager during the fill: its export comes back
	// under the same name, the writes are there, the fill resumes.
	s.VolumeManager.Kill()
	s.VolumeManager.Start()
	s.WaitHealthy(s.VolumeManager)
	for _, w := range writes[:3] {
		qemuRead(w.pattern, w.off, w.n, "after the volume manager's restart")
	}
	qemuWrite(writes[3].pattern, writes[3].off, writes[3].n)
	filling("after the volume manager's restart")

	// kill -9 of the backup service during the fill: it exports the backup
	// again and points the fill at it.
	s.Backup.Kill()
	s.Backup.Start()
	s.WaitHealthy(s.Backup)
	filling("after the backup service's restart")

	// The fill ends: an ordinary volume, the backup available.
	deadline := time.Now().Add(testenv.Patience)
	for {
		v := volumeStatus(t, s, vid)
		if v.GetLiveRestore() == nil {
			if v.GetStatus() != "in-use" {
				t.Fatalf("after the fill the volume is %s (%s)", v.GetStatus(), v.GetFailReason())
			}
			break
		}
		if v.GetLiveRestore().GetStatus() != "filling" || time.Now().After(deadline) {
			t.Fatalf("the live restore: %v (%s)", v.GetLiveRestore(), v.GetFailReason())
		}
		time.Sleep(200 * time.Millisecond)
	}
	b := waitBackup(t, s, id, testenv.Patience)
	if b.GetStatus() != "available" || b.GetFailReason() != "" || b.GetProgress().GetBytesDone() != b.GetProgress().GetBytesTotal() {
		t.Fatalf("after the live restore the backup is %s (%q), progress %v", b.GetStatus(), b.GetFailReason(), b.GetProgress())
	}
	for _, w := range writes {
		qemuRead(w.pattern, w.off, w.n, "after the fill")
	}
	got, _ := os.ReadFile(copyOf("after.img"))
	if i := nbdtFirstDiff(got, want); i >= 0 || len(got) != size {
		t.Fatalf("after the fill the volume differs from the backup with the writes at byte %d", i)
	}
}

// TestLiveRestoreRepositoryError: while the backup's chunks are away from
// the repository, a read of what is not filled yet fails with an NBD error
// (qemu-io says so) and the export stays up: a whole-region write and its
// read back work, the volume stays marked filling and the backup
// restoring; once the chunks are back the fill resumes and ends with the
// backup's bytes and the write. The CLI's restore --live --wait follows a
// second live restore to its end.
func TestLiveRestoreRepositoryError(t *testing.T) {
	nbdcopy := testenv.LookPath(t, "nbdcopy")
	qemuIO := testenv.LookPath(t, "qemu-io")
	const size = 32 << 20
	repo := filepath.Join(t.TempDir(), "repository")
	s := Start(t, Options{RepositoryDir: repo, VolumeManagerArgs: []string{"--live-fill-rate", fmt.Sprint(liveFillRate)}})
	relLogOnFailure(t, s)
	ctx := context.Background()
	src, _, dev := attached(t, s, size)
	want := make([]byte, size)
	rand.Read(want)
	if _, err := dev.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	dev.Flush()
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: src.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	if b := waitBackup(t, s, id, testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("backup %s: %s", b.GetStatus(), b.GetFailReason())
	}

	chunks := filepath.Join(repo, "backups", "chunks")
	if err := os.Rename(chunks, chunks+".away"); err != nil {
		t.Fatal(err)
	}
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: id, Restore: &backupv1.RestoreInput{Live: true}})
	if err != nil {
		t.Fatal(err)
	}
	vid := rr.GetRestore().GetVolumeId()
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: vid, InstanceUuid: "vm-live", Connector: &volumev1.Connector{Host: "compute-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	uri := nbdURI(ar.GetAttachment().GetConnectionInfo())
	qemu := func(cmd string) error {
		out, err := exec.Command(qemuIO, "-f", "raw", "-c", cmd, uri).CombinedOutput()
		if err == nil && strings.Contains(string(out), "failed") {
			err = fmt.Errorf("%s", out)
		}
		if err != nil {
			return fmt.Errorf("qemu-io %q: %v: %s", cmd, err, out)
		}
		return nil
	}
	if err := qemu("read 20M 4k"); err == nil || !strings.Contains(err.Error(), "Input/output error") {
		t.Fatalf("a read of an unfilled region with the chunks away: %v, want an I/O error", err)
	}
	if err := qemu("write -P 0x42 4M 1M"); err != nil {
		t.Fatalf("a whole-region write with the chunks away: %v", err)
	}
	if err := qemu("read -P 0x42 4M 1M"); err != nil {
		t.Fatalf("the export after a failed read: %v", err)
	}
	copy(want[4<<20:5<<20], bytes.Repeat([]byte{0x42}, 1<<20))
	v := volumeStatus(t, s, vid)
	if v.GetLiveRestore().GetStatus() != "filling" {
		t.Fatalf("with the chunks away the volume is %s, live restore %v: want still filling, not healthy", v.GetStatus(), v.GetLiveRestore())
	}
	if g, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id}); err != nil || g.GetBackup().GetStatus() != "restoring" {
		t.Fatalf("the backup: %v %v", g.GetBackup(), err)
	}
	flags := []string{"--volume-manager", s.VolumeManager.Addr, "--backup-service", s.Backup.Addr, "--project", project}
	if out, errOut, code := runCLI(t, append(flags, "volume", "show", vid)...); code != 0 || !strings.Contains(out, "filling from backup "+id) {
		t.Fatalf("volume show of a live volume: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code := runCLI(t, append(flags, "volume", "list")...); code != 0 || !strings.Contains(out, "in-use (live restore filling, ") {
		t.Fatalf("volume list with a live volume: exit %d\n%s", code, out)
	}

	if err := os.Rename(chunks+".away", chunks); err != nil {
		t.Fatal(err)
	}
	if b := waitBackup(t, s, id, testenv.Patience); b.GetStatus() != "available" || b.GetFailReason() != "" {
		t.Fatalf("after the chunks came back the backup is %s (%q)", b.GetStatus(), b.GetFailReason())
	}
	if v := volumeStatus(t, s, vid); v.GetLiveRestore() != nil {
		t.Fatalf("the live restore ended with the volume still marked: %v", v.GetLiveRestore())
	}
	p := filepath.Join(t.TempDir(), "after.img")
	nbdtRun(t, nbdcopy, uri, p)
	if got, _ := os.ReadFile(p); nbdtFirstDiff(got, want) >= 0 {
		t.Fatalf("after the fill the volume differs at byte %d", nbdtFirstDiff(got, want))
	}

	// The CLI: --live answers with the volume usable, --wait follows the
	// fill with the progress bar to the end.
	out, errOut, code := runCLI(t, append(flags, "backup", "restore", id, "--live", "--wait")...)
	if code != 0 || !strings.Contains(out, "live: the volume is usable now") || !strings.Contains(out, "100%") || !strings.Contains(out, "available") {
		t.Fatalf("backup restore --live --wait: exit %d\n%s%s", code, out, errOut)
	}
}
