package blockdev_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/testenv"
)

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i/4096)
	}
	return p
}

// TestFileLargeWritesSkipThePageCache: a whole-chunk write to a file
// device opened for bulk writes leaves nothing in the page cache, a small
// one goes through it, and reads through the device see every write,
// including a direct write over pages the cache held.
func TestFileLargeWritesSkipThePageCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.img")
	const size = 16 << 20
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	probe, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if w := blockdev.NewDirectWriter(probe); !w.Enabled() {
		testenv.Missing(t, "the filesystem of %s takes no direct I/O (statx STATX_DIOALIGN); the test needs one that does (ext4, XFS)", path)
	}
	probe.Close()

	dev, err := blockdev.OpenFileForBulkWrites(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()

	// A 4 MiB chunk at 4 MiB: direct.
	chunk := pattern(4<<20, 1)
	if _, err := dev.WriteAt(chunk, 4<<20); err != nil {
		t.Fatal(err)
	}
	if n := testenv.CachedPages(t, path, 4<<20, 4<<20); n != 0 {
		t.Errorf("after a 4 MiB aligned write, %d of its pages are in the page cache; want 0 (written directly)", n)
	}
	// 64 KiB at 0: buffered.
	small := pattern(64<<10, 7)
	if _, err := dev.WriteAt(small, 0); err != nil {
		t.Fatal(err)
	}
	if n := testenv.CachedPages(t, path, 0, 64<<10); n != 16 {
		t.Errorf("after a 64 KiB write, %d of its 16 pages are in the page cache; want all (buffered)", n)
	}
	// A large write at an unaligned offset: buffered, and correct.
	odd := pattern(1<<20, 9)
	if _, err := dev.WriteAt(odd, 9<<20+512); err != nil {
		t.Fatal(err)
	}
	// A direct write over a range the cache holds (read just before):
	// reads must see the new data, not the cached old one.
	old := make([]byte, 4<<20)
	if _, err := dev.ReadAt(old, 4<<20); err != nil {
		t.Fatal(err)
	}
	if testenv.CachedPages(t, path, 4<<20, 4<<20) == 0 {
		t.Fatal("reading the chunk back cached none of it; the test cannot check coherence")
	}
	chunk2 := pattern(4<<20, 100)
	if _, err := dev.WriteAt(chunk2, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := dev.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want[4<<20:], chunk2)
	copy(want[0:], small)
	copy(want[9<<20+512:], odd)
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("device reads differ from what was written, first at byte %d: got %d, want %d", i, got[i], want[i])
			}
		}
	}
	// And another descriptor (a backup reading the file) sees the same.
	other, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(other, want) {
		t.Fatal("a second descriptor reads other data than was written")
	}
}

// TestDirectWriterLeavesSmallAndUnalignedWrites: only large writes aligned
// in offset and length are taken (unaligned memory is copied).
func TestDirectWriterLeavesSmallAndUnalignedWrites(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := blockdev.NewDirectWriter(f)
	defer w.Close()
	if !w.Enabled() {
		testenv.Missing(t, "the filesystem of %s takes no direct I/O (statx STATX_DIOALIGN); the test needs one that does (ext4, XFS)", f.Name())
	}
	buf := make([]byte, 2<<20+4096) // large allocations are page-aligned
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	cases := []struct {
		name string
		p    []byte
		off  int64
		want bool
	}{
		{"1 MiB aligned", buf[:1<<20], 0, true},
		{"below DirectMin", buf[:1<<20-4096], 0, false},
		{"unaligned offset", buf[:1<<20], 512, false},
		{"unaligned length", buf[:1<<20+512], 0, false},
		{"unaligned memory (through an aligned copy)", buf[1 : 1+1<<20], 0, true},
	}
	for _, c := range cases {
		done, err := w.WriteAt(c.p, c.off)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if done != c.want {
			t.Errorf("%s: written directly = %v, want %v", c.name, done, c.want)
		}
	}
	// The last write went through the aligned copy: the file holds it.
	got := make([]byte, 1<<20)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf[1:1+1<<20]) {
		t.Error("a write of unaligned memory left other data in the file")
	}
}
