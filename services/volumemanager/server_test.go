package volumemanager_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"testing"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/services/volumemanager"
	"github.com/blockvault/blockvault/services/volumemanager/vmtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

type env struct {
	client   volumev1.VolumeManagerServiceClient
	internal volumev1.VolumeManagerInternalServiceClient
	server   *volumemanager.Server
	pool     string
	nbd      string
}

// newEnv runs the service in process on a real SQLite store, the real file
// driver and a real NBD server, with a gRPC client over bufconn.
func newEnv(t *testing.T, driverCfg file.Config) *env {
	t.Helper()
	e := vmtest.New(t, driverCfg)
	return &env{client: e.Client, internal: e.Internal, server: e.Server, pool: e.Pool, nbd: e.NBD}
}

const proj = "p1"

func (e *env) create(t *testing.T, size int64) *volumev1.Volume {
	t.Helper()
	r, err := e.client.CreateVolume(context.Background(), &volumev1.CreateVolumeRequest{ProjectId: proj, Volume: &volumev1.VolumeInput{SizeBytes: size}})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetVolume()
}

func dialExport(t *testing.T, ci *volumev1.ConnectionInfo) *nbd.Client {
	t.Helper()
	d := ci.GetData()
	c, err := nbd.Dial(context.Background(), "tcp", net.JoinHostPort(d.GetHost(), strconv.Itoa(int(d.GetPort()))), nbd.DialOptions{ExportName: d.GetExportName()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAttachWriteSnapshotDetach walks a volume through attach (NBD, rw),
// writes, a forced snapshot while attached, a read-only snapshot export
// that refuses writes, and detach.
func TestAttachWriteSnapshotDetach(t *testing.T) {
	e := newEnv(t, file.Config{Mode: "copy-before-write"})
	ctx := context.Background()
	v := e.create(t, 8<<20)

	at, err := e.client.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: proj, Attachment: &volumev1.AttachmentInput{VolumeUuid: v.GetId(), InstanceUuid: "vm-1"}})
	if err != nil {
		t.Fatal(err)
	}
	ci := at.GetAttachment().GetConnectionInfo()
	if ci.GetDriverVolumeType() != "nbd" || len(ci.GetData().GetExportName()) < 32 {
		t.Fatalf("connection info: %v", ci)
	}
	got, _ := e.client.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: proj, VolumeId: v.GetId()})
	if got.GetVolume().GetStatus() != "in-use" {
		t.Fatalf("attached volume is %s", got.GetVolume().GetStatus())
	}
	c := dialExport(t, ci)
	before := bytes.Repeat([]byte{1}, 1<<20)
	if _, err := c.WriteAt(before, 0); err != nil {
		t.Fatal(err)
	}

	// Snapshot of an in-use volume needs force.
	if _, err := e.client.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: proj, Snapshot: &volumev1.SnapshotInput{VolumeId: v.GetId()}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("snapshot without force: %v", err)
	}
	sr, err := e.client.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: proj, Snapshot: &volumev1.SnapshotInput{VolumeId: v.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	snap := sr.GetSnapshot()
	if _, err := c.WriteAt(bytes.Repeat([]byte{2}, 1<<20), 0); err != nil {
		t.Fatal(err)
	}

	// Attach the snapshot (the blueprint's step 2): a read-only export
	// with its credential in provider_auth, showing the old data.
	as, err := e.internal.AttachSnapshot(ctx, &volumev1.AttachSnapshotRequest{ProjectId: proj, SnapshotId: snap.GetId(), Connector: &volumev1.Connector{Host: "node-b"}})
	if err != nil {
		t.Fatal(err)
	}
	if !as.GetConnectionInfo().GetData().GetReadOnly() {
		t.Fatal("snapshot export is not read-only")
	}
	sc := dialExport(t, as.GetConnectionInfo())
	buf := make([]byte, 1<<20)
	if _, err := sc.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, before) {
		t.Fatal("the snapshot does not show the data of its point in time")
	}
	if _, err := sc.WriteAt(buf[:4096], 0); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("write to the snapshot export: %v, want ErrReadOnly", err)
	}
	// A snapshot attached cannot be deleted; a volume with snapshots and
	// attachments cannot be deleted.
	if _, err := e.client.DeleteSnapshot(ctx, &volumev1.DeleteSnapshotRequest{ProjectId: proj, SnapshotId: snap.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("delete attached snapshot: %v", err)
	}
	if _, err := e.client.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: proj, VolumeId: v.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("delete attached volume: %v", err)
	}
	// A wrong export name is refused.
	d := as.GetConnectionInfo().GetData()
	if _, err := nbd.Dial(ctx, "tcp", e.nbd, nbd.DialOptions{ExportName: d.GetExportName() + "x"}); err == nil {
		t.Fatal("a wrong export name was accepted")
	}

	if _, err := e.internal.DetachSnapshot(ctx, &volumev1.DetachSnapshotRequest{ProjectId: proj, SnapshotId: snap.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := nbd.Dial(ctx, "tcp", e.nbd, nbd.DialOptions{ExportName: d.GetExportName()}); err == nil {
		t.Fatal("a detached snapshot's export still answers")
	}
	if _, err := e.client.DeleteSnapshot(ctx, &volumev1.DeleteSnapshotRequest{ProjectId: proj, SnapshotId: snap.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: proj, AttachmentId: at.GetAttachment().GetId()}); err != nil {
		t.Fatal(err)
	}
	got, _ = e.client.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: proj, VolumeId: v.GetId()})
	if got.GetVolume().GetStatus() != "available" || len(got.GetVolume().GetAttachments()) != 0 {
		t.Fatalf("after detach: %v", got.GetVolume())
	}
	if e.server.ExportCount() != 0 {
		t.Fatalf("%d exports left", e.server.ExportCount())
	}
}

