package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
)

func openBackup(t testing.TB, e *engine.Engine, id string, opts engine.ReaderOptions) *engine.BackupReader {
	t.Helper()
	r, err := e.OpenBackup(context.Background(), "backups", id, opts)
	if err != nil {
		t.Fatalf("open backup %s: %v", id, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// readsMatch checks a device against the image at path: read whole in
// pieces of an odd size (so reads straddle chunks), then at random offsets
// with random lengths.
func readsMatch(t testing.TB, dev blockdev.Device, path string, randomReads int) {
	t.Helper()
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if dev.Size() != int64(len(want)) {
		t.Fatalf("device has %d bytes, the image %d", dev.Size(), len(want))
	}
	got := make([]byte, len(want))
	const step = 3*mib + 4097
	for off := int64(0); off < int64(len(got)); off += step {
		b := got[off:min(off+step, int64(len(got)))]
		if _, err := dev.ReadAt(b, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("read whole: differs from the image at byte %d", i)
	}
	rng := rand.New(rand.NewPCG(1, uint64(randomReads)))
	for range randomReads {
		off := rng.Int64N(int64(len(want)))
		n := 1 + rng.Int64N(min(int64(len(want))-off, 2*chunk))
		b := make([]byte, n)
		if _, err := dev.ReadAt(b, off); err != nil {
			t.Fatalf("read %d bytes at %d: %v", n, off, err)
		}
		if i := firstDiff(b, want[off:off+n]); i >= 0 {
			t.Fatalf("read %d bytes at %d: differs from the image at byte %d", n, off, off+int64(i))
		}
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// TestBackupReader: a backup opened for random access reads byte for byte
// as the volume backed up (whole, and at random offsets with unaligned
// lengths), encrypted or not, with an odd size; its extents report the
// all-zero chunks as holes; writes are refused.
func TestBackupReader(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprint("encrypted=", encrypted), func(t *testing.T) {
			const size = 48*mib + 12345
			e, _ := newEngine(t, keyIf(encrypted))
			img := makeImage(t, "mixed", size)
			m := backup(t, e, openFile(t, img, true), "b", "")
			r := openBackup(t, e, "b", engine.ReaderOptions{})
			readsMatch(t, r, img, 200)

			exts, err := r.Extents(0, size)
			if err != nil {
				t.Fatal(err)
			}
			pos := int64(0)
			for _, x := range exts {
				if x.Offset != pos {
					t.Fatalf("extents leave a gap at %d: %+v", pos, exts)
				}
				for i := x.Offset / chunk; i*chunk < x.End(); i++ {
					if hole := m.Chunks[i] == ""; hole != x.Hole {
						t.Errorf("chunk %d: extent hole=%v, manifest chunk %q", i, x.Hole, m.Chunks[i])
					}
				}
				pos = x.End()
			}
			if pos != size {
				t.Fatalf("extents end at %d, not %d", pos, size)
			}
			if _, err := r.WriteAt([]byte{1}, 0); !errors.Is(err, blockdev.ErrReadOnly) {
				t.Fatalf("write: %v, want ErrReadOnly", err)
			}
			if err := r.Zero(0, 4096); !errors.Is(err, blockdev.ErrReadOnly) {
				t.Fatalf("zero: %v, want ErrReadOnly", err)
			}
			if _, err := r.ReadAt(make([]byte, 2), size-1); !errors.Is(err, blockdev.ErrOutOfRange) {
				t.Fatalf("read past the end: %v", err)
			}
			r.Close()
			if _, err := r.ReadAt(make([]byte, 1), 5*chunk/2); !errors.Is(err, engine.ErrClosed) {
				t.Fatalf("read after close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestBackupReaderIncremental: an incremental backup (chunks from its
// parent) and one with chunks in pieces read as the volume did.
func TestBackupReaderIncremental(t *testing.T) {
	const size = 40 * mib
	e, _ := newEngine(t, key)
	img := makeImage(t, "mixed", size)
	backup(t, e, openFile(t, img, true), "full", "")
	change(t, img, size, 2*chunk+mib, chunk, "inc1")
	backup(t, e, openFile(t, img, true), "inc1", "full")
	rs := []engine.Range{
		write(t, img, 2*chunk+4096, mib, "p1"),
		write(t, img, 4*chunk-mib/2, mib, "p2"),
		write(t, img, 7*chunk+12288, 4096, "p3"),
		write(t, img, 9*chunk+mib, mib/4, ""),
	}
	inc2, _ := incremental(t, e, img, "inc2", "inc1", rs)
	if len(inc2.Pieces) == 0 {
		t.Fatal("inc2 has no chunk in pieces")
	}
	readsMatch(t, openBackup(t, e, "inc2", engine.ReaderOptions{}), img, 200)
}

// TestBackupReaderConcurrent: readers racing over the same chunks get the
// right bytes, and each chunk is fetched once while the cache holds them
// all.
func TestBackupReaderConcurrent(t *testing.T) {
	const size = 32 * mib
	e, _ := newEngine(t, nil)
	img := makeImage(t, "random", size)
	backup(t, e, openFile(t, img, true), "b", "")
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	r := openBackup(t, e, "b", engine.ReaderOptions{CacheChunks: 16, NoReadAhead: true})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 200 {
				off := rng.Int64N(size)
				n := 1 + rng.Int64N(min(size-off, mib))
				b := make([]byte, n)
				if _, err := r.ReadAt(b, off); err != nil {
					errs <- err
					return
				}
				if i := firstDiff(b, want[off:off+n]); i >= 0 {
					errs <- fmt.Errorf("read %d at %d differs at %d", n, off, off+int64(i))
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
	if st := r.Stats(); st.Fetches != size/chunk {
		t.Errorf("fetched %d chunks of %d (hits %d): want each once", st.Fetches, size/chunk, st.Hits)
	}
}

// TestBackupReaderReadAhead: a sequential reader has the next chunks
// fetched before it asks for them.
func TestBackupReaderReadAhead(t *testing.T) {
	const size = 32 * mib
	e, _ := newEngine(t, nil)
	img := makeImage(t, "text", size)
	backup(t, e, openFile(t, img, true), "b", "")
	r := openBackup(t, e, "b", engine.ReaderOptions{})
	readsMatch(t, r, img, 0)
	st := r.Stats()
	if st.Prefetches == 0 || st.Hits == 0 {
		t.Errorf("a sequential read of %d chunks: %+v, want chunks fetched ahead and hit", size/chunk, st)
	}
	if st.Fetches > size/chunk {
		t.Errorf("fetched %d chunks of %d", st.Fetches, size/chunk)
	}
}

// TestBackupReaderMissingChunk: a deleted chunk fails only the reads that
// touch it, with a *ChunkError naming it, every time; the rest reads on.
func TestBackupReaderMissingChunk(t *testing.T) {
	const size = 16 * mib
	e, dir := newEngine(t, nil)
	img := makeImage(t, "random", size)
	m := backup(t, e, openFile(t, img, true), "b", "")
	want, _ := os.ReadFile(img)
	id := m.Chunks[2]
	if err := os.Remove(filepath.Join(dir, "backups", "chunks", id[:2], id)); err != nil {
		t.Fatal(err)
	}
	r := openBackup(t, e, "b", engine.ReaderOptions{})
	for k := range 2 {
		b := make([]byte, 8192)
		_, err := r.ReadAt(b, 3*chunk-4096)
		var ce *engine.ChunkError
		if !errors.As(err, &ce) || ce.ChunkID != id || ce.Offset != 2*chunk {
			t.Fatalf("read %d across the missing chunk: %v, want a *ChunkError naming %s at %d", k, err, id, 2*chunk)
		}
		for _, off := range []int64{0, chunk + 17, 3 * chunk} {
			if _, err := r.ReadAt(b, off); err != nil {
				t.Fatalf("read at %d, away from the missing chunk: %v", off, err)
			}
			if !bytes.Equal(b, want[off:off+8192]) {
				t.Fatalf("read at %d differs", off)
			}
		}
	}
}

// TestBackupReaderOnS3: the reader on a real S3 server (versitygw),
// encrypted, incremental.
func TestBackupReaderOnS3(t *testing.T) {
	srv := s3test.Start(t)
	repo, err := s3.New(context.Background(), srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	const size = 24*mib + 4096
	img := makeImage(t, "mixed", size)
	backup(t, e, openFile(t, img, true), "full", "")
	rs := []engine.Range{write(t, img, 2*chunk+4096, mib, "s3a"), write(t, img, 3*chunk+8192, 4096, "s3b")}
	incremental(t, e, img, "inc", "full", rs)
	readsMatch(t, openBackup(t, e, "inc", engine.ReaderOptions{}), img, 100)
}
