package engine_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/blockvault/blockvault/pkg/engine"
)

// TestFullBackupReusesChunks: a second full backup with ReuseFrom stores
// only the chunks that changed, leaves the objects of the others as they
// were, lists every chunk itself, restores byte for byte, and still
// restores after the backup it reused from is deleted and garbage
// collected. A ReuseFrom that names no backup stores everything.
func TestFullBackupReusesChunks(t *testing.T) {
	e, dir := newEngine(t, nil)
	ctx := context.Background()
	size := 64 * mib
	img := makeImage(t, "mixed", size)
	first := backup(t, e, openFile(t, img, true), "full1", "")
	before := chunkFiles(t, dir)

	changed := change(t, img, size, 3*mib, mib, "reuse")
	want := filepath.Join(t.TempDir(), "want")
	if out, err := exec.Command("cp", "--sparse=always", img, want).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	m, err := e.Backup(ctx, "backups", openFile(t, img, true), engine.BackupSpec{BackupID: "full2", VolumeID: "vol", ReuseFrom: "full1"})
	if err != nil {
		t.Fatal(err)
	}
	if m.ParentID != "" {
		t.Fatalf("a full backup records parent %q", m.ParentID)
	}
	// A changed chunk of mixed data may have been a hole before: at most
	// the touched chunks are new.
	if m.NewChunks == 0 || m.NewChunks > changed {
		t.Fatalf("the second full backup stored %d new chunks; %d chunks were touched", m.NewChunks, changed)
	}
	// Every chunk the first backup stored and the second did not replace
	// is listed, at the same place.
	for i, id := range first.Chunks {
		if id != "" && m.Chunks[i] == "" {
			t.Fatalf("chunk %d is missing from the second full backup's manifest", i)
		}
	}
	rewritten := 0
	after := chunkFiles(t, dir)
	for name, fi := range before {
		if now, ok := after[name]; ok && !os.SameFile(fi, now) {
			rewritten++
		}
	}
	if rewritten > 0 {
		t.Fatalf("%d chunk objects the first backup stored were written again", rewritten)
	}
	restoreAndCompare(t, e, "full2", want, size)

	if err := e.Delete(ctx, "backups", "full1"); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, e, "full2", want, size)

	m3, err := e.Backup(ctx, "backups", openFile(t, img, true), engine.BackupSpec{BackupID: "full3", VolumeID: "vol", ReuseFrom: "full1"})
	if err != nil {
		t.Fatalf("reusing from a deleted backup: %v", err)
	}
	if m3.NewChunks != m3.DataChunks {
		t.Fatalf("reusing from a deleted backup: %d new chunks of %d", m3.NewChunks, m3.DataChunks)
	}
}

// chunkFiles maps each chunk object of a posix repository to its file info.
func chunkFiles(t *testing.T, dir string) map[string]fs.FileInfo {
	t.Helper()
	out := map[string]fs.FileInfo{}
	err := filepath.WalkDir(filepath.Join(dir, "backups", "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		out[p] = fi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no chunk objects in the repository")
	}
	return out
}
