// Package volumetest is the conformance suite every volume driver runs:
// the contract of volume.Driver and of each optional capability the driver
// claims, including the point-in-time property of snapshots under a writer.
package volumetest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/volume"
)

const mib = 1 << 20

// Run runs the suite; newDriver returns a driver on an empty pool.
func Run(t *testing.T, newDriver func(t *testing.T) volume.Driver) {
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, newDriver(t)) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, newDriver(t)) })
	t.Run("CapabilitiesAgree", func(t *testing.T) { testCapabilities(t, newDriver(t)) })
	t.Run("Snapshot", func(t *testing.T) { testSnapshot(t, newDriver(t)) })
	t.Run("CloneAndFromSnapshot", func(t *testing.T) { testClone(t, newDriver(t)) })
	t.Run("Extend", func(t *testing.T) { testExtend(t, newDriver(t)) })
	t.Run("SnapshotRounds", func(t *testing.T) { testRounds(t, newDriver(t)) })
	t.Run("ChangedRanges", func(t *testing.T) { testChangedRanges(t, newDriver(t)) })
}

func create(t *testing.T, d volume.Driver, id string, size int64) {
	t.Helper()
	if err := d.CreateVolume(context.Background(), id, size); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

func open(t *testing.T, d volume.Driver, id string, ro bool) blockdev.Device {
	t.Helper()
	dev, err := d.OpenVolume(context.Background(), id, ro)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

func read(t *testing.T, dev blockdev.Device, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := dev.ReadAt(b, off); err != nil {
		t.Fatalf("read %d@%d: %v", n, off, err)
	}
	return b
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func testLifecycle(t *testing.T, d volume.Driver) {
	ctx := context.Background()
	create(t, d, "vol-a", 4*mib)
	if size, err := d.VolumeSize(ctx, "vol-a"); err != nil || size != 4*mib {
		t.Fatalf("size: %d %v", size, err)
	}
	dev := open(t, d, "vol-a", false)
	if !bytes.Equal(read(t, dev, 0, mib), make([]byte, mib)) {
		t.Fatal("a new volume does not read zeros")
	}
	if _, err := dev.WriteAt(fill(7, 8192), mib+4096); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, dev, mib+4096, 8192), fill(7, 8192)) {
		t.Fatal("written data does not read back")
	}
	if _, err := dev.ReadAt(make([]byte, 10), 4*mib-5); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}
	ro := open(t, d, "vol-a", true)
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("write to read-only device: %v", err)
	}
	if !bytes.Equal(read(t, ro, mib+4096, 8192), fill(7, 8192)) {
		t.Fatal("read-only device does not see the data")
	}
	dev.Close()
	ro.Close()
	if err := d.CreateVolume(ctx, "vol-a", mib); !errors.Is(err, volume.ErrAlreadyExists) {
		t.Fatalf("create existing: %v", err)
	}
	if err := d.DeleteVolume(ctx, "vol-a"); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVolume(ctx, "vol-a"); err != nil {
		t.Fatalf("delete absent: %v", err)
	}
	if _, err := d.OpenVolume(ctx, "vol-a", false); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("open deleted: %v", err)
	}
}

func testBadInput(t *testing.T, d volume.Driver) {
	ctx := context.Background()
	for _, size := range []int64{0, -mib, 1000} {
		if err := d.CreateVolume(ctx, "bad", size); !errors.Is(err, volume.ErrInvalidArgument) {
			t.Errorf("size %d: %v", size, err)
		}
	}
	for _, id := range []string{"", "../x", "a/b", "x\x00"} {
		if err := d.CreateVolume(ctx, id, mib); !errors.Is(err, volume.ErrInvalidArgument) {
			t.Errorf("id %q: %v", id, err)
		}
	}
	_, free, err := d.Space(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateVolume(ctx, "huge", (free/mib+1024)*mib); !errors.Is(err, volume.ErrNoSpace) {
		t.Errorf("past free space: %v", err)
	}
	if _, err := d.OpenVolume(ctx, "absent", false); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("open absent: %v", err)
	}
}

