package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
)

// write puts n bytes drawn from seedName at off in the image (zeros when
// seedName is "").
func write(t *testing.T, img string, off, n int64, seedName string) engine.Range {
	t.Helper()
	b := make([]byte, n)
	if seedName != "" {
		rand.NewChaCha8(seed(seedName)).Read(b)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return engine.Range{Offset: off, Length: n}
}

// incremental backs up img with changed ranges and returns its manifest
// and the bytes it read from the source.
func incremental(t *testing.T, e *engine.Engine, img, id, parent string, changed []engine.Range) (*engine.Manifest, int64) {
	t.Helper()
	src := &countingDevice{Device: openFile(t, img, true)}
	m, err := e.Backup(context.Background(), "backups", blockdev.Device(src), engine.BackupSpec{BackupID: id, VolumeID: "vol", ParentID: parent, Changed: changed})
	if err != nil {
		t.Fatalf("backup %s: %v", id, err)
	}
	return m, src.read.Load()
}

// TestIncrementalStoresChangedPieces: an incremental backup with changed
// ranges reads and stores what changed, not the chunks it touched (4 MiB
// each), and every backup of the chain restores byte for byte, also after
// the backups its pieces came from are deleted. A chunk changed in so many
// places or so much of it that pieces would cost half the chunk is read
// whole. A damaged piece is named by
// verify and stops a restore.
func TestIncrementalStoresChangedPieces(t *testing.T) {
	const size = 64 * mib
	e, dir := newEngine(t, key)
	img := makeImage(t, "mixed", size)
	backup(t, e, openFile(t, img, true), "full", "")

	// Round 1 (the mixed image's chunks go hole, hole, random, text): 1 MiB
	// of random data inside chunk 2, 1 MiB across chunks 3 and 4, 4 KiB in
	// chunk 8, 256 KiB of zeros over chunk 15's text, and 256 KiB of zeros
	// written into chunk 13, a hole, which stays a chunk of zeros.
	r1 := []engine.Range{
		write(t, img, 2*chunk+4096, mib, "r1a"),
		write(t, img, 4*chunk-mib/2, mib, "r1b"),
		write(t, img, 8*chunk+12288, 4096, "r1c"),
		write(t, img, 15*chunk+mib, mib/4, ""),
		write(t, img, 13*chunk+mib, mib/4, ""),
	}
	inc1, read := incremental(t, e, img, "inc1", "full", r1)
	if want := 2*mib + 4096 + mib/2; read != want {
		t.Errorf("inc1 read %d bytes, want the %d that changed", read, want)
	}
	for _, i := range []int{2, 3, 4, 8, 15} {
		if inc1.Pieces[i] == nil {
			t.Errorf("inc1: chunk %d is not stored in pieces: %q", i, inc1.Chunks[i])
		}
	}
	if inc1.Chunks[13] != "" || inc1.Pieces[13] != nil {
		t.Errorf("inc1: chunk 13, zeros, is %q, %v", inc1.Chunks[13], inc1.Pieces[13])
	}
	// Random data does not compress: what is stored is what changed, not
	// the 4 MiB chunks it touched.
	if inc1.NewBytes > 2*mib+2*4096+mib/4 {
		t.Errorf("inc1 stored %d bytes for 2 MiB + 4 KiB of new data", inc1.NewBytes)
	}
	restoreAndCompare(t, e, "inc1", img, size)

	// Round 2, on top: overlapping chunk 2's piece, 3 MiB of chunk 5 (half
	// or more: read whole), 32 writes of 4 KiB spread over chunk 6 (so
	// many objects would cost more than the chunk: read whole), and 8 over
	// chunk 7 (pieces).
	r2 := []engine.Range{
		write(t, img, 2*chunk+mib/2, mib, "r2a"),
		write(t, img, 5*chunk, 3*mib, "r2b"),
	}
	for k := int64(0); k < 32; k++ {
		r2 = append(r2, write(t, img, 6*chunk+k*chunk/32, 4096, fmt.Sprint("r2c", k)))
	}
	for k := int64(0); k < 8; k++ {
		r2 = append(r2, write(t, img, 7*chunk+k*chunk/8, 4096, fmt.Sprint("r2d", k)))
	}
	inc2, read := incremental(t, e, img, "inc2", "inc1", r2)
	if want := mib + 2*chunk + 8*4096; read != want {
		t.Errorf("inc2 read %d bytes, want %d (1 MiB, chunks 5 and 6 whole, 8 blocks of chunk 7)", read, want)
	}
	if inc2.Pieces[2] == nil || inc2.Pieces[3] == nil || inc2.Pieces[5] != nil || inc2.Pieces[6] != nil || len(inc2.Pieces[7]) != 16 {
		t.Errorf("inc2 pieces: chunk 2 %v, 3 %v, 5 %v, 6 %v, 7 %v; want 2 and 3 in pieces, 5 and 6 whole, 7 in 16 pieces (8 new, 8 of the parent's chunk)",
			inc2.Pieces[2], inc2.Pieces[3], inc2.Pieces[5], inc2.Pieces[6], inc2.Pieces[7])
	}
	restoreAndCompare(t, e, "inc2", img, size)

	// The pieces of inc2 are ranges of the full backup's and inc1's
	// objects: deleting those backups keeps the objects inc2 needs.
	for _, id := range []string{"full", "inc1"} {
		if err := e.Delete(context.Background(), "backups", id); err != nil {
			t.Fatal(err)
		}
	}
	restoreAndCompare(t, e, "inc2", img, size)
	rep, err := e.Verify(context.Background(), "backups", "inc2")
	if err != nil || len(rep.Damaged) != 0 {
		t.Fatalf("verify inc2: %v, damaged %v", err, rep)
	}

	// A damaged piece: the object of chunk 2's first piece, overwritten.
	var piece string
	for _, p := range inc2.Pieces[2] {
		if p.ID != "" {
			piece = p.ID
			break
		}
	}
	obj := filepath.Join(dir, "backups", "chunks", piece[:2], piece)
	if err := os.WriteFile(obj, []byte("not a chunk"), 0o640); err != nil {
		t.Fatal(err)
	}
	rep, err = e.Verify(context.Background(), "backups", "inc2")
	if err != nil || len(rep.Damaged) != 1 || rep.Damaged[0].ChunkID != piece {
		t.Fatalf("verify after damaging %s: %v, %+v", piece, err, rep)
	}
	dst := openFile(t, emptyTarget(t, size), false)
	var ce *engine.ChunkError
	if err := e.Restore(context.Background(), "backups", "inc2", dst, nil); !errors.As(err, &ce) || ce.ChunkID != piece {
		t.Fatalf("restore with a damaged piece: %v, want an error naming %s", err, piece)
	}
}

// TestFullBackupFoldsPieces: a full backup after incrementals with pieces
// stores every chunk whole again, so chains do not fragment for ever.
func TestFullBackupFoldsPieces(t *testing.T) {
	const size = 32 * mib
	e, _ := newEngine(t, nil)
	img := makeImage(t, "random", size)
	backup(t, e, openFile(t, img, true), "full", "")
	inc, _ := incremental(t, e, img, "inc", "full", []engine.Range{write(t, img, chunk+8192, mib, "x")})
	if len(inc.Pieces) != 1 {
		t.Fatalf("inc has %d chunks in pieces, want 1", len(inc.Pieces))
	}
	full2 := backup(t, e, openFile(t, img, true), "full2", "")
	if len(full2.Pieces) != 0 || full2.Chunks[1] == "" {
		t.Fatalf("the second full backup has pieces %v, chunk 1 %q", full2.Pieces, full2.Chunks[1])
	}
	restoreAndCompare(t, e, "full2", img, size)
}

// TestManifestPiecesBounded: an incremental keeps its manifest under the
// engine's bound on pieces by reading whole the chunks with the most
// pieces, its own or those it would keep from the parent, and restores
// byte for byte.
func TestManifestPiecesBounded(t *testing.T) {
	const size = 32 * mib
	repo, err := posix.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{MaxManifestPieces: 20})
	if err != nil {
		t.Fatal(err)
	}
	img := makeImage(t, "random", size)
	backup(t, e, openFile(t, img, true), "full", "")
	// spread writes n blocks of 4 KiB spread over chunk i.
	spread := func(i, n int64, name string) []engine.Range {
		var rs []engine.Range
		for k := int64(0); k < n; k++ {
			rs = append(rs, write(t, img, i*chunk+4096+k*chunk/n, 4096, fmt.Sprint(name, k)))
		}
		return rs
	}
	count := func(m *engine.Manifest) (n int) {
		for _, ps := range m.Pieces {
			n += len(ps)
		}
		return n
	}

	// 17 pieces: chunk 1 in 3, chunk 2 in 9, chunk 3 in 5. All fit.
	r1 := append(append(spread(1, 1, "a"), spread(2, 4, "b")...), spread(3, 2, "c")...)
	inc1, read := incremental(t, e, img, "inc1", "full", r1)
	if n := count(inc1); n != 17 || read != 7*4096 {
		t.Fatalf("inc1: %d pieces, read %d bytes; want 17 pieces, the 7 blocks that changed", n, read)
	}
	// Chunk 4 in 9 more would make 26: chunk 2 (9 pieces, kept from inc1,
	// and before chunk 4 at equal counts) is read whole instead.
	inc2, read := incremental(t, e, img, "inc2", "inc1", spread(4, 4, "d"))
	if n := count(inc2); n != 17 || read != chunk+4*4096 {
		t.Errorf("inc2: %d pieces, read %d bytes; want 17 pieces, read chunk 2 whole and the 4 blocks of chunk 4", n, read)
	}
	if inc2.Pieces[2] != nil || inc2.Chunks[2] == "" || len(inc2.Pieces[4]) != 9 || len(inc2.Pieces[1]) != 3 || len(inc2.Pieces[3]) != 5 {
		t.Errorf("inc2: chunk 2 %q %v, pieces of 1, 3, 4: %d, %d, %d; want chunk 2 whole, 3, 5 and 9 pieces",
			inc2.Chunks[2], inc2.Pieces[2], len(inc2.Pieces[1]), len(inc2.Pieces[3]), len(inc2.Pieces[4]))
	}
	restoreAndCompare(t, e, "inc2", img, size)
	if rep, err := e.Verify(context.Background(), "backups", "inc2"); err != nil || len(rep.Damaged) != 0 {
		t.Fatalf("verify inc2: %v, %+v", err, rep)
	}
}

