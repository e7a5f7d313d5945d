package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockvault/blockvault/pkg/testenv"
)

// stagingVolume opens a new volume of a driver in a temporary pool; the
// tests drive its staging by hand, so the mode does not matter.
func stagingVolume(t *testing.T, size int64) *volumeDevice {
	t.Helper()
	d, err := New(Config{Dir: t.TempDir(), Mode: ModeCopyBeforeWrite})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	if err := d.CreateVolume(ctx, "v", size); err != nil {
		t.Fatal(err)
	}
	dev, err := d.OpenVolume(ctx, "v", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev.(*volumeDevice)
}

// TestStagingDuringClone drives withStaging by hand: writes and zeroings
// made while the clone runs return at once, are visible to reads at once,
// stay out of the clone and of the file until the clone is done, and are
// in the file afterwards; a flush waits for them.
func TestStagingDuringClone(t *testing.T) {
	const mib = 1 << 20
	dev := stagingVolume(t, 4*mib)
	a := bytes.Repeat([]byte{'a'}, 4*mib)
	if _, err := dev.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	st := dev.st
	b := bytes.Repeat([]byte{'b'}, mib)
	clonePath := filepath.Join(t.TempDir(), "clone")
	flushed := make(chan error, 1)

	err := st.withStaging(newStage(t.TempDir()), func() error {
		if _, err := dev.WriteAt(b, mib); err != nil {
			return err
		}
		if err := dev.Zero(3*mib, mib/2); err != nil {
			return err
		}
		// Reads see the staged writes.
		got := make([]byte, 4*mib)
		if _, err := dev.ReadAt(got, 0); err != nil {
			return err
		}
		want := append(append(append([]byte{}, a[:mib]...), b...), a[:mib]...)
		want = append(append(want, make([]byte, mib/2)...), a[:mib/2]...)
		if !bytes.Equal(got, want) {
			t.Error("a read during staging does not show the staged writes")
		}
		// A flush waits until they are in the file.
		go func() { flushed <- dev.Flush() }()
		// The file itself does not have them yet: the clone copies it.
		raw := make([]byte, 4*mib)
		if _, err := st.f.ReadAt(raw, 0); err != nil {
			return err
		}
		if !bytes.Equal(raw, a) {
			t.Error("a staged write reached the file while the clone ran")
		}
		out, err := os.Create(clonePath)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, io.NewSectionReader(st.f, 0, 4*mib))
		time.Sleep(50 * time.Millisecond)
		select {
		case <-flushed:
			t.Error("flush returned before the staged writes were applied")
		default:
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-flushed; err != nil {
		t.Fatalf("flush: %v", err)
	}
	clone, _ := os.ReadFile(clonePath)
	if !bytes.Equal(clone, a) {
		t.Fatal("the clone holds writes made after staging began")
	}
	raw := make([]byte, 4*mib)
	if _, err := st.f.ReadAt(raw, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[mib:2*mib], b) || !bytes.Equal(raw[3*mib:3*mib+mib/2], make([]byte, mib/2)) || !bytes.Equal(raw[:mib], a[:mib]) {
		t.Fatal("the staged writes are not in the file after the clone")
	}
	if st.staging != nil {
		t.Fatal("staging still on after the clone")
	}
}

// TestStagingKeepsWriteOrder runs a writer through a clone and the apply
// after it, with a stage small enough to spill and to fill up, and checks
// against a model of the volume: every read shows the writes made before
// it, the clone shows the volume as it was when staging began, and at the
// end the file holds the last write to every byte.
func TestStagingKeepsWriteOrder(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { stagingModel(t, seed) })
	}
}

func stagingModel(t *testing.T, seed int64) {
	const size = 8 << 20
	dev := stagingVolume(t, size)
	st := dev.st

	rng := rand.New(rand.NewSource(seed))
	model := make([]byte, size)
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		failed.Store(true)
		t.Errorf(format, args...)
	}
	// op makes one random write or zeroing and, now and then, reads a
	// random range back; only the writer goroutine calls it.
	op := func() {
		off := rng.Int63n(size - 1)
		length := min(1+rng.Int63n(96<<10), size-off)
		if rng.Intn(5) == 0 {
			if err := dev.Zero(off, length); err != nil {
				fail("zero: %v", err)
			}
			clear(model[off : off+length])
		} else {
			p := make([]byte, length)
			rng.Read(p)
			if _, err := dev.WriteAt(p, off); err != nil {
				fail("write: %v", err)
			}
			copy(model[off:], p)
		}
		if rng.Intn(3) == 0 {
			off = rng.Int63n(size - 1)
			length = min(1+rng.Int63n(256<<10), size-off)
			got := make([]byte, length)
			if _, err := dev.ReadAt(got, off); err != nil {
				fail("read: %v", err)
			} else if !bytes.Equal(got, model[off:off+length]) {
				fail("a read of [%d, +%d) does not show the writes made before it", off, length)
			}
		}
	}
	for range 200 {
		op()
	}
	atBarrier := slices.Clone(model)

	// The writer runs on while the clone runs and while the staged writes
	// are applied (slowly, so that new writes race with the apply).
	s := newStage(t.TempDir())
	s.memLimit, s.spillLimit = 256<<10, 2<<20
	s.beforeApply = func() { time.Sleep(200 * time.Microsecond) }
	start, stop := make(chan struct{}), make(chan struct{})
	var ops atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		<-start
		for {
			select {
			case <-stop:
				return
			default:
			}
			op()
			ops.Add(1)
			if failed.Load() {
				return
			}
		}
	}()
	clonePath := filepath.Join(t.TempDir(), "clone")
	var stagedOps, spilled int64
	err := st.withStaging(s, func() error {
		close(start)
		// Until the stage is full (the writer then waits).
		deadline := time.Now().Add(testenv.Patience)
		for time.Now().Before(deadline) {
			s.mu.Lock()
			full := s.spillEnd > s.spillLimit-(96<<10)
			s.mu.Unlock()
			if full {
				break
			}
			time.Sleep(time.Millisecond)
		}
		stagedOps = ops.Load()
		s.mu.Lock()
		spilled = s.spillEnd
		s.mu.Unlock()
		out, err := os.Create(clonePath)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, io.NewSectionReader(st.f, 0, size))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-writerDone
	t.Logf("%d operations while staging (%d KiB spilled), %d during the apply, %d in all after the barrier", stagedOps, spilled>>10, s.newerWrites, ops.Load())
	if spilled == 0 {
		t.Error("nothing was spilled: the test did not reach the spill file")
	}
	if s.newerWrites == 0 {
		t.Error("no write raced with the apply")
	}
	clone, _ := os.ReadFile(clonePath)
	if !bytes.Equal(clone, atBarrier) {
		t.Error("the clone does not show the volume as it was when staging began")
	}
	got := make([]byte, size)
	if _, err := dev.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Error("the volume does not hold the last write to every byte")
	}
	raw := make([]byte, size)
	if _, err := st.f.ReadAt(raw, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, model) {
		t.Error("the file does not hold the last write to every byte")
	}
}

