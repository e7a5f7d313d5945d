package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// XFSDir returns the mount point of a fresh XFS filesystem with reflink, on
// a loop-mounted sparse image of size bytes; it is unmounted (and the loop
// device detached) when the test ends. Without root, mkfs.xfs or loop
// devices the test fails in CI and is skipped elsewhere.
func XFSDir(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t)
	mkfs := LookPath(t, "mkfs.xfs")
	mount := LookPath(t, "mount")
	umount := LookPath(t, "umount")
	dir, err := os.MkdirTemp("", "blockvault-xfs-")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "fs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		Missing(t, "mkfs.xfs with reflink failed: %v: %s", err, out)
	}
	if out, err := exec.Command(mount, "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		Missing(t, "loop mount of an XFS image failed (loop devices?): %v: %s", err, out)
	}
	t.Cleanup(func() {
		var out []byte
		var err error
		for i := 0; i < 50; i++ {
			if out, err = exec.Command(umount, mnt).CombinedOutput(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && !strings.Contains(string(out), "not mounted") {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			return
		}
		os.RemoveAll(dir)
	})
	return mnt
}
