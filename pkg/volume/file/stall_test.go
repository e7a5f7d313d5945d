package file_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/blockvault/blockvault/pkg/volume/file"
)

// BenchmarkSnapshotStall measures what a writer feels while snapshots are
// taken under write load: a writer does 64 KiB writes over a 1 GiB volume
// (half of it written beforehand) while snapshots are taken every 20 ms,
// as fast as it can (memory speed, the worst case) and paced at 256 MiB/s
// (what a client on a ~2 Gbit/s link writes over NBD) and at 64 MiB/s; and
// paced so with a snapshot every second, nearer a backup's cadence.
// Reported: the longest single write, how many writes took over 10 ms, the
// longest snapshot creation. The
// baseline runs the same writer with no snapshots, to tell the stalls that
// snapshots cause from those of the filesystem's own writeback.
//
// Reflink runs use a loop-mounted XFS image the benchmark creates, or,
// when BLOCKVAULT_BENCH_XFS names a directory on a mounted XFS filesystem
// with reflink (a real disk, or zram: docs/benchmarks.md), that directory.
// A snapshot writes the volume's dirty data to the disk, so a writer
// faster than the disk can take it waits for the disk whatever the driver
// does: the 64 MiB/s runs tell that apart on a slow disk.
func BenchmarkSnapshotStall(b *testing.B) {
	type run struct {
		mode      string
		snapshots bool
		rate      int64 // writer bytes/s; 0 = as fast as it can
		every     time.Duration
	}
	var runs []run
	for _, mode := range []string{file.ModeCopyBeforeWrite, file.ModeReflink} {
		runs = append(runs, run{mode, true, 0, 20 * time.Millisecond})
		for _, rate := range []int64{256 << 20, 64 << 20} {
			runs = append(runs, run{mode, true, rate, 20 * time.Millisecond}, run{mode, true, rate, time.Second})
		}
		runs = append(runs, run{mode, false, 0, 20 * time.Millisecond})
	}
	for _, c := range runs {
		mode := c.mode
		name := mode
		switch {
		case !c.snapshots:
			name += "/baseline-no-snapshots"
		case c.rate > 0:
			name += fmt.Sprintf("/writer-%dMiBps", c.rate>>20)
			if c.every >= time.Second {
				name += fmt.Sprintf("-every-%v", c.every)
			}
		default:
			name += "/writer-unthrottled"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			if mode == file.ModeReflink {
				if x := os.Getenv("BLOCKVAULT_BENCH_XFS"); x != "" {
					var err error
					if dir, err = os.MkdirTemp(x, "stall-"); err != nil {
						b.Fatalf("BLOCKVAULT_BENCH_XFS: %v", err)
					}
					defer os.RemoveAll(dir)
				} else {
					dir = testenv.XFSDir(b, 4<<30)
				}
			}
			d, err := file.New(file.Config{Dir: dir + "/pool", Mode: mode})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			ctx := context.Background()
			const size = 1 << 30
			d.CreateVolume(ctx, "v", size)
			dev, _ := d.OpenVolume(ctx, "v", false)
			defer dev.Close()
			buf := make([]byte, 1<<20)
			for off := int64(0); off < size/2; off += int64(len(buf)) {
				dev.WriteAt(buf, off)
			}
			var stop atomic.Bool
			var maxWrite atomic.Int64
			var writes, slow atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := make([]byte, 64<<10)
				start := time.Now()
				for i := int64(0); !stop.Load(); i++ {
					if c.rate > 0 {
						// Pace like a client on a link of that speed.
						due := start.Add(time.Duration(float64(i*int64(len(w))) / float64(c.rate) * float64(time.Second)))
						time.Sleep(time.Until(due))
					}
					off := (i * 7919 * (64 << 10)) % size
					t0 := time.Now()
					dev.WriteAt(w, off)
					el := int64(time.Since(t0))
					if el > maxWrite.Load() {
						maxWrite.Store(el)
					}
					if el > int64(10*time.Millisecond) {
						slow.Add(1)
					}
					writes.Add(1)
				}
			}()
			var maxSnap time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				time.Sleep(c.every)
				if !c.snapshots {
					continue
				}
				id := fmt.Sprintf("s%d", i)
				t0 := time.Now()
				if err := d.CreateSnapshot(ctx, "v", id); err != nil {
					b.Fatal(err)
				}
				maxSnap = max(maxSnap, time.Since(t0))
				d.DeleteSnapshot(ctx, "v", id)
			}
			stop.Store(true)
			wg.Wait()
			b.ReportMetric(float64(maxWrite.Load())/1e6, "max-write-ms")
			b.ReportMetric(float64(maxSnap)/1e6, "max-snapshot-ms")
			b.ReportMetric(float64(slow.Load()), "writes-over-10ms")
			b.ReportMetric(float64(writes.Load())/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
