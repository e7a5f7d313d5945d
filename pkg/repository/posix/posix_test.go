package posix_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
