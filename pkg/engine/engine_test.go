package engine_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/blockvault/blockvault/pkg/testenv"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

var key = bytes.Repeat([]byte("k"), 32)

// makeImage writes a sparse image of size bytes: kind "sparse" (a few data
// islands), "random", "text" (compressible), "mixed" (half holes, a
// quarter random, a quarter text), "zero".
func makeImage(t testing.TB, kind string, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), kind+".img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(size)
	buf := make([]byte, 4*mib)
	text := func(b []byte) {
		words := []string{"block ", "vault ", "backup ", "snapshot ", "volume ", "restore ", "\n"}
		p := 0
		for p < len(b) {
			n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(words))))
			p += copy(b[p:], words[n.Int64()])
		}
	}
	write := func(off int64, gen func([]byte)) {
		gen(buf)
		f.WriteAt(buf, off)
	}
	rnd := func(b []byte) { rand.Read(b) }
	switch kind {
	case "sparse":
		for off := int64(0); off < size; off += 64 * mib {
			write(off+8*mib, rnd)
		}
	case "random":
		for off := int64(0); off < size; off += 4 * mib {
			write(off, rnd)
		}
	case "text":
		for off := int64(0); off < size; off += 4 * mib {
			write(off, text)
		}
	case "mixed":
		for off := int64(0); off < size; off += 16 * mib {
			write(off+8*mib, rnd)
			write(off+12*mib, text)
		}
	case "zero":
	}
	return path
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

func newEngine(t testing.TB, k []byte) (*engine.Engine, string) {
	t.Helper()
	dir := t.TempDir()
	repo, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	return e, dir
}

func emptyTarget(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.img")
	f, _ := os.Create(p)
	f.Truncate(size)
	f.Close()
	return p
}

func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	out, err := exec.Command("cmp", a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("cmp %s %s: %v: %s", a, b, err, out)
	}
}

func allocated(path string) int64 {
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	return st.Blocks * 512
}

func countChunks(t testing.TB, dir string) int {
	n := 0
	filepath.Walk(filepath.Join(dir, "backups", "chunks"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
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

func restoreAndCompare(t testing.TB, e *engine.Engine, id, want string, size int64) string {
	t.Helper()
	target := emptyTarget(t, size)
	dst := openFile(t, target, false)
	if err := e.Restore(context.Background(), "backups", id, dst, nil); err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	sameFiles(t, want, target)
	return target
}

// rewrite changes about frac of an image in 1 MiB runs at random offsets.
func rewrite(t testing.TB, path string, size int64, frac float64) {
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer f.Close()
	buf := make([]byte, mib)
	for i := 0; i < int(float64(size)*frac/float64(mib)); i++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(size/mib))
		rand.Read(buf)
		f.WriteAt(buf, n.Int64()*mib)
	}
}

func TestRoundTrips(t *testing.T) {
	sizes := map[string]int64{"sparse": gib, "zero": gib, "random": 256 * mib, "text": 256 * mib, "mixed": 512 * mib}
	if testing.Short() {
		sizes = map[string]int64{"sparse": 64 * mib, "zero": 64 * mib, "random": 32 * mib, "text": 32 * mib, "mixed": 64 * mib}
	}
	for _, encrypted := range []bool{false, true} {
		for _, kind := range []string{"sparse", "zero", "random", "text", "mixed"} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", kind, encrypted), func(t *testing.T) {
				var k []byte
				if encrypted {
					k = key
				}
				e, dir := newEngine(t, k)
				size := sizes[kind]
				img := makeImage(t, kind, size)
				m := backup(t, e, openFile(t, img, true), "full", "")
				target := restoreAndCompare(t, e, "full", img, size)
				if kind == "sparse" || kind == "zero" {
					if a, b := allocated(target), allocated(img); a > b+4*mib {
						t.Fatalf("restore filled holes: %d bytes allocated, source %d", a, b)
					}
				}
				if kind == "zero" && (countChunks(t, dir) != 0 || m.DataChunks != 0) {
					t.Fatalf("an all-zero volume stored %d chunks", countChunks(t, dir))
				}
				// Incremental after changing 1% of the image.
				before := countChunks(t, dir)
				rewrite(t, img, size, 0.01)
				m2 := backup(t, e, openFile(t, img, true), "incr", "full")
				restoreAndCompare(t, e, "incr", img, size)
				// 1% rewritten in aligned 1 MiB runs: each run dirties one
				// chunk, so at most one new chunk a run is stored.
				newChunks := countChunks(t, dir) - before
				runs := int(float64(size) * 0.01 / float64(mib))
				if newChunks > runs || m2.NewChunks != int64(newChunks) {
					t.Fatalf("1%% change (%d runs) stored %d new chunks of %d (manifest says %d)", runs, newChunks, len(m2.Chunks), m2.NewChunks)
				}
				t.Logf("%s: full stored %d bytes; incremental after 1%% changed stored %d bytes (%.2f%% of the volume)",
					kind, m.NewBytes, m2.NewBytes, 100*float64(m2.NewBytes)/float64(size))
			})
		}
	}
}