func testCapabilities(t *testing.T, d volume.Driver) {
	c := d.Capabilities()
	_, snap := d.(volume.Snapshotter)
	_, clone := d.(volume.Cloner)
	_, ext := d.(volume.Extender)
	_, lp := d.(volume.LocalPather)
	_, cr := d.(volume.ChangedRanger)
	_, so := d.(volume.SnapshotOpener)
	for _, c := range []struct {
		name        string
		claim, impl bool
	}{{"Snapshot", c.Snapshot, snap}, {"Clone", c.Clone, clone}, {"Extend", c.Extend, ext},
		{"LocalPath", c.LocalPath, lp}, {"ChangedRanges", c.ChangedRanges, cr}, {"SnapshotExport", c.SnapshotExport, so}} {
		if c.claim && !c.impl {
			t.Errorf("capability %s is claimed but its interface is not implemented", c.name)
		}
	}
	if c.Mode == "" {
		t.Error("no mode reported")
	}
}

func testSnapshot(t *testing.T, d volume.Driver) {
	sn, ok := d.(volume.Snapshotter)
	if !ok || !d.Capabilities().Snapshot {
		t.Skip("driver does not snapshot")
	}
	ctx := context.Background()
	create(t, d, "vs", 2*mib)
	dev := open(t, d, "vs", false)
	dev.WriteAt(fill(1, mib), 0)
	if err := sn.CreateSnapshot(ctx, "vs", "s1"); err != nil {
		t.Fatal(err)
	}
	dev.WriteAt(fill(2, mib), 0)
	dev.WriteAt(fill(3, 4096), mib)
	if !bytes.Equal(read(t, dev, 0, mib), fill(2, mib)) {
		t.Fatal("the volume lost a write made after the snapshot")
	}
	if op, ok := d.(volume.SnapshotOpener); ok && d.Capabilities().SnapshotExport {
		sd, err := op.OpenSnapshot(ctx, "vs", "s1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, sd, 0, mib), fill(1, mib)) || !bytes.Equal(read(t, sd, mib, 4096), make([]byte, 4096)) {
			t.Fatal("the snapshot is not the point in time it was taken at")
		}
		if _, err := sd.WriteAt([]byte{9}, 0); !errors.Is(err, blockdev.ErrReadOnly) {
			t.Fatalf("snapshot write: %v", err)
		}
		sd.Close()
	}
	if err := d.DeleteVolume(ctx, "vs"); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("delete a volume with a snapshot: %v", err)
	}
	// Deleting the snapshot while the volume stays open and written.
	if err := sn.DeleteSnapshot(ctx, "vs", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt(fill(4, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := sn.DeleteSnapshot(ctx, "vs", "s1"); err != nil {
		t.Fatalf("delete absent snapshot: %v", err)
	}
}

func testClone(t *testing.T, d volume.Driver) {
	cl, ok := d.(volume.Cloner)
	if !ok || !d.Capabilities().Clone {
		t.Skip("driver does not clone")
	}
	ctx := context.Background()
	create(t, d, "src", 2*mib)
	dev := open(t, d, "src", false)
	dev.WriteAt(fill(5, mib), mib)
	if err := cl.CloneVolume(ctx, "src", "clone"); err != nil {
		t.Fatal(err)
	}
	dev.WriteAt(fill(6, mib), mib)
	c := open(t, d, "clone", true)
	if c.Size() != 2*mib || !bytes.Equal(read(t, c, mib, mib), fill(5, mib)) || !bytes.Equal(read(t, c, 0, mib), make([]byte, mib)) {
		t.Fatal("the clone is not the source at clone time")
	}
	if sn, ok := d.(volume.Snapshotter); ok {
		if err := sn.CreateSnapshot(ctx, "src", "s"); err != nil {
			t.Fatal(err)
		}
		dev.WriteAt(fill(7, mib), mib)
		if err := cl.VolumeFromSnapshot(ctx, "src", "s", "fromsnap", 3*mib); err != nil {
			t.Fatal(err)
		}
		v := open(t, d, "fromsnap", true)
		if v.Size() != 3*mib || !bytes.Equal(read(t, v, mib, mib), fill(6, mib)) {
			t.Fatal("volume from snapshot has the wrong data or size")
		}
		sn.DeleteSnapshot(ctx, "src", "s")
	}
}

func testExtend(t *testing.T, d volume.Driver) {
	ext, ok := d.(volume.Extender)
	if !ok {
		t.Skip("driver does not extend")
	}
	ctx := context.Background()
	create(t, d, "ve", mib)
	dev := open(t, d, "ve", false)
	dev.WriteAt(fill(8, 4096), 0)
	dev.Close()
	if err := ext.ExtendVolume(ctx, "ve", mib/2); !errors.Is(err, volume.ErrInvalidArgument) {
		t.Fatalf("shrink: %v", err)
	}
	if err := ext.ExtendVolume(ctx, "ve", 3*mib); err != nil {
		t.Fatal(err)
	}
	dev = open(t, d, "ve", true)
	if dev.Size() != 3*mib || !bytes.Equal(read(t, dev, 0, 4096), fill(8, 4096)) || !bytes.Equal(read(t, dev, 2*mib, 4096), make([]byte, 4096)) {
		t.Fatal("extend lost data or size")
	}
}

// testRounds: a writer writes round r into every block, in order, over and
// over, while snapshots are taken; every snapshot must show a prefix of
// blocks at round r+1 and the rest at round r.
func testRounds(t *testing.T, d volume.Driver) {
	sn, ok := d.(volume.Snapshotter)
	op, ok2 := d.(volume.SnapshotOpener)
	if !ok || !ok2 || !d.Capabilities().SnapshotExport {
		t.Skip("driver cannot snapshot and read snapshots")
	}
	ctx := context.Background()
	const blocks, bs = 256, 64 << 10
	create(t, d, "rounds", blocks*bs)
	dev := open(t, d, "rounds", false)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, bs)
		for r := 1; !stop.Load(); r++ {
			for i := range buf {
				buf[i] = byte(r)
			}
			for b := 0; b < blocks; b++ {
				if _, err := dev.WriteAt(buf, int64(b)*bs); err != nil {
					writeErr = err
					return
				}
			}
		}
	}()
	for i := 0; i < 12; i++ {
		time.Sleep(5 * time.Millisecond)
		id := fmt.Sprintf("r%d", i)
		if err := sn.CreateSnapshot(ctx, "rounds", id); err != nil {
			t.Fatal(err)
		}
		if err := checkRounds(op, "rounds", id, blocks, bs); err != nil {
			t.Errorf("snapshot %d: %v", i, err)
		}
		sn.DeleteSnapshot(ctx, "rounds", id)
	}
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
}

