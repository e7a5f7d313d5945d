package volumemanager_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/services/volumemanager"
	"github.com/blockvault/blockvault/services/volumemanager/vmtest"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	backupSize = 4 << 20
	liveVolume = 6 << 20 // larger than the backup: the rest reads zeros
)

// slowDevice delays every read by delay (nanoseconds), to keep a fill
// going while a test looks at it.
type slowDevice struct {
	blockdev.Device
	delay atomic.Int64
}

func (d *slowDevice) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(d.delay.Load()))
	return d.Device.ReadAt(p, off)
}

// backupExport is the backup service's side: an image served read-only
// over a real NBD server, slowly.
type backupExport struct {
	srv  *nbd.Server
	port int
	dev  *slowDevice
	want []byte // the image
}

func newBackupExport(t *testing.T) *backupExport {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.img")
	want := make([]byte, backupSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 1 << 20; i < len(want); i++ { // the first MiB a hole
		want[i] = byte(rng.Uint32())
	}
	clear(want[5<<19 : 3<<20]) // and a half MiB in the middle
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := blockdev.OpenFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.NewServer(nbd.ServerOptions{})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	b := &backupExport{srv: srv, port: ln.Addr().(*net.TCPAddr).Port, dev: &slowDevice{Device: f}, want: want}
	b.dev.delay.Store(int64(200 * time.Millisecond))
	return b
}

// export publishes the backup under name and returns its connection info.
func (b *backupExport) export(t *testing.T, name string) *volumev1.ConnectionInfo {
	t.Helper()
	if err := b.srv.AddExport(name, b.dev, true); err != nil {
		t.Fatal(err)
	}
	return &volumev1.ConnectionInfo{DriverVolumeType: "nbd", Data: &volumev1.ConnectionData{
		Host: "127.0.0.1", Port: int32(b.port), ExportName: name, ReadOnly: true, SizeBytes: backupSize}}
}

// liveOptions: regions of 64 KiB, progress recorded every 100 ms, and a
// fill that gives up after retryFor without the backup's export.
func liveOptions(dir string, retryFor time.Duration) vmtest.Options {
	return vmtest.Options{Driver: file.Config{Mode: "copy-before-write"}, Dir: dir, Config: func(c *volumemanager.Config) {
		c.LiveRegionSize = 64 << 10
		c.LiveProgressEvery = 100 * time.Millisecond
		c.LiveRetryFor = retryFor
	}}
}

// restoringVolume makes a volume and begins a restore into it.
func restoringVolume(t *testing.T, e *vmtest.Env, multiattach bool) *volumev1.Volume {
	t.Helper()
	ctx := context.Background()
	r, err := e.Client.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: proj, Volume: &volumev1.VolumeInput{SizeBytes: liveVolume, Multiattach: multiattach}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Internal.BeginRestore(ctx, &volumev1.BeginRestoreRequest{ProjectId: proj, VolumeId: r.GetVolume().GetId(), MinSizeBytes: backupSize}); err != nil {
		t.Fatal(err)
	}
	return r.GetVolume()
}

func getVolume(t *testing.T, e *vmtest.Env, id string) *volumev1.Volume {
	t.Helper()
	r, err := e.Client.GetVolume(context.Background(), &volumev1.GetVolumeRequest{ProjectId: proj, VolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetVolume()
}

// waitVolume waits until cond holds of the volume, what naming it.
func waitVolume(t *testing.T, e *vmtest.Env, id, what string, cond func(*volumev1.Volume) bool) *volumev1.Volume {
	t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for {
		v := getVolume(t, e, id)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; volume: %v", testenv.Patience, what, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func attach(t *testing.T, e *vmtest.Env, id, mode string, local bool) *volumev1.Attachment {
	t.Helper()
	r, err := e.Client.AttachVolume(context.Background(), &volumev1.AttachVolumeRequest{ProjectId: proj, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: id, InstanceUuid: "vm-" + mode, Mode: mode, Connector: &volumev1.Connector{Host: "node-a", Local: local}}})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetAttachment()
}

func readAll(t *testing.T, dev blockdev.Device, what string) []byte {
	t.Helper()
	got := make([]byte, dev.Size())
	if _, err := dev.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return got
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %d: %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

// TestLiveRestore: a restoring-backup volume becomes available at once
// with live_restore filling; an NBD attachment reads it byte for byte
// before the fill ends and its writes survive the fill; a read-only one
// (asked local: given NBD) refuses writes; snapshots, backups, clones,
// extend and the backup service's attachments are refused meanwhile; a
// second StartLiveRestore of the same backup moves the fill to a new
// export; when the fill ends live_restore is gone, the state file too, and
// the volume is an ordinary one.
func TestLiveRestore(t *testing.T) {
	e := vmtest.Start(t, liveOptions("", time.Minute))
	ctx := context.Background()
	b := newBackupExport(t)
	backupID := uuid.NewString()
	src := b.export(t, "backup-1")

	// Only a restoring-backup volume.
	pr, err := e.Client.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: proj, Volume: &volumev1.VolumeInput{SizeBytes: liveVolume}})
	if err != nil {
		t.Fatal(err)
	}
	plain := pr.GetVolume()
	_, err = e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: plain.GetId(), BackupId: backupID, Source: src, SizeBytes: backupSize})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "available") {
		t.Fatalf("live restore into an available volume: %v, want FailedPrecondition naming its status", err)
	}

	v := restoringVolume(t, e, true)
	r, err := e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: v.GetId(), BackupId: backupID, Source: src, SizeBytes: backupSize})
	if err != nil {
		t.Fatal(err)
	}
	lr := r.GetVolume().GetLiveRestore()
	if r.GetVolume().GetStatus() != "available" || lr.GetStatus() != "filling" || lr.GetBackupId() != backupID || lr.GetBytesTotal() != backupSize {
		t.Fatalf("after StartLiveRestore: %v", r.GetVolume())
	}

	// Read everything over NBD while the fill runs.
	want := append(append([]byte(nil), b.want...), make([]byte, liveVolume-backupSize)...)
	rw := attach(t, e, v.GetId(), "rw", false)
	c := dialExport(t, rw.GetConnectionInfo())
	sameBytes(t, "the live export before the fill", readAll(t, c, "read the live export"), want)
	if got := getVolume(t, e, v.GetId()).GetLiveRestore(); got.GetBytesFilled() >= backupSize {
		t.Fatalf("the fill ended before the test looked: %v", got)
	}

	// Writes during the fill: across a region not filled yet, a few bytes
	// inside one, and past the backup's end.
	for _, w := range []struct {
		off int64
		n   int
		b   byte
	}{{2<<20 + 4096, 100 << 10, 0xa1}, {3<<20 + 100, 3, 0xa2}, {5 << 20, 64 << 10, 0xa3}, {0, 512, 0xa4}} {
		p := bytes.Repeat([]byte{w.b}, w.n)
		if _, err := c.WriteAt(p, w.off); err != nil {
			t.Fatal(err)
		}
		copy(want[w.off:], p)
	}

	// A read-only attachment, asked as a local path: NBD instead (a local
	// path would bypass the fill), and writes are refused.
	ro := attach(t, e, v.GetId(), "ro", true)
	if ci := ro.GetConnectionInfo(); ci.GetDriverVolumeType() != "nbd" || !ci.GetData().GetReadOnly() {
		t.Fatalf("local read-only attachment of a live volume: %v, want a read-only NBD export", ci)
	}
	rc := dialExport(t, ro.GetConnectionInfo())
	if _, err := rc.WriteAt([]byte{1}, 0); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("write to the read-only attachment: %v, want ErrReadOnly", err)
	}
	sameBytes(t, "the read-only export during the fill", readAll(t, rc, "read the read-only export"), want)

	// Refused while filling, naming the volume and the backup.
	refused := map[string]error{}
	_, refused["snapshot"] = e.Client.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: proj, Snapshot: &volumev1.SnapshotInput{VolumeId: v.GetId(), Force: true}})
	_, refused["temporary snapshot"] = e.Internal.CreateTemporarySnapshot(ctx, &volumev1.CreateTemporarySnapshotRequest{ProjectId: proj, VolumeId: v.GetId(), Id: uuid.NewString()})
	_, refused["backup"] = e.Internal.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: proj, VolumeId: v.GetId(), Force: true})
	_, refused["clone"] = e.Client.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: proj, Volume: &volumev1.VolumeInput{SourceVolid: v.GetId()}})
	_, refused["extend"] = e.Client.ExtendVolume(ctx, &volumev1.ExtendVolumeRequest{ProjectId: proj, VolumeId: v.GetId(), NewSizeBytes: 2 * liveVolume})
	_, refused["attach for backup"] = e.Internal.AttachForBackup(ctx, &volumev1.AttachForBackupRequest{ProjectId: proj, Attachment: &volumev1.AttachmentInput{VolumeUuid: v.GetId(), Mode: "ro"}})
	_, refused["another backup"] = e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: v.GetId(), BackupId: uuid.NewString(), Source: src, SizeBytes: backupSize})
	for what, err := range refused {
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, v.GetId()) || !strings.Contains(msg, backupID) {
			t.Errorf("%s of a live volume: %v, want FailedPrecondition naming the volume and the backup", what, err)
		}
	}

	// The backup service restarted: a new export of the backup, the old
	// one gone. The fill goes on from the new one.
	src2 := b.export(t, "backup-2")
	r, err = e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: v.GetId(), BackupId: backupID, Source: src2, SizeBytes: backupSize})
	if err != nil || r.GetVolume().GetLiveRestore().GetStatus() != "filling" {
		t.Fatalf("second StartLiveRestore: %v %v", r.GetVolume(), err)
	}
	if err := b.srv.RemoveExport("backup-1"); err != nil {
		t.Fatal(err)
	}
	lr = getVolume(t, e, v.GetId()).GetLiveRestore()
	if lr == nil || lr.GetBytesFilled() >= backupSize {
		t.Fatalf("the fill ended before the old export went: %v", lr)
	}
	t.Logf("%d of %d bytes filled when the old export went", lr.GetBytesFilled(), lr.GetBytesTotal())

	b.dev.delay.Store(0)
	done := waitVolume(t, e, v.GetId(), "the end of the fill", func(v *volumev1.Volume) bool {
		if v.GetLiveRestore().GetStatus() == "failed" {
			t.Fatalf("the fill failed: %v", v)
		}
		return v.GetLiveRestore() == nil
	})
	if done.GetStatus() != "in-use" || done.GetFailReason() != "" {
		t.Fatalf("after the fill: %v", done)
	}
	sameBytes(t, "the live export after the fill", readAll(t, c, "read after the fill"), want)
	img, err := os.ReadFile(filepath.Join(e.Pool, "volumes", v.GetId()+".img"))
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "the volume's data after the fill", img, want)
	if _, err := os.Stat(filepath.Join(e.Dir, "live", v.GetId()+".state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the state file after the fill: %v", err)
	}

	// An ordinary volume now: a snapshot is taken, a new attachment reads
	// the data.
	if _, err := e.Client.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: proj, Snapshot: &volumev1.SnapshotInput{VolumeId: v.GetId(), Force: true}}); err != nil {
		t.Fatalf("snapshot after the fill: %v", err)
	}
	c2 := dialExport(t, attach(t, e, v.GetId(), "ro", false).GetConnectionInfo())
	sameBytes(t, "a new attachment after the fill", readAll(t, c2, "read a new attachment"), want)
}

