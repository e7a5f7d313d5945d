package engine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/testenv"
	"golang.org/x/sys/unix"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30

	// block is the unit of the test images' layouts.
	block = 4 * mib
	// chunk is the engine's chunk size, which the tests use.
	chunk = int64(engine.DefaultChunkSize)
)

var key = bytes.Repeat([]byte("k"), 32)

// imageKinds are the images of the round trips: "sparse" (a 4 MiB island of
// random data every 64 MiB, the rest holes), "zero" (all holes), "random",
// "text" (compressible text-like lines), "mixed" (per 16 MiB: 8 MiB hole,
// 4 MiB random, 4 MiB text).
var imageKinds = []string{"sparse", "zero", "random", "text", "mixed"}

// blockContent says what makeImage writes in the i-th 4 MiB block of an
// image: "" (a hole), "random" or "text".
func blockContent(kind string, i int64) string {
	switch kind {
	case "sparse":
		if i%16 == 2 {
			return "random"
		}
	case "random", "text":
		return kind
	case "mixed":
		switch i % 4 {
		case 2:
			return "random"
		case 3:
			return "text"
		}
	case "zero":
	default:
		panic("unknown image kind " + kind)
	}
	return ""
}

// imageBytes counts the bytes of each content of an image.
func imageBytes(kind string, size int64) (random, text int64) {
	for off := int64(0); off < size; off += block {
		switch blockContent(kind, off/block) {
		case "random":
			random += min(block, size-off)
		case "text":
			text += min(block, size-off)
		}
	}
	return random, text
}

// dataChunks counts the chunks of cs bytes of an image that hold data.
func dataChunks(kind string, size, cs int64) int64 {
	n := int64(0)
	for c := int64(0); c*cs < size; c++ {
		for b := c * cs / block; b*block < min((c+1)*cs, size); b++ {
			if blockContent(kind, b) != "" {
				n++
				break
			}
		}
	}
	return n
}

