package engine_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository/posix"
)

// TestNoAllocationPerChunk: what a backup and a restore allocate does not
// grow with the number of chunks (issue 9: no per-chunk allocations on the
// hot path). Random data, encrypted: every chunk is sealed, stored and read
// back. A chunk's buffers are 4 MiB, so an allocation per chunk would add
// up to more than the volume; what two workers, their putters and the
// queue between them keep (16 chunks: read and compression buffers, 12
// object buffers; and zstd's state) comes to less than half of this one.
func TestNoAllocationPerChunk(t *testing.T) {
	const size = 256 << 20
	img := makeImage(t, "random", size)
	repo, err := posix.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{Key: make([]byte, 32), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	src := openFile(t, img, true)
	backup := heapAllocated(func() {
		if _, err := e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: "b", VolumeID: "v"}); err != nil {
			t.Fatal(err)
		}
	})
	target := emptyTarget(t, size)
	dst := openFile(t, target, false)
	restore := heapAllocated(func() {
		if err := e.Restore(context.Background(), "backups", "b", dst, nil); err != nil {
			t.Fatal(err)
		}
	})
	sameFiles(t, img, target)
	t.Logf("a backup of %d MiB allocated %d MiB, its restore %d MiB", size>>20, backup>>20, restore>>20)
	if backup > size/2 {
		t.Errorf("a backup of %d MiB allocated %d MiB: more than half the volume, so something is allocated per chunk", size>>20, backup>>20)
	}
	if restore > size/2 {
		t.Errorf("a restore of %d MiB allocated %d MiB: more than half the volume, so something is allocated per chunk", size>>20, restore>>20)
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