func checkRounds(op volume.SnapshotOpener, vol, id string, blocks, bs int) error {
	dev, err := op.OpenSnapshot(context.Background(), vol, id)
	if err != nil {
		return err
	}
	defer dev.Close()
	buf := make([]byte, bs)
	var first byte
	boundary := -1
	for b := 0; b < blocks; b++ {
		if _, err := dev.ReadAt(buf, int64(b*bs)); err != nil {
			return err
		}
		v := buf[0]
		if !bytes.Equal(buf, bytes.Repeat([]byte{v}, bs)) {
			return fmt.Errorf("block %d is torn", b)
		}
		if b == 0 {
			first = v
			continue
		}
		// Rounds are bytes, so they wrap: a fast writer is past round 255
		// within the test, and round 256 (0) follows round 255. first-1 is
		// byte arithmetic and wraps the same way; the volume's zeros before
		// the first round are never followed by 255.
		switch {
		case v == first && boundary < 0:
		case v == first-1 && boundary < 0:
			boundary = b
		case boundary >= 0 && v == first-1:
		default:
			return fmt.Errorf("block %d has round %d after round %d at block 0 (boundary %d): not a point in time", b, v, first, boundary)
		}
	}
	return nil
}

// changeGranularity is the coarsest unit a driver may track changes in: a
// reported total above the written bytes rounded out to it fails the
// suite (one that reports every allocated block, or the whole volume, does).
const changeGranularity = mib

// change is a write (or a zeroing) made to a volume in testChangedRanges.
type change struct {
	off, n int64
	zero   bool
}

// apply makes the change with data of value v, which differs from what the
// range held before.
func (c change) apply(t *testing.T, dev blockdev.Device, v byte) {
	t.Helper()
	var err error
	if c.zero {
		err = dev.Zero(c.off, c.n)
	} else {
		_, err = dev.WriteAt(fill(v, int(c.n)), c.off)
	}
	if err != nil {
		t.Fatalf("change %d@%d: %v", c.n, c.off, err)
	}
}

