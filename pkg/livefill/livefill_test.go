package livefill_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/livefill"
)

// TestReadBeforeFill: the device reads byte for byte as the backup before
// anything is filled, and its target is the backup once Fill returns; a
// fill reports its progress, the state says it is complete, and the
// device reopens complete without a source.
func TestReadBeforeFill(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprint("encrypted=", encrypted), func(t *testing.T) {
			var key []byte
			if encrypted {
				key = bytes.Repeat([]byte("k"), 32)
			}
			const size = 24*mib + 5000 // a short last region
			fx := newFixture(t, size, key)
			want := fx.want(t)
			targetPath := filepath.Join(fx.dir, "target.img")
			target := emptyFile(t, targetPath, size)
			state := filepath.Join(fx.dir, "state")
			d := open(t, target, fx.reader(t), state, livefill.Options{SourceID: "b", TargetZeroed: true})

			same(t, "read before the fill", readAll(t, d), want)
			if done, _ := d.Progress(); done != 0 || d.Complete() {
				t.Fatalf("reads filled %d bytes (complete %v): reads must not write the target", done, d.Complete())
			}
			exts, err := d.Extents(0, size)
			if err != nil || len(exts) < 2 || !exts[0].Hole || exts[0].Length != 4*mib {
				t.Fatalf("extents before the fill: %v %+v, want the first 4 MiB a hole", err, exts)
			}

			var last [2]int64
			if err := d.Fill(context.Background(), func(done, total int64) { last = [2]int64{done, total} }); err != nil {
				t.Fatal(err)
			}
			if last != [2]int64{size, size} || !d.Complete() {
				t.Fatalf("after the fill: progress %v, complete %v", last, d.Complete())
			}
			same(t, "the device after the fill", readAll(t, d), want)
			got, _ := os.ReadFile(targetPath)
			same(t, "the target after the fill", got, want)
			st, err := livefill.ReadState(state)
			if err != nil || !st.Complete() || st.SourceID != "b" || st.Size != size {
				t.Fatalf("state after the fill: %+v, %v", st, err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d2 := open(t, target, nil, state, livefill.Options{SourceID: "b"})
			if !d2.Complete() {
				t.Fatal("reopened: not complete")
			}
			same(t, "reopened complete", readAll(t, d2), want)
		})
	}
}