func TestFromNBDExport(t *testing.T) {
	nbdkit := testenv.LookPath(t, "nbdkit")
	size := 256 * mib
	img := makeImage(t, "mixed", size)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(nbdkit, "-f", "--exit-with-parent", "-r", "-i", "127.0.0.1", "-p", port, "file", img)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var c *nbd.Client
	var err error
	for i := 0; i < 100; i++ {
		if c, err = nbd.Dial(context.Background(), "tcp", addr, nbd.DialOptions{}); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, k := range [][]byte{nil, key} {
		e, _ := newEngine(t, k)
		m := backup(t, e, c, "nbd-full", "")
		restoreAndCompare(t, e, "nbd-full", img, size)
		if c.CanBlockStatus() && m.DataChunks > int64(len(m.Chunks))*3/4 {
			t.Fatalf("holes were read: %d data chunks of %d", m.DataChunks, len(m.Chunks))
		}
		backup(t, e, c, "nbd-incr", "nbd-full")
		restoreAndCompare(t, e, "nbd-incr", img, size)
	}
}

func TestWrongKey(t *testing.T) {
	dir := t.TempDir()
	repo, _ := posix.New(dir)
	e, _ := engine.New(repo, engine.Options{Key: key})
	img := makeImage(t, "random", 16*mib)
	backup(t, e, openFile(t, img, true), "b", "")
	for _, k := range [][]byte{nil, bytes.Repeat([]byte("x"), 32)} {
		e2, _ := engine.New(repo, engine.Options{Key: k})
		target := emptyTarget(t, 16*mib)
		err := e2.Restore(context.Background(), "backups", "b", openFile(t, target, false), nil)
		if !errors.Is(err, engine.ErrWrongKey) {
			t.Fatalf("restore with key %q: %v", k, err)
		}
		if allocated(target) != 0 {
			t.Fatal("a failed restore wrote to the target")
		}
	}
}

func TestCorruptAndMissingChunks(t *testing.T) {
	e, dir := newEngine(t, nil)
	img := makeImage(t, "random", 32*mib)
	m := backup(t, e, openFile(t, img, true), "b", "")
	id := m.Chunks[3]
	chunk := filepath.Join(dir, "backups", "chunks", id[:2], id)
	data, _ := os.ReadFile(chunk)
	data[len(data)/2] ^= 0xff
	os.WriteFile(chunk, data, 0o644)
	missing := m.Chunks[5]
	os.Remove(filepath.Join(dir, "backups", "chunks", missing[:2], missing))

	rep, err := e.Verify(context.Background(), "backups", "b")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, d := range rep.Damaged {
		found[d.ChunkID] = true
	}
	if len(rep.Damaged) != 2 || !found[id] || !found[missing] {
		t.Fatalf("verify found %v, want %s and %s", rep.Damaged, id, missing)
	}
	err = e.Restore(context.Background(), "backups", "b", openFile(t, emptyTarget(t, 32*mib), false), nil)
	var ce *engine.ChunkError
	if !errors.As(err, &ce) || (ce.ChunkID != id && ce.ChunkID != missing) || !strings.Contains(err.Error(), ce.ChunkID) {
		t.Fatalf("restore of a damaged backup: %v", err)
	}
}

// failingSource fails its reads after the first few.
type failingSource struct {
	blockdev.Device
	left int
}

func (f *failingSource) ReadAt(p []byte, off int64) (int, error) {
	f.left--
	if f.left < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return f.Device.ReadAt(p, off)
}

func TestFailingSourceLeavesNoManifest(t *testing.T) {
	e, dir := newEngine(t, nil)
	img := makeImage(t, "random", 64*mib)
	_, err := e.Backup(context.Background(), "backups", &failingSource{Device: openFile(t, img, true), left: 4}, engine.BackupSpec{BackupID: "b", VolumeID: "v"})
	if err == nil {
		t.Fatal("a backup of a failing source succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "backups", "manifests", "b")); !os.IsNotExist(err) {
		t.Fatal("a failed backup left a manifest")
	}
	if _, err := e.LoadManifest(context.Background(), "backups", "b"); !errors.Is(err, engine.ErrNoBackup) {
		t.Fatalf("load: %v", err)
	}
	// Its chunks are garbage and go with the next collection.
	st, err := e.GC(context.Background(), "backups")
	if err != nil || countChunks(t, dir) != 0 {
		t.Fatalf("gc after a failed backup: %+v %v, %d chunks left", st, err, countChunks(t, dir))
	}
}

func TestDeleteAnyOfAChain(t *testing.T) {
	for victim := 0; victim < 3; victim++ {
		t.Run(fmt.Sprint("delete ", victim), func(t *testing.T) {
			e, dir := newEngine(t, nil)
			size := 64 * mib
			img := makeImage(t, "random", size)
			var copies []string
			ids := []string{"b0", "b1", "b2"}
			for i, id := range ids {
				if i > 0 {
					rewrite(t, img, size, 0.1)
				}
				parent := ""
				if i > 0 {
					parent = ids[i-1]
				}
				backup(t, e, openFile(t, img, true), id, parent)
				cp := filepath.Join(t.TempDir(), id)
				exec.Command("cp", "--sparse=always", img, cp).Run()
				copies = append(copies, cp)
			}
			before := countChunks(t, dir)
			if err := e.Delete(context.Background(), "backups", ids[victim]); err != nil {
				t.Fatal(err)
			}
			for i, id := range ids {
				if i != victim {
					restoreAndCompare(t, e, id, copies[i], size)
				}
			}
			if victim != 1 && countChunks(t, dir) >= before {
				t.Fatalf("gc freed nothing: %d chunks before, %d after", before, countChunks(t, dir))
			}
			list, _ := e.ListBackups(context.Background(), "backups")
			if len(list) != 2 {
				t.Fatalf("the repository lists %d backups", len(list))
			}
		})
	}
}

func TestGCWaitsForRunningBackups(t *testing.T) {
	e, dir := newEngine(t, nil)
	repo, _ := posix.New(dir)
	img := makeImage(t, "random", 16*mib)
	backup(t, e, openFile(t, img, true), "b", "")
	e.Delete(context.Background(), "backups", "b")
	backup(t, e, openFile(t, img, true), "c", "")
	// A running backup's lock: GC must not collect.
	repo.Put(context.Background(), "backups/locks/running", []byte("now"))
	repo.Delete(context.Background(), "backups/manifests/c")
	st, err := e.GC(context.Background(), "backups")
	if err != nil || !st.Skipped || countChunks(t, dir) == 0 {
		t.Fatalf("gc with a running backup: %+v %v", st, err)
	}
	repo.Delete(context.Background(), "backups/locks/running")
	if st, _ := e.GC(context.Background(), "backups"); st.Skipped || countChunks(t, dir) != 0 {
		t.Fatalf("gc after the backup ended: %+v", st)
	}
}

func TestNamesCannotEscape(t *testing.T) {
	e, _ := newEngine(t, nil)
	img := makeImage(t, "zero", mib)
	for _, c := range []string{"../x", "/etc", "a/b", ""} {
		_, err := e.Backup(context.Background(), c, openFile(t, img, true), engine.BackupSpec{BackupID: "b"})
		if !errors.Is(err, repository.ErrInvalidName) {
			t.Errorf("container %q: %v", c, err)
		}
	}
	if _, err := e.Backup(context.Background(), "backups", openFile(t, img, true), engine.BackupSpec{BackupID: "../../x"}); !errors.Is(err, repository.ErrInvalidName) {
		t.Errorf("backup id: %v", err)
	}
}

func TestExportImportRecord(t *testing.T) {
	e, dir := newEngine(t, key)
	img := makeImage(t, "text", 16*mib)
	backup(t, e, openFile(t, img, true), "b", "")
	rec, err := e.ExportRecord(context.Background(), "backups", "b")
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := posix.New(dir)
	other, _ := engine.New(repo, engine.Options{Key: key})
	r, err := other.ImportRecord(context.Background(), rec)
	if err != nil || r.BackupID != "b" || r.Size != 16*mib {
		t.Fatalf("import: %+v %v", r, err)
	}
	if _, err := other.ImportRecord(context.Background(), []byte(`{"format":"x"}`)); err == nil {
		t.Fatal("a bogus record was imported")
	}
}

func BenchmarkBackupMixed(b *testing.B) {
	size := 512 * mib
	img := makeImage(b, "mixed", size)
	src := openFile(b, img, true)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e, _ := newEngine(b, nil)
		if _, err := e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: "b"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRestoreMixed(b *testing.B) {
	size := 512 * mib
	img := makeImage(b, "mixed", size)
	e, _ := newEngine(b, nil)
	if _, err := e.Backup(context.Background(), "backups", openFile(b, img, true), engine.BackupSpec{BackupID: "b"}); err != nil {
		b.Fatal(err)
	}
	target := emptyTarget(b, size)
	dst := openFile(b, target, false)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.Restore(context.Background(), "backups", "b", dst, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRoundTripOnS3: the same engine on a real S3 server (versitygw).
func TestRoundTripOnS3(t *testing.T) {
	srv := s3test.Start(t)
	repo, err := s3.New(context.Background(), srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{nil, key} {
		e, err := engine.New(repo, engine.Options{Key: k})
		if err != nil {
			t.Fatal(err)
		}
		size := 64 * mib
		img := makeImage(t, "mixed", size)
		c := "s3c" + fmt.Sprint(len(k))
		if _, err := e.Backup(context.Background(), c, openFile(t, img, true), engine.BackupSpec{BackupID: "full", VolumeID: "v"}); err != nil {
			t.Fatal(err)
		}
		rewrite(t, img, size, 0.02)
		if _, err := e.Backup(context.Background(), c, openFile(t, img, true), engine.BackupSpec{BackupID: "incr", VolumeID: "v", ParentID: "full"}); err != nil {
			t.Fatal(err)
		}
		target := emptyTarget(t, size)
		if err := e.Restore(context.Background(), c, "incr", openFile(t, target, false), nil); err != nil {
			t.Fatal(err)
		}
		sameFiles(t, img, target)
		if err := e.Delete(context.Background(), c, "full"); err != nil {
			t.Fatal(err)
		}
		rep, err := e.Verify(context.Background(), c, "incr")
		if err != nil || len(rep.Damaged) != 0 {
			t.Fatalf("verify after deleting the parent: %+v %v", rep, err)
		}
	}
}
