package e2etest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestChangedBlockTracking: with --changed-block-tracking, each backup of
// an in-use volume keeps the snapshot it read (one per volume, hidden from
// the user's snapshot list), and the next incremental backup reads only
// what the volume manager reports changed since: at most 3x the bytes
// changed, not the 4 MiB chunks they touch. Restores of the incremental
// backups are the volume byte for byte, also when a writer ran during the
// backup. Deleting the backups, or the detached volume, removes the kept
// snapshot.
func TestChangedBlockTracking(t *testing.T) {
	cases := []struct {
		name string
		opts func(t *testing.T) Options
	}{
		{"attached-snapshot/copy-before-write", func(t *testing.T) Options { return Options{} }},
		{"local-snapshot/reflink", func(t *testing.T) Options {
			return Options{SameNode: true, VolumeManagerDir: testenv.XFSDir(t, 2<<30)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts(t)
			o.BackupArgs = append(o.BackupArgs, "--changed-block-tracking")
			changedBlockTracking(t, Start(t, o))
		})
	}
}

// changedBlockTracking is TestChangedBlockTracking on one stack whose
// backup service runs with --changed-block-tracking.
func changedBlockTracking(t *testing.T, s *Stack) {
	ctx := context.Background()
	const size = 256 << 20
	vol, att, dev := attached(t, s, size)
	fill(t, dev)

	backup := func(incremental bool) *backupv1.Backup {
		t.Helper()
		cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{
			VolumeId: vol.GetId(), Force: true, Incremental: incremental}})
		if err != nil {
			t.Fatal(err)
		}
		b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
		if b.GetStatus() != "available" || b.GetFailReason() != "" {
			t.Fatalf("backup ended %s: %q", b.GetStatus(), b.GetFailReason())
		}
		return b
	}
	full := backup(false)
	if r := full.GetProgress().GetBytesRead(); r < size/2 {
		t.Fatalf("the full backup read %d bytes of a %d-byte volume full of data", r, size)
	}
	kept := keptSnapshots(t, s, vol.GetId())
	if len(kept) != 1 {
		t.Fatalf("%d snapshots kept after the full backup, want 1", len(kept))
	}
	if sn, _ := s.Volumes.ListSnapshots(ctx, &volumev1.ListSnapshotsRequest{ProjectId: project}); len(sn.GetSnapshots()) != 0 {
		t.Fatalf("the kept snapshot shows in the user's snapshot list: %v", sn.GetSnapshots())
	}

	// Change 1 MiB at an unaligned offset and three 4 KiB blocks.
	rng := rand.New(rand.NewPCG(1, 2))
	changes := []struct{ off, n int64 }{{37<<20 + 12288, 1 << 20}, {4096, 4096}, {100 << 20, 4096}, {size - 4096, 4096}}
	for _, c := range changes {
		buf := make([]byte, c.n)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := dev.WriteAt(buf, c.off); err != nil {
			t.Fatal(err)
		}
	}
	inc := backup(true)
	if inc.GetParentId() != full.GetId() {
		t.Fatalf("the incremental's parent is %q, want %q", inc.GetParentId(), full.GetId())
	}
	// The changes touch 5 chunks of 4 MiB, but only the changed
	// ranges are read (stored as pieces of those chunks), rounded
	// to the tracking's granularity, 4 KiB in both modes: the
	// issue's bound is 3x; the writes are 4 KiB-aligned, so a
	// tenth more is already more than the tracking should report
	// (copy-before-write in whole 64 KiB blocks read 1.25 MiB).
	if r, changed := inc.GetProgress().GetBytesRead(), int64(1<<20+3*4096); 10*r > 11*changed {
		t.Fatalf("the incremental read %d bytes for %d changed", r, changed)
	} else {
		t.Logf("incremental after 1 MiB + 12 KiB of changes read %d bytes of %d", r, size)
	}
	if k := keptSnapshots(t, s, vol.GetId()); len(k) != 1 || k[0] == kept[0] {
		t.Fatalf("after the incremental the kept snapshots are %v (before %v): want one, the new one", k, kept)
	}
	want := deviceHash(t, dev)
	if got := restoredHash(t, s, inc.GetId()); got != want {
		t.Fatal("the restored incremental backup differs from the volume")
	}

	// A writer runs during the next incremental: the restore is a
	// point in time in the writer's blocks and the rest is intact.
	// Its blocks start as zeros (round 0), as pointInTime expects.
	if _, err := dev.WriteAt(make([]byte, blocks*blockSize), 0); err != nil {
		t.Fatal(err)
	}
	w := startWriter(dev)
	w.waitRounds(t, 1)
	inc2 := backup(true)
	w.halt()
	if w.errs.Load() != 0 {
		t.Fatalf("the writer saw %d errors", w.errs.Load())
	}
	if r := inc2.GetProgress().GetBytesRead(); r > blocks*blockSize+2*(4<<20) {
		t.Fatalf("the incremental under write load read %d bytes; the writer touches %d", r, blocks*blockSize)
	}
	rdev, done := relRestored(t, s, inc2.GetId())
	if err := pointInTime(rdev); err != nil {
		t.Fatalf("the restored incremental is not a point in time: %v", err)
	}
	tail := int64(blocks * blockSize)
	if !bytes.Equal(rangeHash(t, rdev, tail, size-tail), rangeHash(t, dev, tail, size-tail)) {
		t.Fatal("the restored incremental differs from the volume outside the writer's blocks")
	}
	done()

	// Deleting the backups, newest first, deletes the kept snapshot.
	for _, id := range []string{inc2.GetId(), inc.GetId(), full.GetId()} {
		if code, body := s.REST("DELETE", "/v3/"+project+"/backups/"+id, nil); code != 202 {
			t.Fatalf("delete backup: %d %v", code, body)
		}
		waitGone(t, s, id, testenv.Patience)
	}
	if k := keptSnapshots(t, s, vol.GetId()); len(k) != 0 {
		t.Fatalf("snapshots kept after every backup was deleted: %v", k)
	}
	noLeftovers(t, s, 1)

	// A kept snapshot does not stop the volume's deletion.
	backup(false)
	dev.Close()
	if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: att.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: vol.GetId()}); err != nil {
		t.Fatalf("delete a volume with a kept snapshot: %v", err)
	}
	noLeftovers(t, s, 0)
}