// TestRangeSet checks the set of byte ranges newer writes covered against
// a bitmap.
func TestRangeSet(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	const n = 512
	for round := range 200 {
		var s rangeSet
		var bits [n]bool
		for range 1 + rng.Intn(20) {
			lo := rng.Int63n(n)
			hi := lo + 1 + rng.Int63n(min(64, n-lo))
			s.add(lo, hi)
			for i := lo; i < hi; i++ {
				bits[i] = true
			}
		}
		for i := 1; i < len(s.rs); i++ {
			if s.rs[i-1].hi >= s.rs[i].lo {
				t.Fatalf("round %d: ranges %v not sorted and merged", round, s.rs)
			}
		}
		lo := rng.Int63n(n)
		hi := lo + 1 + rng.Int63n(n-lo)
		var got [n]bool
		prev := int64(-1)
		for _, r := range s.subtract(lo, hi) {
			if r.lo <= prev || r.lo >= r.hi || r.lo < lo || r.hi > hi {
				t.Fatalf("round %d: subtract(%d, %d) gave a bad range %v", round, lo, hi, r)
			}
			prev = r.hi
			for i := r.lo; i < r.hi; i++ {
				got[i] = true
			}
		}
		for i := lo; i < hi; i++ {
			if got[i] == bits[i] {
				t.Fatalf("round %d: byte %d: in set %v, in subtract(%d, %d) %v", round, i, bits[i], lo, hi, got[i])
			}
		}
	}
}

