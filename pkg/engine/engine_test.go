package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// imageSize is the size of the round trips' images: 1 GiB (64 MiB with
// -short).
func imageSize() int64 {
	if testing.Short() {
		return 64 * mib
	}
	return gib
}

func keyIf(encrypted bool) []byte {
	if encrypted {
		return key
	}
	return nil
}

// objectOverhead bounds what a chunk object adds to its payload: the
// version and flags bytes, and the nonce and tag when encrypted.
const objectOverhead = 64

// roundTrip backs up src (the image img, or an export of it) in full,
// restores it and compares; changes 1% of the image, backs it up
// incrementally, restores and compares again; and checks what each backup
// read and stored.
func roundTrip(t *testing.T, kind, img string, size int64, k []byte, src blockdev.Device) (e *engine.Engine, scratch string) {
	t.Helper()
	scratch = scratchDir(t, 3*size)
	e = newEngineIn(t, filepath.Join(scratch, "repo"), k)
	random, text := imageBytes(kind, size)
	want := dataChunks(kind, size, chunk)

	counted := &countingDevice{Device: src}
	full := backup(t, e, counted, "full", "")
	// The source reports its holes: only the data is read.
	if got := counted.read.Load(); got != want*chunk {
		t.Errorf("the full backup read %d bytes of the source, want %d (its data chunks; holes unread)", got, want*chunk)
	}
	// Each data chunk is stored once, zeros not at all; random data is
	// stored raw, compressible data compressed to less than half.
	n, stored := chunkObjects(t, e)
	if full.DataChunks != want || full.NewChunks != want || n != want || stored != full.NewBytes {
		t.Fatalf("full backup: %d data chunks, %d new of %d bytes; the repository holds %d chunks of %d bytes; want %d chunks",
			full.DataChunks, full.NewChunks, full.NewBytes, n, stored, want)
	}
	if full.NewBytes < random || full.NewBytes > random+text/2+want*objectOverhead {
		t.Errorf("the full backup stored %d bytes for %d bytes of random and %d of compressible data", full.NewBytes, random, text)
	}
	target := restoreAndCompareIn(t, scratch, e, "full", img, size)
	if a, b := allocated(t, target), allocated(t, img); a > b+chunk {
		t.Errorf("the restore filled holes: %d bytes allocated, the source %d", a, b)
	}
	if err := os.Remove(target); err != nil {
		t.Fatal(err)
	}

	// Change 1% of the volume (whole chunks at random places; the last one
	// partly): the incremental stores those chunks and nothing else.
	changed := size / 100
	touched := change(t, img, size, changed, chunk, "change "+kind)
	incr := backup(t, e, src, "incr", "full")
	n2, stored2 := chunkObjects(t, e)
	if incr.NewChunks != touched || n2-n != touched || stored2-stored != incr.NewBytes {
		t.Fatalf("after changing %d chunks the incremental stored %d new chunks (%d bytes); the repository grew by %d chunks, %d bytes",
			touched, incr.NewChunks, incr.NewBytes, n2-n, stored2-stored)
	}
	if incr.NewBytes < changed || incr.NewBytes > touched*(chunk+objectOverhead) {
		t.Fatalf("changing %d bytes in %d chunks stored %d bytes", changed, touched, incr.NewBytes)
	}
	pct := 100 * float64(incr.NewBytes) / float64(size)
	if size >= gib && pct > 1.25 {
		t.Errorf("changing 1%% of a volume stored %.2f%% of it, want about 1%%", pct)
	}
	target = restoreAndCompareIn(t, scratch, e, "incr", img, size)
	if err := os.Remove(target); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: the full backup read %d MiB and stored %d bytes (%.1f%% of the volume); after 1%% changed the incremental stored %d bytes (%.2f%%)",
		kind, counted.read.Load()/mib, full.NewBytes, 100*float64(full.NewBytes)/float64(size), incr.NewBytes, pct)
	return e, scratch
}

