//go:build rbd && cgo

package rbd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/rbd"
	"github.com/blockvault/blockvault/pkg/volume/volumetest"
)

const mib = 1 << 20

// newDriver returns a driver on a fresh namespace of the cluster's pool,
// closed at the test's end.
func newDriver(t *testing.T, c *testenv.CephCluster, ns string) *rbd.Driver {
	t.Helper()
	if ns == "" {
		ns = c.NewNamespace(t)
	}
	d, err := rbd.New(rbd.Config{ConfPath: c.Conf, Pool: c.Pool, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestConformance runs the conformance suite, with snapshot opening on and
// off, and the driver's own tests, on one cluster: each driver gets a
// namespace of its own.
func TestConformance(t *testing.T) {
	c := testenv.StartCeph(t)
	volumetest.Run(t, func(t *testing.T) volume.Driver { return newDriver(t, c, "") })
	t.Run("SnapshotOpenDisabled", func(t *testing.T) {
		volumetest.Run(t, func(t *testing.T) volume.Driver {
			d, err := rbd.New(rbd.Config{ConfPath: c.Conf, Pool: c.Pool, Namespace: c.NewNamespace(t), DisableSnapshotOpen: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			if d.Capabilities().SnapshotExport {
				t.Fatal("snapshot export claimed with snapshot opening disabled")
			}
			return d
		})
	})
	t.Run("Driver", func(t *testing.T) {
		t.Run("Naming", func(t *testing.T) { testNaming(t, c) })
		t.Run("HiddenCloneSnapshots", func(t *testing.T) { testHiddenCloneSnapshots(t, c) })
		t.Run("DeleteSnapshotFlattensClones", func(t *testing.T) { testDeleteSnapshotWithClones(t, c) })
		t.Run("Extents", func(t *testing.T) { testExtents(t, c) })
		t.Run("ZeroAndTrimUnaligned", func(t *testing.T) { testZero(t, c) })
		t.Run("DeleteOpenElsewhere", func(t *testing.T) { testDeleteOpenElsewhere(t, c) })
		t.Run("MissingPoolOrNamespace", func(t *testing.T) { testMissingPool(t, c) })
		t.Run("CloseClosesDevices", func(t *testing.T) { testClose(t, c) })
	})
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func mustOpen(t *testing.T, d volume.Driver, id string, ro bool) blockdev.Device {
	t.Helper()
	dev, err := d.OpenVolume(context.Background(), id, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

func write(t *testing.T, dev blockdev.Device, b []byte, off int64) {
	t.Helper()
	if _, err := dev.WriteAt(b, off); err != nil {
		t.Fatalf("write %d@%d: %v", len(b), off, err)
	}
}

func read(t *testing.T, dev blockdev.Device, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := dev.ReadAt(b, off); err != nil {
		t.Fatalf("read %d@%d: %v", n, off, err)
	}
	return b
}

// lines returns the non-empty lines of out.
func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// snapNames lists an image's snapshots with the rbd command.
func snapNames(t *testing.T, c *testenv.CephCluster, ns, image string) []string {
	t.Helper()
	var snaps []struct {
		Name      string `json:"name"`
		Protected string `json:"protected"`
	}
	out := c.RBD(t, "snap", "ls", "--format", "json", c.Pool+"/"+ns+"/"+image)
	if err := json.Unmarshal([]byte(out), &snaps); err != nil {
		t.Fatalf("rbd snap ls: %v: %s", err, out)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return names
}

// testNaming: the images and snapshots carry Cinder's names and the
// features the driver promises, which is what operators see with rbd.
func testNaming(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	ns := c.NewNamespace(t)
	d := newDriver(t, c, ns)
	if err := d.CreateVolume(ctx, "a1", 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateSnapshot(ctx, "a1", "s1"); err != nil {
		t.Fatal(err)
	}
	if got := lines(c.RBD(t, "ls", "--pool", c.Pool, "--namespace", ns)); !slices.Equal(got, []string{"volume-a1"}) {
		t.Errorf("rbd ls: %q, want [volume-a1]", got)
	}
	if got := snapNames(t, c, ns, "volume-a1"); !slices.Equal(got, []string{"snapshot-s1"}) {
		t.Errorf("rbd snap ls: %q, want [snapshot-s1]", got)
	}
	var info struct {
		Size     int64    `json:"size"`
		Order    int      `json:"order"`
		Features []string `json:"features"`
	}
	out := c.RBD(t, "info", "--format", "json", c.Pool+"/"+ns+"/volume-a1")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("rbd info: %v: %s", err, out)
	}
	slices.Sort(info.Features)
	want := []string{"deep-flatten", "exclusive-lock", "fast-diff", "layering", "object-map"}
	if !slices.Equal(info.Features, want) || info.Order != 22 || info.Size != 8*mib {
		t.Errorf("rbd info: features %q order %d size %d, want %q, 22 (4 MiB objects), %d", info.Features, info.Order, info.Size, want, 8*mib)
	}
	if size, err := d.VolumeSize(ctx, "a1"); err != nil || size != 8*mib {
		t.Errorf("VolumeSize: %d %v", size, err)
	}
	if _, err := d.VolumeSize(ctx, "absent"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("VolumeSize of an absent volume: %v", err)
	}
	if err := d.CreateSnapshot(ctx, "a1", "s1"); !errors.Is(err, volume.ErrAlreadyExists) {
		t.Errorf("snapshot again: %v", err)
	}
	if err := d.CreateSnapshot(ctx, "absent", "s1"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("snapshot of an absent volume: %v", err)
	}
	if _, err := d.OpenSnapshot(ctx, "a1", "absent"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("open an absent snapshot: %v", err)
	}
	for _, id := range []string{"a@b", "a.b", "..", "a b"} {
		if err := d.CreateSnapshot(ctx, "a1", id); !errors.Is(err, volume.ErrInvalidArgument) {
			t.Errorf("snapshot id %q: %v", id, err)
		}
	}
	total, free, err := d.Space(ctx)
	if err != nil || total <= 0 || free <= 0 || free > total {
		t.Errorf("Space: %d %d %v", total, free, err)
	}
	if d.Name() != "rbd" || d.Capabilities().Mode != "rbd-snapshot" || d.Capabilities().LocalPath {
		t.Errorf("name %q, capabilities %+v", d.Name(), d.Capabilities())
	}
}

// testHiddenCloneSnapshots: a clone of a volume comes from a hidden
// snapshot, which goes with the clone; deleting the source flattens the
// clones still there.
func testHiddenCloneSnapshots(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	ns := c.NewNamespace(t)
	d := newDriver(t, c, ns)
	if err := d.CreateVolume(ctx, "src", 8*mib); err != nil {
		t.Fatal(err)
	}
	dev := mustOpen(t, d, "src", false)
	write(t, dev, fill(0x5a, mib), 5*mib)
	for _, id := range []string{"c1", "c2"} {
		if err := d.CloneVolume(ctx, "src", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.CloneVolume(ctx, "src", "c1"); !errors.Is(err, volume.ErrAlreadyExists) {
		t.Errorf("clone onto an existing volume: %v", err)
	}
	if err := d.CloneVolume(ctx, "absent", "c3"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("clone of an absent volume: %v", err)
	}
	if got := snapNames(t, c, ns, "volume-src"); !slices.Equal(got, []string{"clone-c1", "clone-c2"}) {
		t.Fatalf("snapshots of the source: %q, want the hidden clone-c1, clone-c2", got)
	}
	if err := d.DeleteVolume(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := snapNames(t, c, ns, "volume-src"); !slices.Equal(got, []string{"clone-c2"}) {
		t.Fatalf("snapshots of the source after deleting clone c1: %q, want [clone-c2]", got)
	}
	// The source, open, is in use; closed, it goes, and c2 is flattened
	// first.
	if err := d.DeleteVolume(ctx, "src"); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("delete an open volume: %v", err)
	}
	dev.Close()
	if err := d.DeleteVolume(ctx, "src"); err != nil {
		t.Fatalf("delete a volume that has a clone: %v", err)
	}
	if got := lines(c.RBD(t, "ls", "--pool", c.Pool, "--namespace", ns)); !slices.Equal(got, []string{"volume-c2"}) {
		t.Errorf("images: %q, want [volume-c2]", got)
	}
	c2 := mustOpen(t, d, "c2", true)
	if !bytes.Equal(read(t, c2, 5*mib, mib), fill(0x5a, mib)) || !bytes.Equal(read(t, c2, 0, mib), make([]byte, mib)) {
		t.Error("the flattened clone lost its data")
	}
	c2.Close()
	if err := d.DeleteVolume(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
}

// testDeleteSnapshotWithClones: deleting a snapshot that volumes were made
// from flattens them, and they keep their data and size.
func testDeleteSnapshotWithClones(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	ns := c.NewNamespace(t)
	d := newDriver(t, c, ns)
	if err := d.CreateVolume(ctx, "v", 4*mib); err != nil {
		t.Fatal(err)
	}
	dev := mustOpen(t, d, "v", false)
	write(t, dev, fill(0x42, 4096), 4096)
	if err := d.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	write(t, dev, fill(0x43, 4096), 4096)
	for _, id := range []string{"f1", "f2"} {
		if err := d.VolumeFromSnapshot(ctx, "v", "s", id, 6*mib); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.VolumeFromSnapshot(ctx, "v", "absent", "f3", 0); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("volume from an absent snapshot: %v", err)
	}
	sd, err := d.OpenSnapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteSnapshot(ctx, "v", "s"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("delete a snapshot open for reading: %v", err)
	}
	sd.Close()
	if err := d.DeleteSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if got := snapNames(t, c, ns, "volume-v"); len(got) != 0 {
		t.Errorf("snapshots left: %q", got)
	}
	for _, id := range []string{"f1", "f2"} {
		f := mustOpen(t, d, id, true)
		if f.Size() != 6*mib || !bytes.Equal(read(t, f, 4096, 4096), fill(0x42, 4096)) {
			t.Errorf("volume %s lost its data or size after its snapshot went", id)
		}
		f.Close()
	}
}

// testExtents: an unwritten image is one hole; written ranges are data,
// exactly, and a zeroed range within them a hole again or zeros.
func testExtents(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	d := newDriver(t, c, "")
	const size = 16 * mib
	if err := d.CreateVolume(ctx, "e", size); err != nil {
		t.Fatal(err)
	}
	dev := mustOpen(t, d, "e", false)
	exts, err := dev.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := []blockdev.Extent{{Offset: 0, Length: size, Hole: true, Zero: true}}; !slices.Equal(exts, want) {
		t.Fatalf("extents of an unwritten image: %+v, want %+v", exts, want)
	}
	write(t, dev, fill(1, 8192), 5*mib+4096)
	write(t, dev, fill(2, 4096), 12*mib)
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	exts, err = dev.Extents(mib, size-2*mib)
	if err != nil {
		t.Fatal(err)
	}
	// A new object is data from its start to the end of what was written
	// into it (librbd's diff from no snapshot reports no finer): the
	// objects never written are holes.
	want := []blockdev.Extent{
		{Offset: mib, Length: 3 * mib, Hole: true, Zero: true},
		{Offset: 4 * mib, Length: mib + 12288},
		{Offset: 5*mib + 12288, Length: 7*mib - 12288, Hole: true, Zero: true},
		{Offset: 12 * mib, Length: 4096},
		{Offset: 12*mib + 4096, Length: 3*mib - 4096, Hole: true, Zero: true},
	}
	if !slices.Equal(exts, want) {
		t.Errorf("extents:\n got %+v\nwant %+v", exts, want)
	}
	if _, err := dev.Extents(size-4096, 8192); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Errorf("extents past the end: %v", err)
	}
	// A snapshot's device reports the extents at its point in time.
	if err := d.CreateSnapshot(ctx, "e", "s"); err != nil {
		t.Fatal(err)
	}
	write(t, dev, fill(3, 4096), 0)
	sd, err := d.OpenSnapshot(ctx, "e", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	exts, err = sd.Extents(0, 2*mib)
	if err != nil {
		t.Fatal(err)
	}
	if want := []blockdev.Extent{{Offset: 0, Length: 2 * mib, Hole: true, Zero: true}}; !slices.Equal(exts, want) {
		t.Errorf("extents of the snapshot: %+v, want %+v", exts, want)
	}
}

// testZero: Zero and Trim give zeros over exactly their range, edges not
// aligned to anything and across objects included, on an image and on a
// clone whose data is in its parent.
func testZero(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	d := newDriver(t, c, "")
	const size = 12 * mib
	if err := d.CreateVolume(ctx, "z", size); err != nil {
		t.Fatal(err)
	}
	dev := mustOpen(t, d, "z", false)
	write(t, dev, fill(0xff, size), 0)
	if err := d.CloneVolume(ctx, "z", "zc"); err != nil {
		t.Fatal(err)
	}
	clone := mustOpen(t, d, "zc", false)
	ranges := []struct{ off, n int64 }{
		{100, 37},                 // inside a sector
		{mib + 513, 5*mib + 1001}, // across an object boundary
		{8*mib - 4096, 4*mib + 4096},
	}
	for _, dv := range []blockdev.Device{dev, clone} {
		for i, r := range ranges {
			var err error
			if i%2 == 0 {
				err = dv.Zero(r.off, r.n)
			} else {
				err = dv.Trim(r.off, r.n)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		got := read(t, dv, 0, size)
		want := fill(0xff, size)
		for _, r := range ranges {
			copy(want[r.off:r.off+r.n], make([]byte, r.n))
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			t.Errorf("after zeroing, the device differs from what it should hold first at byte %d: %#x, want %#x", i, got[i], want[i])
		}
	}
	ro := mustOpen(t, d, "z", true)
	if err := ro.Zero(0, 512); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Errorf("zero a read-only device: %v", err)
	}
	if err := ro.Trim(0, 512); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Errorf("trim a read-only device: %v", err)
	}
	if err := dev.Zero(size-512, 1024); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Errorf("zero past the end: %v", err)
	}
}

// testDeleteOpenElsewhere: a volume another client (another driver, as a
// second volume manager would be) has open is in use.
func testDeleteOpenElsewhere(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	ns := c.NewNamespace(t)
	d1, d2 := newDriver(t, c, ns), newDriver(t, c, ns)
	if err := d1.CreateVolume(ctx, "o", mib); err != nil {
		t.Fatal(err)
	}
	// Open for writing in another client: watched, so librbd knows. (A
	// read-only handle elsewhere leaves no trace librbd could see.)
	dev := mustOpen(t, d2, "o", false)
	if err := d1.DeleteVolume(ctx, "o"); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("delete a volume open in another client: %v", err)
	}
	dev.Close()
	// Open read-only in this one: the driver counts its devices.
	dev = mustOpen(t, d1, "o", true)
	if err := d1.DeleteVolume(ctx, "o"); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("delete a volume open read-only: %v", err)
	}
	dev.Close()
	if err := d1.DeleteVolume(ctx, "o"); err != nil {
		t.Fatal(err)
	}
}

// testMissingPool: a pool or namespace that does not exist is named in the
// error New returns.
func testMissingPool(t *testing.T, c *testenv.CephCluster) {
	_, err := rbd.New(rbd.Config{ConfPath: c.Conf, Pool: "no-such-pool"})
	if err == nil || !strings.Contains(err.Error(), `pool "no-such-pool" does not exist`) || !strings.Contains(err.Error(), c.Conf) {
		t.Errorf("New with a missing pool: %v", err)
	}
	_, err = rbd.New(rbd.Config{ConfPath: c.Conf, Pool: c.Pool, Namespace: "no-such-namespace"})
	if err == nil || !strings.Contains(err.Error(), `namespace "no-such-namespace"`) {
		t.Errorf("New with a missing namespace: %v", err)
	}
	if _, err := rbd.New(rbd.Config{ConfPath: c.Conf}); !errors.Is(err, volume.ErrInvalidArgument) {
		t.Errorf("New without a pool: %v", err)
	}
}

// testClose: closing the driver closes its devices, which then fail
// instead of touching freed handles.
func testClose(t *testing.T, c *testenv.CephCluster) {
	ctx := context.Background()
	d, err := rbd.New(rbd.Config{ConfPath: c.Conf, Pool: c.Pool, Namespace: c.NewNamespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateVolume(ctx, "v", mib); err != nil {
		t.Fatal(err)
	}
	dev, err := d.OpenVolume(ctx, "v", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.ReadAt(make([]byte, 512), 0); err == nil {
		t.Error("a device of a closed driver reads")
	}
	if err := dev.Close(); err != nil {
		t.Errorf("close a device the driver closed: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("close twice: %v", err)
	}
	if _, err := d.VolumeSize(ctx, "v"); err == nil {
		t.Error("a closed driver answers")
	}
}