// testChangedRanges: the ranges reported between two snapshots cover every
// byte that differs between them, whichever is given first, and add little
// to what was written; a snapshot compared with itself, or with one taken
// with no write in between, has none.
func testChangedRanges(t *testing.T, d volume.Driver) {
	cr, ok := d.(volume.ChangedRanger)
	sn, ok2 := d.(volume.Snapshotter)
	if !ok || !ok2 || !d.Capabilities().ChangedRanges || !d.Capabilities().Snapshot {
		t.Skip("driver does not report changed ranges between snapshots")
	}
	ctx := context.Background()
	const size = 64 * mib
	create(t, d, "vc", size)
	dev := open(t, d, "vc", false)
	// Data at [0, 16 MiB) and [32 MiB, 40 MiB), the rest never written.
	change{off: 0, n: 16 * mib}.apply(t, dev, 0x11)
	change{off: 32 * mib, n: 8 * mib}.apply(t, dev, 0x22)
	snap := func(id string) {
		t.Helper()
		if err := sn.CreateSnapshot(ctx, "vc", id); err != nil {
			t.Fatalf("snapshot %s: %v", id, err)
		}
	}
	ranges := func(from, to string) []volume.Range {
		t.Helper()
		rs, err := cr.ChangedRanges(ctx, "vc", from, to)
		if err != nil {
			t.Fatalf("changed ranges %s -> %s: %v", from, to, err)
		}
		return rs
	}
	snap("s1")
	between := []change{
		// 4 KiB writes over data, scattered.
		{off: 3 * 4096, n: 4096},
		{off: 5*mib + 8192, n: 4096},
		{off: 15*mib + 61440, n: 4096},
		{off: 33*mib + 12288, n: 4096},
		// 1 MiB at an offset that is not 4 KiB-aligned.
		{off: 8*mib + 12800, n: mib},
		// Zeroing data.
		{off: 36 * mib, n: 512 << 10, zero: true},
		// Into a hole.
		{off: 50*mib + 20480, n: 64 << 10},
	}
	for i, c := range between {
		c.apply(t, dev, byte(0xa0+i))
	}
	snap("s2")
	snap("s3")
	// Nothing between: s2 with itself, and s2 with s3 either way (before
	// any write after them, which a driver may report).
	for _, p := range [][2]string{{"s2", "s2"}, {"s1", "s1"}, {"s2", "s3"}, {"s3", "s2"}} {
		if rs := ranges(p[0], p[1]); len(rs) != 0 {
			t.Errorf("changed ranges %s -> %s with no write between: %v", p[0], p[1], rs)
		}
	}
	after := []change{
		{off: 60 * mib, n: 4096},
		{off: 20 * mib, n: mib},
		{off: 3 * 4096, n: 4096}, // again where a change before s2 was
	}
	for i, c := range after {
		c.apply(t, dev, byte(0xc0+i))
	}

	forward, backward := ranges("s1", "s2"), ranges("s2", "s1")
	for _, rs := range [][]volume.Range{forward, backward} {
		checkRanges(t, rs, size)
		for _, c := range between {
			if !covered(rs, c.off, c.n) {
				t.Errorf("change %d@%d is not in the changed ranges %v", c.n, c.off, rs)
			}
		}
	}
	if op, ok := d.(volume.SnapshotOpener); ok && d.Capabilities().SnapshotExport {
		diff := diffSnapshots(t, op, "vc", "s1", "s2", size)
		var diffBytes int64
		for _, r := range diff {
			diffBytes += r.Length
			for _, rs := range [][]volume.Range{forward, backward} {
				if !covered(rs, r.Offset, r.Length) {
					t.Errorf("s1 and s2 differ at %d@%d, outside the changed ranges %v", r.Length, r.Offset, rs)
				}
			}
		}
		var written int64
		for _, c := range between {
			written += c.n
		}
		if diffBytes != written {
			t.Errorf("s1 and s2 differ in %d bytes, %d were changed between them", diffBytes, written)
		}
	}
	bound := totalLength(roundOut(append(slices.Clone(between), after...), changeGranularity))
	for _, rs := range [][]volume.Range{forward, backward} {
		if total := totalLength(rs); total > bound {
			t.Errorf("%d bytes reported changed, more than the %d the changes cover in %d-byte blocks: %v", total, bound, changeGranularity, rs)
		}
	}
	t.Logf("s1 -> s2: %d bytes in %d ranges reported, %d bytes written between them",
		totalLength(forward), len(forward), totalLength(roundOut(between, 1)))

	for _, p := range [][3]string{{"vc", "s1", "absent"}, {"vc", "absent", "s2"}, {"absent", "s1", "s2"}} {
		if _, err := cr.ChangedRanges(ctx, p[0], p[1], p[2]); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("changed ranges of %s, %s -> %s: %v, want ErrNotFound", p[0], p[1], p[2], err)
		}
	}

	// Across an extension: the new part is reported where it was written.
	if ext, ok := d.(volume.Extender); ok && d.Capabilities().Extend {
		dev.Close()
		if err := ext.ExtendVolume(ctx, "vc", size+4*mib); err != nil {
			t.Fatal(err)
		}
		dev = open(t, d, "vc", false)
		grown := change{off: size + mib, n: 4096}
		grown.apply(t, dev, 0xe0)
		snap("s4")
		for _, p := range [][2]string{{"s2", "s4"}, {"s4", "s2"}} {
			rs := ranges(p[0], p[1])
			checkRanges(t, rs, size+4*mib)
			for _, c := range append(slices.Clone(after), grown) {
				if !covered(rs, c.off, c.n) {
					t.Errorf("%s -> %s: change %d@%d is not in the changed ranges %v", p[0], p[1], c.n, c.off, rs)
				}
			}
		}
	}
}