// TestWritesDuringFill: writes, zeroes and trims at unaligned offsets from
// several goroutines race the fill from start to end (and reads check each write at once);
// every one survives the fill, and the rest is the backup.
func TestWritesDuringFill(t *testing.T) {
	const size = 32 * mib
	fx := newFixture(t, size, nil)
	m := &model{b: fx.want(t)}
	targetPath := filepath.Join(fx.dir, "target.img")
	target := emptyFile(t, targetPath, size)
	src := &slowDevice{Device: fx.reader(t), delay: 20 * time.Millisecond}
	d := open(t, target, src, filepath.Join(fx.dir, "state"),
		livefill.Options{SourceID: "b", TargetZeroed: true, RegionSize: 256 << 10, SyncEvery: 2 * mib, Workers: 3})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fillErr := make(chan error, 1)
	go func() { fillErr <- d.Fill(ctx, nil) }()

	// Writer w owns the 64 KiB slots s with s%4 == w: its writes never
	// overlap another's, so the model is exact.
	const slot = 64 << 10
	var wg sync.WaitGroup
	var duringFill atomic.Int64
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			// At least 40 writes each, and on until the fill ends.
			for k := 0; k < 40 || !d.Complete() && k < 5000; k++ {
				s := rng.Int64N(size/slot/4)*4 + int64(w)
				off := s*slot + rng.Int64N(slot-1)
				n := 1 + rng.Int64N(s*slot+slot-off)
				var err error
				switch k % 6 {
				case 4:
					err = d.Zero(off, n)
					m.zero(off, n)
				case 5:
					err = d.Trim(off, n)
					m.zero(off, n)
				default:
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.Uint32() | 1)
					}
					_, err = d.WriteAt(p, off)
					m.write(p, off)
				}
				if err != nil {
					errs <- fmt.Errorf("write %d of writer %d: %w", k, w, err)
					return
				}
				if !d.Complete() {
					duringFill.Add(1)
				}
				got := make([]byte, n)
				if _, err := d.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if want := m.read(off, n); !bytes.Equal(got, want) {
					errs <- fmt.Errorf("writer %d: read back %d bytes at %d differ from what was written", w, n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d writes returned before the fill ended", duringFill.Load())
	if duringFill.Load() < 10 {
		t.Errorf("only %d writes raced the fill", duringFill.Load())
	}
	if err := <-fillErr; err != nil {
		t.Fatal(err)
	}
	want := m.snapshot()
	same(t, "the device after the fill", readAll(t, d), want)
	got, _ := os.ReadFile(targetPath)
	same(t, "the target after the fill", got, want)
}

// TestSourceErrors: a source that fails fails the reads (and the writes
// that need it) of the regions it fails on, and no other; the fill gives
// up after RetryFor, marking nothing it did not write, and completes once
// the source is back.
func TestSourceErrors(t *testing.T) {
	const size = 16 * mib
	fx := newFixture(t, size, nil)
	want := fx.want(t)
	targetPath := filepath.Join(fx.dir, "target.img")
	target := emptyFile(t, targetPath, size)
	src := &faultyDevice{Device: fx.reader(t), lo: 6 * mib, hi: 7 * mib}
	src.fail.Store(true)
	d := open(t, target, src, filepath.Join(fx.dir, "state"),
		livefill.Options{SourceID: "b", RetryFor: 300 * time.Millisecond})

	b := make([]byte, 8192)
	if _, err := d.ReadAt(b, 7*mib-4096); !errors.Is(err, errInjected) {
		t.Fatalf("a read of the failing region: %v, want the source's error", err)
	}
	if _, err := d.WriteAt(b[:10], 6*mib+100); !errors.Is(err, errInjected) {
		t.Fatalf("a partial write into the failing region: %v, want the source's error", err)
	}
	if _, err := d.ReadAt(b, 8*mib); err != nil || !bytes.Equal(b, want[8*mib:8*mib+8192]) {
		t.Fatalf("a read elsewhere: %v", err)
	}
	// A write covering the failing region whole needs nothing of it.
	whole := bytes.Repeat([]byte{7}, int(mib))
	if _, err := d.WriteAt(whole, 6*mib); err != nil {
		t.Fatalf("a write of the whole failing region: %v", err)
	}
	copy(want[6*mib:], whole)
	src.lo, src.hi = 10*mib, 11*mib

	start := time.Now()
	err := d.Fill(context.Background(), nil)
	if !errors.Is(err, errInjected) {
		t.Fatalf("fill with a failing source: %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Errorf("the fill gave up after %v, before RetryFor", time.Since(start))
	}
	if done, total := d.Progress(); done >= total || d.Complete() {
		t.Fatalf("after a failed fill: %d of %d filled, complete %v", done, total, d.Complete())
	}
	st, _ := livefill.ReadState(filepath.Join(fx.dir, "state"))
	if st.Filled == 0 || st.Complete() {
		t.Fatalf("after a failed fill the state has %d of %d regions", st.Filled, st.Regions)
	}
	// The region that failed reads as an error still; the others are filled.
	if _, err := d.ReadAt(b, 10*mib); !errors.Is(err, errInjected) {
		t.Fatalf("a read of the region the fill failed on: %v", err)
	}
	src.fail.Store(false)
	if err := d.Fill(context.Background(), nil); err != nil || !d.Complete() {
		t.Fatalf("fill once the source is back: %v (complete %v)", err, d.Complete())
	}
	same(t, "the device", readAll(t, d), want)
}

// TestStateChecks: a state file is refused for another source, another
// region size, or when damaged.
func TestStateChecks(t *testing.T) {
	const size = 4 * mib
	fx := newFixture(t, size, nil)
	target := emptyFile(t, filepath.Join(fx.dir, "target.img"), size)
	state := filepath.Join(fx.dir, "state")
	d, err := livefill.Open(target, fx.reader(t), state, livefill.Options{SourceID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte("x"), 12345); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, c := range []struct {
		name string
		opts livefill.Options
		err  error
	}{
		{"another source", livefill.Options{SourceID: "other"}, livefill.ErrMismatch},
		{"another region size", livefill.Options{SourceID: "b", RegionSize: 64 << 10}, livefill.ErrMismatch},
		{"the same", livefill.Options{SourceID: "b"}, nil},
	} {
		d, err := livefill.Open(target, fx.reader(t), state, c.opts)
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
		if err == nil {
			b := make([]byte, 1)
			d.ReadAt(b, 12345)
			if b[0] != 'x' {
				t.Errorf("reopened: the write is lost")
			}
			d.Close()
		}
	}
	if st, err := livefill.ReadState(state); err != nil || st.Filled != 1 {
		t.Fatalf("state: %+v, %v; want one region filled", st, err)
	}
	f, _ := os.OpenFile(state, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, 20)
	f.Close()
	if _, err := livefill.Open(target, fx.reader(t), state, livefill.Options{SourceID: "b"}); !errors.Is(err, livefill.ErrBadState) {
		t.Fatalf("a damaged header: %v, want ErrBadState", err)
	}
	if _, err := livefill.Open(target, nil, filepath.Join(fx.dir, "none"), livefill.Options{}); err == nil {
		t.Fatal("a new fill without a source was opened")
	}
	_ = blockdev.ErrReadOnly
}

// TestFillRate: a fill paced at 8 MiB a second has not copied a 24 MiB
// backup half a second after it started (it cannot be faster than its
// pace), and it still completes with the backup's bytes.
func TestFillRate(t *testing.T) {
	const size = 24 * mib
	fx := newFixture(t, size, nil)
	target := emptyFile(t, filepath.Join(fx.dir, "target.img"), size)
	d := open(t, target, fx.reader(t), filepath.Join(fx.dir, "state"), livefill.Options{SourceID: "b", TargetZeroed: true, Rate: 8 * mib})
	done := make(chan error, 1)
	go func() { done <- d.Fill(context.Background(), nil) }()
	time.Sleep(500 * time.Millisecond)
	if filled, _ := d.Progress(); filled >= size || d.Complete() {
		t.Fatalf("half a second into a fill paced at 8 MiB/s, %d of %d bytes filled", filled, int64(size))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	same(t, "the paced fill", readAll(t, d), fx.want(t))
}

// TestProgressOneCallAtATime: the workers of a fill never call progress at
// once, however slow it is (the volume manager's callback keeps state).
func TestProgressOneCallAtATime(t *testing.T) {
	const size = 24 * mib
	fx := newFixture(t, size, nil)
	target := emptyFile(t, filepath.Join(fx.dir, "target.img"), size)
	d := open(t, target, fx.reader(t), filepath.Join(fx.dir, "state"), livefill.Options{SourceID: "b", TargetZeroed: true, Rate: 16 * mib})
	var inside atomic.Bool
	var calls, overlaps atomic.Int64
	err := d.Fill(context.Background(), func(done, total int64) {
		calls.Add(1)
		if !inside.CompareAndSwap(false, true) {
			overlaps.Add(1)
			return
		}
		time.Sleep(300 * time.Millisecond) // longer than the 200 ms between reports
		inside.Store(false)
	})
	if err != nil {
		t.Fatal(err)
	}
	if overlaps.Load() != 0 || calls.Load() < 2 {
		t.Fatalf("%d of %d progress calls overlapped another", overlaps.Load(), calls.Load())
	}
}