// TestLiveRestoreResumesAfterRestart: the volume manager stops mid-fill
// while the backup service restarts too (its export moves); the new
// volume manager serves the attachment again through the fill (the write
// made before the stop still there), dials the old export in vain until
// StartLiveRestore names the new one, and finishes the fill.
func TestLiveRestoreResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	e := vmtest.Start(t, liveOptions(dir, time.Minute))
	ctx := context.Background()
	b := newBackupExport(t)
	backupID := uuid.NewString()
	v := restoringVolume(t, e, false)
	if _, err := e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: v.GetId(), BackupId: backupID,
		Source: b.export(t, "before"), SizeBytes: backupSize}); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), b.want...), make([]byte, liveVolume-backupSize)...)
	at := attach(t, e, v.GetId(), "rw", false)
	c := dialExport(t, at.GetConnectionInfo())
	p := bytes.Repeat([]byte{0xb1}, 70<<10)
	if _, err := c.WriteAt(p, 3<<20+1000); err != nil {
		t.Fatal(err)
	}
	copy(want[3<<20+1000:], p)
	waitVolume(t, e, v.GetId(), "some progress", func(v *volumev1.Volume) bool { return v.GetLiveRestore().GetBytesFilled() > 0 })
	c.Close()
	e.Stop()
	if err := b.srv.RemoveExport("before"); err != nil {
		t.Fatal(err)
	}

	e = vmtest.Start(t, liveOptions(dir, time.Minute))
	got := getVolume(t, e, v.GetId())
	if lr := got.GetLiveRestore(); lr.GetStatus() != "filling" || lr.GetBytesFilled() >= backupSize || got.GetStatus() != "in-use" {
		t.Fatalf("after the restart: %v", got)
	}
	// The attachment's export is back, on the new NBD port, through the
	// fill: what was written, and what is filled, read back; what needs
	// the backup's export fails until it is back (the export stays up).
	ci := at.GetConnectionInfo()
	_, port, _ := net.SplitHostPort(e.NBD)
	n, _ := strconv.Atoi(port)
	ci.GetData().Port = int32(n)
	c = dialExport(t, ci)
	if _, err := c.ReadAt(make([]byte, backupSize), 0); err == nil {
		t.Fatal("a read of what is not filled succeeded with the backup's export away")
	}
	buf := make([]byte, len(p))
	if _, err := c.ReadAt(buf, 3<<20+1000); err != nil || !bytes.Equal(buf, p) {
		t.Fatalf("the write made before the restart, after a failed read: %v", err)
	}

	b.dev.delay.Store(0)
	if _, err := e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: v.GetId(), BackupId: backupID,
		Source: b.export(t, "after"), SizeBytes: backupSize}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, e, v.GetId(), "the end of the resumed fill", func(v *volumev1.Volume) bool {
		if v.GetLiveRestore().GetStatus() == "failed" {
			t.Fatalf("the fill failed: %v", v)
		}
		return v.GetLiveRestore() == nil
	})
	sameBytes(t, "the live export after the resumed fill", readAll(t, c, "read after the fill"), want)
	img, err := os.ReadFile(filepath.Join(e.Pool, "volumes", v.GetId()+".img"))
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "the volume's data after the resumed fill", img, want)
}