// checkRanges fails the test unless rs are non-empty, in order, disjoint
// and inside a volume of size bytes.
func checkRanges(t *testing.T, rs []volume.Range, size int64) {
	t.Helper()
	end := int64(0)
	for _, r := range rs {
		if r.Length <= 0 || r.Offset < end || r.Offset+r.Length > size {
			t.Fatalf("changed ranges are not sorted, disjoint, non-empty ranges within %d bytes: %v", size, rs)
		}
		end = r.Offset + r.Length
	}
}

// covered reports whether [off, off+n) lies within the union of rs (sorted
// and disjoint).
func covered(rs []volume.Range, off, n int64) bool {
	pos, end := off, off+n
	for _, r := range rs {
		if r.Offset > pos {
			break
		}
		pos = max(pos, r.Offset+r.Length)
		if pos >= end {
			return true
		}
	}
	return pos >= end
}

// roundOut returns the changes' ranges rounded out to multiples of unit,
// sorted and merged.
func roundOut(cs []change, unit int64) []volume.Range {
	var rs []volume.Range
	for _, c := range cs {
		start := c.off / unit * unit
		rs = append(rs, volume.Range{Offset: start, Length: (c.off+c.n+unit-1)/unit*unit - start})
	}
	slices.SortFunc(rs, func(a, b volume.Range) int { return cmp.Compare(a.Offset, b.Offset) })
	var out []volume.Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Offset <= out[n-1].Offset+out[n-1].Length {
			out[n-1].Length = max(out[n-1].Length, r.Offset+r.Length-out[n-1].Offset)
			continue
		}
		out = append(out, r)
	}
	return out
}

func totalLength(rs []volume.Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.Length
	}
	return n
}

// diffSnapshots reads two snapshots of a volume and returns the runs of
// bytes where they differ.
func diffSnapshots(t *testing.T, op volume.SnapshotOpener, vol, a, b string, size int64) []volume.Range {
	t.Helper()
	var devs [2]blockdev.Device
	for i, id := range []string{a, b} {
		dev, err := op.OpenSnapshot(context.Background(), vol, id)
		if err != nil {
			t.Fatalf("open snapshot %s: %v", id, err)
		}
		defer dev.Close()
		devs[i] = dev
	}
	var out []volume.Range
	for off := int64(0); off < size; off += mib {
		n := min(mib, size-off)
		x, y := read(t, devs[0], off, n), read(t, devs[1], off, n)
		if bytes.Equal(x, y) {
			continue
		}
		for i := range x {
			if x[i] == y[i] {
				continue
			}
			pos := off + int64(i)
			if k := len(out); k > 0 && out[k-1].Offset+out[k-1].Length == pos {
				out[k-1].Length++
			} else {
				out = append(out, volume.Range{Offset: pos, Length: 1})
			}
		}
	}
	return out
}