// TestRoundTrips: each image kind of 1 GiB from a local path, full and
// incremental, with and without encryption, restores byte for byte.
func TestRoundTrips(t *testing.T) {
	size := imageSize()
	for _, kind := range imageKinds {
		for _, encrypted := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", kind, encrypted), func(t *testing.T) {
				img := makeImage(t, kind, size)
				src := openFile(t, img, true)
				e, scratch := roundTrip(t, kind, img, size, keyIf(encrypted), src)
				if kind == "random" && !encrypted {
					scatteredChange(t, e, scratch, img, size, src)
				}
			})
		}
	}
}

// TestFromNBDExport: the same round trips reading an NBD export of each
// image (nbdkit's file plugin), encrypted for every other kind.
func TestFromNBDExport(t *testing.T) {
	nbdkit := testenv.LookPath(t, "nbdkit")
	size := imageSize()
	for i, kind := range imageKinds {
		encrypted := i%2 == 1
		t.Run(fmt.Sprintf("%s/encrypted=%v", kind, encrypted), func(t *testing.T) {
			img := makeImage(t, kind, size)
			c := serveNBD(t, nbdkit, img)
			if !c.CanBlockStatus() {
				t.Fatal("the nbdkit export offers no base:allocation, so holes would be read")
			}
			roundTrip(t, kind, img, size, keyIf(encrypted), c)
		})
	}
}

// scatteredChange changes 1% of a random image (backed up as "incr") in
// 1 MiB runs at random places: the next incremental stores each chunk a run
// touched, whole, and no other; it restores byte for byte.
func scatteredChange(t *testing.T, e *engine.Engine, scratch, img string, size int64, src blockdev.Device) {
	t.Helper()
	n, stored := chunkObjects(t, e)
	changed := size / 100
	touched := change(t, img, size, changed, mib, "scattered")
	m := backup(t, e, src, "scattered", "incr")
	n2, stored2 := chunkObjects(t, e)
	if m.NewChunks != touched || n2-n != touched || stored2-stored != m.NewBytes {
		t.Fatalf("after changing %d chunks the incremental stored %d new chunks (%d bytes); the repository grew by %d chunks, %d bytes",
			touched, m.NewChunks, m.NewBytes, n2-n, stored2-stored)
	}
	if m.NewBytes < touched*chunk || m.NewBytes > touched*(chunk+objectOverhead) {
		t.Fatalf("%d touched chunks of random data stored %d bytes", touched, m.NewBytes)
	}
	target := restoreAndCompareIn(t, scratch, e, "scattered", img, size)
	if err := os.Remove(target); err != nil {
		t.Fatal(err)
	}
	t.Logf("random: 1%% changed in %d runs of 1 MiB touched %d chunks; the incremental stored %d bytes (%.2f%% of the volume)",
		(changed+mib-1)/mib, touched, m.NewBytes, 100*float64(m.NewBytes)/float64(size))
}