// TestSpillBoundedByFreeSpace: on a small pool (a 512 MiB XFS image) the
// spill file stops at a quarter of the free space, well before its 16 GiB
// bound, and leaves the rest of the pool free.
func TestSpillBoundedByFreeSpace(t *testing.T) {
	dir := testenv.XFSDir(t, 512<<20)
	free := func() int64 {
		var fs unix.Statfs_t
		if err := unix.Statfs(dir, &fs); err != nil {
			t.Fatal(err)
		}
		return int64(fs.Bavail) * fs.Bsize
	}
	before := free()
	s := newStage(dir)
	// Closed before the pool is unmounted, also when the test fails.
	t.Cleanup(func() {
		if s.spill != nil {
			s.spill.Close()
		}
	})
	s.memLimit = 0 // every write spills
	p := make([]byte, 1<<20)
	n := 0
	for s.add(int64(n)<<20, int64(len(p)), p) {
		n++
		if n > 1024 {
			t.Fatalf("the spill file took %d MiB of a pool with %d MiB free", n, before>>20)
		}
	}
	if s.spillEnd > before/4 || s.spillEnd < before/4-(1<<20) {
		t.Fatalf("the spill file stopped at %d MiB with %d MiB free; want a quarter", s.spillEnd>>20, before>>20)
	}
	if s.spill != nil {
		s.spill.Sync()
	}
	if after := free(); after < before/2 {
		t.Fatalf("%d MiB of %d MiB free left while spilling", after>>20, before>>20)
	}
	t.Logf("spilled %d MiB of %d MiB free; %d MiB free after", s.spillEnd>>20, before>>20, free()>>20)
}

// TestFailedFlushBeforeCloneBreaksTheVolume: a flush that fails before a
// reflink snapshot or clone has taken the file's writeback error with it.
// The snapshot or clone fails and leaves nothing, and every later write
// and flush of the volume fails too, rather than a client's flush
// succeeding over writes that may be lost.
func TestFailedFlushBeforeCloneBreaksTheVolume(t *testing.T) {
	d, err := New(Config{Dir: testenv.XFSDir(t, 1<<30) + "/pool", Mode: ModeReflink})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	for _, op := range []string{"snapshot", "clone"} {
		t.Run(op, func(t *testing.T) {
			vol := "v-" + op
			if err := d.CreateVolume(ctx, vol, 1<<20); err != nil {
				t.Fatal(err)
			}
			dev, err := d.OpenVolume(ctx, vol, false)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			data := bytes.Repeat([]byte{7}, 4096)
			if _, err := dev.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			fdatasync = func(int) error { return unix.EIO }
			if op == "snapshot" {
				err = d.CreateSnapshot(ctx, vol, "s")
			} else {
				err = d.CloneVolume(ctx, vol, vol+"-clone")
			}
			fdatasync = unix.Fdatasync
			if !errors.Is(err, unix.EIO) {
				t.Fatalf("%s with a failing flush: %v, want EIO", op, err)
			}
			if _, err := os.Stat(d.snapPath(vol, "s", ".img")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed snapshot left its file: %v", err)
			}
			if _, err := os.Stat(d.volumePath(vol + "-clone")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed clone left its file: %v", err)
			}
			if _, err := dev.WriteAt(data, 4096); !errors.Is(err, unix.EIO) {
				t.Errorf("a write after the failed flush: %v, want it to fail with EIO", err)
			}
			if err := dev.Flush(); !errors.Is(err, unix.EIO) {
				t.Errorf("a flush after the failed flush: %v, want it to fail with EIO", err)
			}
		})
	}
}