// TestBeginBackupStatusSwap: in-use needs force, the status swap keeps the
// previous status, a second begin is refused, and end restores it.
func TestBeginBackupStatusSwap(t *testing.T) {
	e := newEnv(t, file.Config{})
	ctx := context.Background()
	v := e.create(t, 4<<20)
	at, err := e.client.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: proj, Attachment: &volumev1.AttachmentInput{VolumeUuid: v.GetId()}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.internal.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: proj, VolumeId: v.GetId()})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != volumemanager.MsgForceRequired {
		t.Fatalf("begin without force: %v", err)
	}
	b, err := e.internal.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: proj, VolumeId: v.GetId(), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetVolume().GetStatus() != "backing-up" || b.GetVolume().GetPreviousStatus() != "in-use" {
		t.Fatalf("after begin: %v", b.GetVolume())
	}
	if _, err := e.internal.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: proj, VolumeId: v.GetId(), Force: true}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("second begin: %v", err)
	}
	end, err := e.internal.EndBackup(ctx, &volumev1.EndBackupRequest{ProjectId: proj, VolumeId: v.GetId()})
	if err != nil || end.GetVolume().GetStatus() != "in-use" {
		t.Fatalf("end: %v %v", end, err)
	}
	e.client.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: proj, AttachmentId: at.GetAttachment().GetId()})
	// Another project sees nothing.
	if _, err := e.client.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: "other", VolumeId: v.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("other project: %v", err)
	}
}

// TestDirectIOAttachment: an attachment asked with direct_io (a restore's)
// writes whole chunks around the storage node's page cache; an ordinary one
// (a virtual machine's) through it. Both read back what was written.
func TestDirectIOAttachment(t *testing.T) {
	e := newEnv(t, file.Config{Mode: "copy-before-write"})
	ctx := context.Background()
	for _, direct := range []bool{true, false} {
		v := e.create(t, 8<<20)
		at, err := e.client.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: proj, Attachment: &volumev1.AttachmentInput{
			VolumeUuid: v.GetId(), InstanceUuid: "restore-1", Connector: &volumev1.Connector{Host: "elsewhere", DirectIo: direct}}})
		if err != nil {
			t.Fatal(err)
		}
		c := dialExport(t, at.GetAttachment().GetConnectionInfo())
		chunk := bytes.Repeat([]byte{7}, 4<<20)
		if _, err := c.WriteAt(chunk, 4<<20); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		want := 0
		if !direct {
			want = 1024
		}
		if n := testenv.CachedPages(t, e.pool+"/volumes/"+v.GetId()+".img", 4<<20, 4<<20); n != want {
			t.Errorf("direct_io %v: %d of the chunk's 1024 pages are in the page cache, want %d", direct, n, want)
		}
		got := make([]byte, 4<<20)
		if _, err := c.ReadAt(got, 4<<20); err != nil || !bytes.Equal(got, chunk) {
			t.Errorf("direct_io %v: the chunk reads back differently (%v)", direct, err)
		}
	}
}