// syncWatcher is a posix repository whose batches it watches: it records
// when a batch is synced and when the manifest is put, and can make Sync
// fail.
type syncWatcher struct {
	*posix.Repository
	mu       sync.Mutex
	events   []string
	failSync bool
}

func (w *syncWatcher) event(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, s)
}

func (w *syncWatcher) Put(ctx context.Context, name string, data []byte) error {
	if strings.Contains(name, "/manifests/") {
		w.event("manifest")
	}
	return w.Repository.Put(ctx, name, data)
}

func (w *syncWatcher) NewBatch() repository.Batch {
	return &watchedBatch{Batch: w.Repository.NewBatch(), w: w}
}

type watchedBatch struct {
	repository.Batch
	w *syncWatcher
}

func (b *watchedBatch) Put(ctx context.Context, name string, data []byte) error {
	b.w.event("batch put")
	return b.Batch.Put(ctx, name, data)
}

func (b *watchedBatch) Sync(ctx context.Context) error {
	if b.w.failSync {
		return errors.New("injected: sync failed")
	}
	b.w.event("sync")
	return b.Batch.Sync(ctx)
}

// TestPiecesDurableBeforeManifest: small pieces go through the
// repository's batch, the batch is synced before the manifest is put, and
// when the sync fails the backup fails and leaves no manifest.
func TestPiecesDurableBeforeManifest(t *testing.T) {
	const size = 32 * mib
	img := makeImage(t, "random", size)
	posixRepo, err := posix.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &syncWatcher{Repository: posixRepo}
	e, err := engine.New(w, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	backup(t, e, openFile(t, img, true), "full", "")
	changed := []engine.Range{write(t, img, chunk+8192, 8192, "d1"), write(t, img, 5*chunk, 4096, "d2")}

	w.events = nil
	if _, err := e.Backup(context.Background(), "backups", openFile(t, img, true), engine.BackupSpec{BackupID: "inc", VolumeID: "vol", ParentID: "full", Changed: changed}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.events, ", "); got != "batch put, batch put, sync, manifest" {
		t.Fatalf("events: %s; want two batch puts, then sync, then the manifest", got)
	}
	restoreAndCompare(t, e, "inc", img, size)

	w.events, w.failSync = nil, true
	changed = []engine.Range{write(t, img, 2*chunk, 4096, "d3")}
	_, err = e.Backup(context.Background(), "backups", openFile(t, img, true), engine.BackupSpec{BackupID: "inc2", VolumeID: "vol", ParentID: "inc", Changed: changed})
	if err == nil || !strings.Contains(err.Error(), "sync failed") {
		t.Fatalf("backup with a failing sync: %v", err)
	}
	if _, err := e.LoadManifest(context.Background(), "backups", "inc2"); !errors.Is(err, engine.ErrNoBackup) {
		t.Fatalf("a backup whose chunks were not made durable has a manifest: %v", err)
	}
}