// TestLiveRestoreFailsThenDelete: the backup's export goes for good; the
// fill gives up (LiveRetryFor), live_restore says failed with the reason,
// reads of what is not filled fail with an NBD error while the export
// stays up, the written data still reads back; the volume is deleted, its
// state file with it.
func TestLiveRestoreFailsThenDelete(t *testing.T) {
	e := vmtest.Start(t, liveOptions("", 2*time.Second))
	ctx := context.Background()
	b := newBackupExport(t)
	backupID := uuid.NewString()
	v := restoringVolume(t, e, false)
	if _, err := e.Internal.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: proj, VolumeId: v.GetId(), BackupId: backupID,
		Source: b.export(t, "gone-soon"), SizeBytes: backupSize}); err != nil {
		t.Fatal(err)
	}
	at := attach(t, e, v.GetId(), "rw", false)
	c := dialExport(t, at.GetConnectionInfo())
	p := bytes.Repeat([]byte{0xc1}, 4096)
	if _, err := c.WriteAt(p, 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.RemoveExport("gone-soon"); err != nil {
		t.Fatal(err)
	}
	failed := waitVolume(t, e, v.GetId(), "the fill to fail", func(v *volumev1.Volume) bool { return v.GetLiveRestore().GetStatus() == "failed" })
	if !strings.Contains(failed.GetFailReason(), backupID) {
		t.Fatalf("fail_reason %q does not name the backup", failed.GetFailReason())
	}
	if _, err := c.ReadAt(make([]byte, backupSize), 0); err == nil {
		t.Fatal("a read of what is not filled succeeded after the fill failed")
	}
	buf := make([]byte, len(p))
	if _, err := c.ReadAt(buf, 5<<20); err != nil || !bytes.Equal(buf, p) {
		t.Fatalf("the written data after the failure: %v", err)
	}
	_, err := e.Internal.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: proj, VolumeId: v.GetId(), Force: true})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "failed") {
		t.Fatalf("backup of a failed live volume: %v", err)
	}

	c.Close()
	if _, err := e.Client.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: proj, AttachmentId: at.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: proj, VolumeId: v.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.Dir, "live", v.GetId()+".state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the state file after delete: %v", err)
	}
	if _, err := e.Client.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: proj, VolumeId: v.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("the deleted volume: %v", err)
	}
}