// TestWrittenZerosStoreNothing: a volume of zeros that are allocated (so the
// backup reads and zero-checks them, as from a device that reports no
// holes) stores no chunk, and restores as holes.
func TestWrittenZerosStoreNothing(t *testing.T) {
	size := imageSize()
	img := filepath.Join(t.TempDir(), "zeros.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, block)
	for off := int64(0); off < size; off += block {
		if _, err := f.WriteAt(zeros, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if a := allocated(t, img); a < size {
		t.Fatalf("setup: only %d bytes of the zeros are allocated", a)
	}
	for _, k := range [][]byte{nil, key} {
		scratch := scratchDir(t, size)
		e := newEngineIn(t, filepath.Join(scratch, "repo"), k)
		src := &countingDevice{Device: openFile(t, img, true)}
		m := backup(t, e, src, "b", "")
		if src.read.Load() != size {
			t.Fatalf("setup: the backup read %d bytes, not the whole allocated volume", src.read.Load())
		}
		n, stored := chunkObjects(t, e)
		if n != 0 || stored != 0 || m.DataChunks != 0 || m.NewChunks != 0 || m.NewBytes != 0 {
			t.Fatalf("a volume of zeros stored %d chunks, %d bytes (manifest: %d data chunks, %d new, %d bytes)",
				n, stored, m.DataChunks, m.NewChunks, m.NewBytes)
		}
		target := restoreAndCompareIn(t, scratch, e, "b", img, size)
		if a := allocated(t, target); a > chunk {
			t.Fatalf("the restore of zeros allocated %d bytes", a)
		}
	}
}

// TestSameContent: the comparison the round trips rely on sees a one-byte
// difference and a size difference.
func TestSameContent(t *testing.T) {
	a := makeImage(t, "mixed", 32*mib)
	b := filepath.Join(t.TempDir(), "copy.img")
	if out, err := exec.Command("cp", "--sparse=always", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := sameContent(a, b); err != nil {
		t.Fatalf("a copy differs: %v", err)
	}
	f, err := os.OpenFile(b, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// One byte changed where a has a hole (so b has data there) or where
	// both have data; the rest, holes in both or data in both, is equal.
	for _, off := range []int64{0, 5*mib + 3, 8*mib + 100, 32*mib - 1} {
		var c [1]byte
		if _, err := f.ReadAt(c[:], off); err != nil {
			t.Fatal(err)
		}
		c[0] ^= 1
		if _, err := f.WriteAt(c[:], off); err != nil {
			t.Fatal(err)
		}
		if err := sameContent(a, b); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("differ at byte %d", off)) {
			t.Fatalf("a byte changed at %d: %v", off, err)
		}
		c[0] ^= 1
		if _, err := f.WriteAt(c[:], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(32*mib - 1); err != nil {
		t.Fatal(err)
	}
	if err := sameContent(a, b); err == nil {
		t.Fatal("files of different sizes compare equal")
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
		if allocated(t, target) != 0 {
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

// failingSource fails its reads after the first few (reads come from
// several workers at once).
type failingSource struct {
	blockdev.Device
	left atomic.Int64
}

func (f *failingSource) ReadAt(p []byte, off int64) (int, error) {
	if f.left.Add(-1) < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return f.Device.ReadAt(p, off)
}

func TestFailingSourceLeavesNoManifest(t *testing.T) {
	e, dir := newEngine(t, nil)
	img := makeImage(t, "random", 64*mib)
	src := &failingSource{Device: openFile(t, img, true)}
	src.left.Store(4)
	_, err := e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: "b", VolumeID: "v"})
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
					change(t, img, size, size/10, mib, "chain "+id)
				}
				parent := ""
				if i > 0 {
					parent = ids[i-1]
				}
				backup(t, e, openFile(t, img, true), id, parent)
				cp := filepath.Join(t.TempDir(), id)
				if out, err := exec.Command("cp", "--sparse=always", img, cp).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v: %s", err, out)
				}
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
		change(t, img, size, size/50, mib, c)
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
		// With changed ranges: chunks in pieces, on S3 (no batch there).
		changed := []engine.Range{write(t, img, 3*chunk+8192, mib, c+"p1"), write(t, img, 9*chunk+4096, 4096, c+"p2")}
		m, err := e.Backup(context.Background(), c, openFile(t, img, true), engine.BackupSpec{BackupID: "pieces", VolumeID: "v", ParentID: "incr", Changed: changed})
		if err != nil || len(m.Pieces) != 2 {
			t.Fatalf("incremental with changed ranges: %v, %d chunks in pieces", err, len(m.Pieces))
		}
		if err := e.Delete(context.Background(), c, "incr"); err != nil {
			t.Fatal(err)
		}
		target = emptyTarget(t, size)
		if err := e.Restore(context.Background(), c, "pieces", openFile(t, target, false), nil); err != nil {
			t.Fatal(err)
		}
		sameFiles(t, img, target)
	}
}
