package engine_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/blockvault/blockvault/pkg/engine"
)

// TestNoAllocationPerChunk: what a backup and a restore allocate does not
// grow with the number of chunks (issue 9: no per-chunk allocations on the
// hot path). Random data, encrypted: every chunk is sealed, stored and read
// back. A chunk's buffers are 4 MiB, so an allocation per chunk would add
// at least that much per chunk; the test allows 256 KiB (ids, the zstd
// frames' bookkeeping, the repository's file handles).
func TestNoAllocationPerChunk(t *testing.T) {
	const small, large = 16 * mib, 128 * mib
	chunks := (large - small) / int64(engine.DefaultChunkSize)
	measure := func(size int64) (backup, restore uint64) {
		img := makeImage(t, "random", size)
		e, _ := newEngine(t, make([]byte, 32))
		src := openFile(t, img, true)
		backup = heapAllocated(func() {
			if _, err := e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: "b", VolumeID: "v"}); err != nil {
				t.Fatal(err)
			}
		})
		target := emptyTarget(t, size)
		dst := openFile(t, target, false)
		restore = heapAllocated(func() {
			if err := e.Restore(context.Background(), "backups", "b", dst, nil); err != nil {
				t.Fatal(err)
			}
		})
		sameFiles(t, img, target)
		return backup, restore
	}
	b1, r1 := measure(small)
	b2, r2 := measure(large)
	perChunk := func(a, b uint64) int64 { return (int64(b) - int64(a)) / chunks }
	t.Logf("allocated: backup %d MiB for %d MiB, %d MiB for %d MiB; restore %d and %d MiB", b1>>20, small>>20, b2>>20, large>>20, r1>>20, r2>>20)
	if n := perChunk(b1, b2); n > 256<<10 {
		t.Errorf("a backup allocates %d KiB more per chunk", n>>10)
	}
	if n := perChunk(r1, r2); n > 256<<10 {
		t.Errorf("a restore allocates %d KiB more per chunk", n>>10)
	}
}

// heapAllocated is how many bytes of heap fn allocated.
func heapAllocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
