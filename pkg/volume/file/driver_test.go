package file_test

import (
	"context"
	"testing"

	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/pkg/volume/volumetest"
)

func newDriver(t *testing.T, dir, mode string) *file.Driver {
	t.Helper()
	d, err := file.New(file.Config{Dir: dir, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Capabilities().Mode != mode {
		t.Fatalf("driver runs in %s mode, want %s", d.Capabilities().Mode, mode)
	}
	return d
}

func TestConformanceCopyBeforeWrite(t *testing.T) {
	volumetest.Run(t, func(t *testing.T) volume.Driver { return newDriver(t, t.TempDir(), file.ModeCopyBeforeWrite) })
}

func TestConformanceReflinkOnXFS(t *testing.T) {
	mnt := testenv.XFSDir(t, 2<<30)
	n := 0
	volumetest.Run(t, func(t *testing.T) volume.Driver {
		n++
		return newDriver(t, mnt+"/pool"+string(rune('a'+n)), file.ModeReflink)
	})
}

func TestConformanceCopyBeforeWriteOnXFS(t *testing.T) {
	mnt := testenv.XFSDir(t, 1<<30)
	n := 0
	volumetest.Run(t, func(t *testing.T) volume.Driver {
		n++
		return newDriver(t, mnt+"/pool"+string(rune('a'+n)), file.ModeCopyBeforeWrite)
	})
}

func TestAutoModeAndReflinkRefused(t *testing.T) {
	dir := t.TempDir() // an ordinary filesystem here (no reflink)
	d, err := file.New(file.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Mode() == file.ModeCopyBeforeWrite {
		if _, err := file.New(file.Config{Dir: dir, Mode: file.ModeReflink}); err == nil {
			t.Fatal("reflink mode accepted on a filesystem that cannot reflink")
		}
	}
	if d.Capabilities().LocalPath != (d.Mode() == file.ModeReflink) {
		t.Fatal("local paths are offered only in reflink mode")
	}
}

// TestSnapshotsSurviveRestart: a copy-before-write snapshot keeps its point
// in time across a new driver on the same pool.
func TestSnapshotsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d := newDriver(t, dir, file.ModeCopyBeforeWrite)
	d.CreateVolume(ctx, "v", 1<<20)
	dev, _ := d.OpenVolume(ctx, "v", false)
	dev.WriteAt([]byte("before"), 0)
	d.CreateSnapshot(ctx, "v", "s")
	dev.WriteAt([]byte("after!"), 0)
	dev.Flush()
	dev.Close()

	d2 := newDriver(t, dir, file.ModeCopyBeforeWrite)
	sd, err := d2.OpenSnapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	b := make([]byte, 6)
	sd.ReadAt(b, 0)
	if string(b) != "before" {
		t.Fatalf("after a restart the snapshot reads %q", b)
	}
}