// keptSnapshots lists the temporary snapshots of a volume.
func keptSnapshots(t *testing.T, s *Stack, volumeID string) []string {
	t.Helper()
	sn, err := s.Volumes.ListSnapshots(context.Background(), &volumev1.ListSnapshotsRequest{ProjectId: project, VolumeId: volumeID, IncludeTemporary: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range sn.GetSnapshots() {
		if x.GetTemporary() {
			ids = append(ids, x.GetId())
		}
	}
	return ids
}

func rangeHash(t *testing.T, dev *nbd.Client, off, n int64) []byte {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for end := off + n; off < end; {
		m := min(int64(len(buf)), end-off)
		if _, err := dev.ReadAt(buf[:m], off); err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:m])
		off += m
	}
	return h.Sum(nil)
}

func deviceHash(t *testing.T, dev *nbd.Client) string {
	return string(rangeHash(t, dev, 0, dev.Size()))
}

func restoredHash(t *testing.T, s *Stack, backupID string) string {
	t.Helper()
	dev, done := relRestored(t, s, backupID)
	defer done()
	return deviceHash(t, dev)
}

// waitGone waits until a deleted backup no longer exists (NotFound); a
// delete that ends in another status, or takes longer than timeout, fails.
func waitGone(t testing.TB, s *Stack, id string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		r, err := s.Backups.GetBackup(context.Background(), &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
		if status.Code(err) == codes.NotFound {
			return
		}
		if err == nil && r.GetBackup().GetStatus() != "deleting" || time.Now().After(deadline) {
			t.Fatalf("delete backup %s: %v %s", id, err, r.GetBackup().GetStatus())
		}
	}
}