func seed(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// phrases are the 512 sequences of three of eight words.
var phrases = func() (p [512]string) {
	words := [8]string{"block ", "vault ", "backup ", "snapshot ", "volume ", "restore ", "chunk ", "\n"}
	for i := range p {
		p[i] = words[i&7] + words[i>>3&7] + words[i>>6]
	}
	return p
}()

// fillText fills b with lines of words drawn at random: compressible, yet
// no two blocks alike.
func fillText(rng *rand.ChaCha8, b []byte) {
	p := 0
	for p < len(b) {
		r := rng.Uint64()
		for k := 0; k < 7 && p < len(b); k++ {
			p += copy(b[p:], phrases[r&511])
			r >>= 9
		}
	}
}

// makeImage writes a sparse image of size bytes of a kind (see imageKinds)
// and returns its path. The content is deterministic; holes are left as
// holes and no more than one block is held in memory.
func makeImage(t testing.TB, kind string, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), kind+".img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8(seed(kind))
	buf := make([]byte, block)
	for off := int64(0); off < size; off += block {
		b := buf[:min(block, size-off)]
		switch blockContent(kind, off/block) {
		case "":
			continue
		case "random":
			rng.Read(b)
		case "text":
			fillText(rng, b)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// change overwrites n bytes of an image with random data, in runs of run
// bytes at distinct run-aligned offsets drawn from seedName (the last run is
// shorter when run does not divide n), and returns how many chunks it
// touched.
func change(t testing.TB, path string, size, n, run int64, seedName string) int64 {
	t.Helper()
	rng := rand.New(rand.NewChaCha8(seed(seedName)))
	data := rand.NewChaCha8(seed(seedName + "/data"))
	runs := (n + run - 1) / run
	slots := rng.Perm(int(size / run))
	if runs > int64(len(slots)) {
		t.Fatalf("cannot change %d bytes of %d in runs of %d", n, size, run)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, run)
	touched := map[int64]bool{}
	for k := int64(0); k < runs; k++ {
		off := int64(slots[k]) * run
		b := buf[:min(run, n-k*run)]
		data.Read(b)
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		for c := off / chunk; c*chunk < off+int64(len(b)); c++ {
			touched[c] = true
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return int64(len(touched))
}

func openFile(t testing.TB, path string, ro bool) *blockdev.File {
	t.Helper()
	d, err := blockdev.OpenFile(path, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// scratchDir returns a fresh directory for a round trip's repository and
// restore targets: on /dev/shm when it is a tmpfs with room for need bytes
// and 1 GiB to spare, else in the test's temporary directory. The round
// trips check content, not durability; on a disk their time goes to the
// posix repository's fsync of each chunk object (the benchmarks measure
// that, and pkg/repository/posix tests the durability).
func scratchDir(t testing.TB, need int64) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err == nil && st.Type == unix.TMPFS_MAGIC && int64(st.Bavail)*st.Bsize >= need+gib {
		if dir, err := os.MkdirTemp("/dev/shm", "blockvault-engine-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

func newEngine(t testing.TB, k []byte) (*engine.Engine, string) {
	t.Helper()
	dir := t.TempDir()
	return newEngineIn(t, dir, k), dir
}

// newEngineIn returns an engine on a posix repository in dir.
func newEngineIn(t testing.TB, dir string, k []byte) *engine.Engine {
	t.Helper()
	repo, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// emptyTarget creates a file of size bytes that is one hole.
func emptyTarget(t testing.TB, size int64) string {
	t.Helper()
	return emptyTargetIn(t, t.TempDir(), size)
}

// emptyTargetIn creates a file of size bytes that is one hole, in dir.
func emptyTargetIn(t testing.TB, dir string, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "target-*.img")
	if err != nil {
		t.Fatal(err)
	}
	p := f.Name()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// hasData reports whether f has data in [off, off+n), false when that
// range lies in a hole (SEEK_DATA); without SEEK_DATA, everything is data.
func hasData(f *os.File, off, n int64) bool {
	d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return false // no data from off to the end
	}
	return err != nil || d < off+n
}

// readBlock reads [off, off+len(b)) of f into b; a hole is zeros.
func readBlock(f *os.File, b []byte, off int64, data bool) error {
	if !data {
		clear(b)
		return nil
	}
	if _, err := io.ReadFull(io.NewSectionReader(f, off, int64(len(b))), b); err != nil {
		return fmt.Errorf("read %s at %d: %w", f.Name(), off, err)
	}
	return nil
}

// sameContent compares two files byte for byte, streaming, and says where
// they first differ. A range that is a hole in a file is zeros, not read;
// one that is a hole in both is equal.
func sameContent(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	sa, err := fa.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	sb, err := fb.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if sa != sb {
		return fmt.Errorf("%s has %d bytes, %s %d", a, sa, b, sb)
	}
	ba, bb := make([]byte, block), make([]byte, block)
	for off := int64(0); off < sa; off += block {
		n := min(block, sa-off)
		da, db := hasData(fa, off, n), hasData(fb, off, n)
		if !da && !db {
			continue
		}
		if err := readBlock(fa, ba[:n], off, da); err != nil {
			return err
		}
		if err := readBlock(fb, bb[:n], off, db); err != nil {
			return err
		}
		if !bytes.Equal(ba[:n], bb[:n]) {
			i := 0
			for ba[i] == bb[i] {
				i++
			}
			return fmt.Errorf("%s and %s differ at byte %d", a, b, off+int64(i))
		}
	}
	return nil
}

func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	if err := sameContent(a, b); err != nil {
		t.Fatal(err)
	}
}

// allocated is the storage a file takes (its holes take none).
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// chunkObjects counts the chunk objects of the "backups" container and
// their bytes, as the repository lists them.
func chunkObjects(t testing.TB, e *engine.Engine) (n, size int64) {
	t.Helper()
	err := e.Repository().List(context.Background(), "backups/chunks/", func(o repository.ObjectInfo) error {
		n++
		size += o.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

// countChunks counts the chunk files in a posix repository's directory.
func countChunks(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(dir, "backups", "chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

func backup(t testing.TB, e *engine.Engine, src blockdev.Device, id, parent string) *engine.Manifest {
	t.Helper()
	m, err := e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: id, VolumeID: "vol", ParentID: parent})
	if err != nil {
		t.Fatalf("backup %s: %v", id, err)
	}
	return m
}

// restoreAndCompare restores a backup onto an empty file and checks it is
// byte for byte the file want.
func restoreAndCompare(t testing.TB, e *engine.Engine, id, want string, size int64) string {
	t.Helper()
	return restoreAndCompareIn(t, t.TempDir(), e, id, want, size)
}

// restoreAndCompareIn is restoreAndCompare with the target in dir.
func restoreAndCompareIn(t testing.TB, dir string, e *engine.Engine, id, want string, size int64) string {
	t.Helper()
	target := emptyTargetIn(t, dir, size)
	dst := openFile(t, target, false)
	if err := e.Restore(context.Background(), "backups", id, dst, nil); err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	sameFiles(t, want, target)
	return target
}

// countingDevice counts the bytes read from a device.
type countingDevice struct {
	blockdev.Device
	read atomic.Int64
}

func (d *countingDevice) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.Device.ReadAt(p, off)
	d.read.Add(int64(n))
	return n, err
}

// serveNBD exports img read-only with nbdkit's file plugin on a unix socket
// and returns a client attached to it; both end with the test.
func serveNBD(t testing.TB, nbdkit, img string) *nbd.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "bv-nbd-") // short: a socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	cmd := exec.Command(nbdkit, "-f", "--exit-with-parent", "-r", "-U", sock, "file", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(testenv.Patience)
	for {
		c, err := nbd.Dial(context.Background(), "unix", sock, nbd.DialOptions{})
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		select {
		case <-exited:
			t.Fatalf("nbdkit exited: %v: %s", werr, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdkit did not serve %s: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
