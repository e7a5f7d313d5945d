// Package volumetest is the conformance suite every volume driver runs:
// the contract of volume.Driver and of each optional capability the driver
// claims, including the point-in-time property of snapshots under a writer.
package volumetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
		switch {
		case v == first && boundary < 0:
		case v == first-1 && boundary < 0 && first != 0:
			boundary = b
		case boundary >= 0 && v == first-1:
		default:
			return fmt.Errorf("block %d has round %d after round %d at block 0 (boundary %d): not a point in time", b, v, first, boundary)
		}
	}
	return nil
}
