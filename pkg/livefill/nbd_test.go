package livefill_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/livefill"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestOverNBD is the planned deployment: the backup served read-only over
// NBD from a BackupReader (the backup service), the live device filling
// from an NBD client to it and served over NBD itself (the volume
// manager). A chunk missing from the repository fails the reads of its
// range with an NBD error and the export stays up; nbdcopy copies the live
// export byte for byte before the fill; qemu-io writes during the fill
// survive it.
func TestOverNBD(t *testing.T) {
	nbdcopy := testenv.LookPath(t, "nbdcopy")
	qemuIO := testenv.LookPath(t, "qemu-io")
	const size = 32 * mib
	fx := newFixture(t, size, nil)
	want := fx.want(t)

	sockDir, err := os.MkdirTemp("", "lf-") // short: a socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	serve := func(name string) (*nbd.Server, string) {
		sock := filepath.Join(sockDir, name)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := nbd.NewServer(nbd.ServerOptions{})
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv, sock
	}
	backupSrv, backupSock := serve("backup")
	if err := backupSrv.AddExport("b", fx.reader(t), true); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src, err := nbd.DialReconnecting(ctx, "unix", backupSock, nbd.DialOptions{ExportName: "b"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })

	targetPath := filepath.Join(fx.dir, "target.img")
	target := emptyFile(t, targetPath, size)
	d := open(t, target, &slowDevice{Device: src, delay: 30 * time.Millisecond}, filepath.Join(fx.dir, "state"),
		livefill.Options{SourceID: "b", TargetZeroed: true, RegionSize: 256 << 10, Workers: 2})
	liveSrv, liveSock := serve("live")
	if err := liveSrv.AddExport("live", d, false); err != nil {
		t.Fatal(err)
	}
	uri := "nbd+unix:///live?socket=" + liveSock
	run := func(prog string, args ...string) {
		t.Helper()
		out, err := exec.Command(prog, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
		}
	}

	// A chunk gone from the repository: an NBD error for the reads of its
	// range, the export still up for the others.
	m := fx.reader(t).Manifest()
	id := m.Chunks[5]
	chunkPath := filepath.Join(fx.repo, "backups", "chunks", id[:2], id)
	if err := os.Rename(chunkPath, chunkPath+".away"); err != nil {
		t.Fatal(err)
	}
	client, err := nbd.Dial(ctx, "unix", liveSock, nbd.DialOptions{ExportName: "live"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	b := make([]byte, 4096)
	if _, err := client.ReadAt(b, 5*4*mib+8192); err == nil {
		t.Fatal("a read of a missing chunk over NBD succeeded")
	}
	if _, err := client.ReadAt(b, 6*4*mib); err != nil || string(b) != string(want[24*mib:24*mib+4096]) {
		t.Fatalf("a read elsewhere after the error: %v", err)
	}
	if err := os.Rename(chunkPath+".away", chunkPath); err != nil {
		t.Fatal(err)
	}

	copyPath := filepath.Join(fx.dir, "copy.img")
	run(nbdcopy, uri, copyPath)
	got, _ := os.ReadFile(copyPath)
	same(t, "nbdcopy of the live export before the fill", got, want)

	fillErr := make(chan error, 1)
	go func() { fillErr <- d.Fill(ctx, nil) }()
	during := 0
	for k, off := range []int64{0, 5 * mib, 17*mib + 4096, size - 64<<10} {
		if !d.Complete() {
			during++
		}
		pattern := 0xa0 + k
		run(qemuIO, "-f", "raw", "-c", fmt.Sprintf("write -P %#x %d %d", pattern, off, 64<<10), uri)
		for i := off; i < off+64<<10; i++ {
			want[i] = byte(pattern)
		}
	}
	t.Logf("%d of qemu-io's 4 writes began before the fill ended", during)
	if during == 0 {
		t.Error("the fill ended before qemu-io's writes")
	}
	if err := <-fillErr; err != nil {
		t.Fatal(err)
	}
	os.Remove(copyPath)
	run(nbdcopy, uri, copyPath)
	got, _ = os.ReadFile(copyPath)
	same(t, "nbdcopy of the live export after the fill", got, want)
	got, _ = os.ReadFile(targetPath)
	same(t, "the target after the fill", got, want)
}
