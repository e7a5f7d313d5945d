package posix_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/repository/repositorytest"
	"github.com/blockvault/blockvault/pkg/testenv"
)

func TestConformance(t *testing.T) {
	repositorytest.Run(t, func(t *testing.T) repository.Repository {
		r, err := posix.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

func TestLeftoverTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "c"), 0o755)
	os.WriteFile(filepath.Join(dir, "c", ".tmp-123-1"), []byte("half"), 0o644)
	r, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "c", ".tmp-123-1")); !os.IsNotExist(err) {
		t.Fatal("a crashed put's temporary file survived")
	}
	n := 0
	r.List(context.Background(), "", func(repository.ObjectInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("listed %d objects", n)
	}
}

// TestFullDisk: a put on a full filesystem fails with ErrNoSpace and
// leaves no object.
func TestFullDisk(t *testing.T) {
	testenv.RequireRoot(t)
	mount := testenv.LookPath(t, "mount")
	dir := t.TempDir()
	if out, err := exec.Command(mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		testenv.Missing(t, "tmpfs mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	r, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Put(context.Background(), "big", make([]byte, 4<<20))
	if !errors.Is(err, repository.ErrNoSpace) {
		t.Fatalf("put on a full disk: %v", err)
	}
	if _, err := r.Stat(context.Background(), "big"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("a failed put left an object: %v", err)
	}
}

// TestBatch: a batch's objects can be read as soon as their put returns,
// leave no temporary file, and never replace an object already stored
// (its file stays the same file); Sync reports an object it cannot make
// durable (here: removed behind the repository's back), and keeps
// reporting it when tried again instead of forgetting it.
func TestBatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "c/old", []byte("same bytes")); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(filepath.Join(dir, "c", "old"))
	if err != nil {
		t.Fatal(err)
	}
	b := r.NewBatch()
	for name, data := range map[string]string{"c/a": "aaa", "c/d/b": "bbbb", "c/old": "same bytes"} {
		if err := b.Put(ctx, name, []byte(data)); err != nil {
			t.Fatalf("batch put %s: %v", name, err)
		}
		if got, err := r.Get(ctx, name); err != nil || string(got) != data {
			t.Fatalf("get %s after a batch put: %q, %v", name, got, err)
		}
	}
	after, err := os.Stat(filepath.Join(dir, "c", "old"))
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("a batch put replaced an object already stored: %v", err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "c", ".tmp-*"))
	if len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}

	if err := b.Put(ctx, "c/gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "c", "gone"))
	for range 2 {
		if err := b.Sync(ctx); err == nil || !strings.Contains(err.Error(), "gone") {
			t.Fatalf("sync of a batch whose object was removed: %v", err)
		}
	}
}
