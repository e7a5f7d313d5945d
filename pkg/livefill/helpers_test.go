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
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/livefill"
	"github.com/blockvault/blockvault/pkg/repository/posix"
)

const mib = int64(1) << 20

// makeImage writes a sparse image of size bytes at path: the first 4 MiB
// of every 16 MiB a hole, the rest per 1 MiB a hole, then compressible
// text, then three of random data, over and over.
func makeImage(t testing.TB, path string, size int64, seedName string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte([]byte(fmt.Sprintf("%-32s", seedName))))
	buf := make([]byte, mib)
	for off, k := int64(0), 0; off < size; off, k = off+mib, k+1 {
		b := buf[:min(mib, size-off)]
		switch {
		case k%16 < 4 || k%5 == 0:
			continue
		case k%5 == 1:
			for i := range b {
				b[i] = "live fill "[i%10]
			}
			rng.Read(b[:64])
		default:
			rng.Read(b)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// fixture is a backup of an image in a posix repository.
type fixture struct {
	dir  string // everything lives here
	repo string // the repository's directory
	img  string // the volume backed up
	size int64
	e    *engine.Engine
}

// newFixture backs up an image of size bytes as backup "b" (with the
// repository encrypted when key is not nil).
func newFixture(t testing.TB, size int64, key []byte) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{dir: dir, repo: filepath.Join(dir, "repo"), img: filepath.Join(dir, "volume.img"), size: size}
	makeImage(t, fx.img, size, "volume")
	fx.e = openEngine(t, fx.repo, key)
	src, err := blockdev.OpenFile(fx.img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := fx.e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: "b", VolumeID: "v"}); err != nil {
		t.Fatal(err)
	}
	return fx
}

func openEngine(t testing.TB, dir string, key []byte) *engine.Engine {
	t.Helper()
	repo, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (fx *fixture) reader(t testing.TB) *engine.BackupReader {
	t.Helper()
	r, err := fx.e.OpenBackup(context.Background(), "backups", "b", engine.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (fx *fixture) want(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(fx.img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// emptyFile creates a sparse file of size bytes and opens it.
func emptyFile(t testing.TB, path string, size int64) *blockdev.File {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return openFile(t, path)
}

func openFile(t testing.TB, path string) *blockdev.File {
	t.Helper()
	d, err := blockdev.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func open(t testing.TB, target, source blockdev.Device, state string, opts livefill.Options) *livefill.Device {
	t.Helper()
	d, err := livefill.Open(target, source, state, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// readAll reads a device whole, in reads of an odd size.
func readAll(t testing.TB, d blockdev.Device) []byte {
	t.Helper()
	got := make([]byte, d.Size())
	const step = mib + 12347
	for off := int64(0); off < d.Size(); off += step {
		if _, err := d.ReadAt(got[off:min(off+step, d.Size())], off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	return got
}

// same fails the test where got and want differ, outside the ranges skip.
func same(t testing.TB, what string, got, want []byte, skip ...[2]int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	got, want = bytes.Clone(got), bytes.Clone(want)
	for _, s := range skip {
		clear(got[s[0]:s[1]])
		clear(want[s[0]:s[1]])
	}
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: differs at byte %d (region %d): %#x, want %#x", what, i, int64(i)/mib, got[i], want[i])
		}
	}
}

// slowDevice delays each read of a device, so that a fill takes a while.
type slowDevice struct {
	blockdev.Device
	delay time.Duration
}

func (d *slowDevice) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(d.delay)
	return d.Device.ReadAt(p, off)
}

// faultyDevice fails the reads (and block status) of a device that touch
// [Lo, Hi) while Fail is set, and counts them.
type faultyDevice struct {
	blockdev.Device
	lo, hi int64
	fail   atomic.Bool
	failed atomic.Int64
}

var errInjected = errors.New("injected source error")

func (d *faultyDevice) hit(off, n int64) bool {
	if d.fail.Load() && off < d.hi && off+n > d.lo {
		d.failed.Add(1)
		return true
	}
	return false
}

func (d *faultyDevice) ReadAt(p []byte, off int64) (int, error) {
	if d.hit(off, int64(len(p))) {
		return 0, errInjected
	}
	return d.Device.ReadAt(p, off)
}

// model is what a device should hold: the backup, with the writes made.
type model struct {
	mu sync.Mutex
	b  []byte
}

func (m *model) write(p []byte, off int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.b[off:], p)
}

func (m *model) zero(off, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.b[off : off+n])
}

func (m *model) read(off, n int64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b[off : off+n])
}

func (m *model) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b)
}

func engineReaderOptions() engine.ReaderOptions { return engine.ReaderOptions{} }
