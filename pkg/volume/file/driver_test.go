package file_test

import (
	"bytes"
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

// TestLargeWritesGoAroundThePageCache: a whole-chunk write to a volume
// opened for bulk writes (a restore's) leaves nothing in the page cache, in
// both modes, and a snapshot taken before it still reads the old data:
// copy-before-write saves the old blocks before the direct write replaces
// them. A volume opened the ordinary way (a virtual machine's) keeps its
// large writes buffered.
func TestLargeWritesGoAroundThePageCache(t *testing.T) {
	for _, mode := range []string{file.ModeCopyBeforeWrite, file.ModeReflink} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			if mode == file.ModeReflink {
				dir = testenv.XFSDir(t, 1<<30)
			}
			d := newDriver(t, dir+"/pool", mode)
			ctx := context.Background()
			const size = 16 << 20
			if err := d.CreateVolume(ctx, "v", size); err != nil {
				t.Fatal(err)
			}
			dev, err := d.OpenVolumeForBulkWrites(ctx, "v")
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			fill := func(seed byte) []byte {
				p := make([]byte, 4<<20)
				for i := range p {
					p[i] = seed + byte(i/4096)
				}
				return p
			}
			old, young := fill(1), fill(50)
			if _, err := dev.WriteAt(old, 4<<20); err != nil {
				t.Fatal(err)
			}
			if err := d.CreateSnapshot(ctx, "v", "s"); err != nil {
				t.Fatal(err)
			}
			if _, err := dev.WriteAt(young, 4<<20); err != nil {
				t.Fatal(err)
			}
			if err := dev.Flush(); err != nil {
				t.Fatal(err)
			}
			// The pool's layout: volumes/<id>.img.
			if n := testenv.CachedPages(t, dir+"/pool/volumes/v.img", 4<<20, 4<<20); n != 0 {
				t.Errorf("after 4 MiB writes, %d of their 1024 pages are in the page cache; want 0 (written directly)", n)
			}
			got := make([]byte, 4<<20)
			if _, err := dev.ReadAt(got, 4<<20); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, young) {
				t.Error("the volume does not read what was last written")
			}
			sd, err := d.OpenSnapshot(ctx, "v", "s")
			if err != nil {
				t.Fatal(err)
			}
			defer sd.Close()
			if _, err := sd.ReadAt(got, 4<<20); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, old) {
				t.Error("the snapshot does not read the data of its point in time")
			}
			plain, err := d.OpenVolume(ctx, "v", false)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			if _, err := plain.WriteAt(old, 8<<20); err != nil {
				t.Fatal(err)
			}
			if n := testenv.CachedPages(t, dir+"/pool/volumes/v.img", 8<<20, 4<<20); n != 1024 {
				t.Errorf("after a 4 MiB write through an ordinary device, %d of its 1024 pages are in the page cache; want all (buffered)", n)
			}
		})
	}
}
