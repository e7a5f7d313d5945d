package cinder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/cinder/cindertest"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
)

// objectMeta is an object of a backup's metadata, as Cinder wrote it.
type objectMeta struct {
	Name        string
	Offset      int64
	Length      int64
	Compression string
}

// objectsOf reads a backup's metadata object from a posix repository.
func objectsOf(t *testing.T, root string, l cinder.Link) []objectMeta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, l.Container, l.Prefix+"_metadata"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Objects []map[string]objectMeta
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var out []objectMeta
	for _, e := range m.Objects {
		for name, o := range e {
			o.Name = name
			out = append(out, o)
		}
	}
	return out
}

func TestDamage(t *testing.T) {
	t.Parallel()
	for _, compression := range []string{"zlib", "none"} {
		t.Run(compression, func(t *testing.T) {
			t.Parallel()
			testDamage(t, compression)
		})
	}
}

func testDamage(t *testing.T, compression string) {
	vols := volumes(t, 3*mib, 2)
	c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.Posix, Compression: compression, ObjectSize: 512 << 10, Backups: steps(vols)})
	_, links := parse(t, c)
	for _, tc := range []struct {
		name string
		// damage harms the chain's repository and returns the backup and
		// object the errors must name, and the sentinel they wrap.
		damage func(t *testing.T, root string, links []cinder.Link) (backupID, object string, want error)
		// badData: the damage is to data, none of which a failed restore
		// may write.
		badData bool
	}{
		{name: "byte flipped in a chunk", badData: true, damage: func(t *testing.T, root string, links []cinder.Link) (string, string, error) {
			// An object of the full backup that the incremental left
			// alone: the restore needs all of it.
			o := untouched(t, root, links)
			name := links[0].Container + "/" + o.Name
			flip(t, filepath.Join(root, name), 40)
			return links[0].BackupID, name, cinder.ErrCorrupt
		}},
		{name: "chunk deleted", damage: func(t *testing.T, root string, links []cinder.Link) (string, string, error) {
			o := untouched(t, root, links)
			name := links[0].Container + "/" + o.Name
			if err := os.Remove(filepath.Join(root, name)); err != nil {
				t.Fatal(err)
			}
			return links[0].BackupID, name, cinder.ErrMissing
		}},
		{name: "sha256 changed", damage: func(t *testing.T, root string, links []cinder.Link) (string, string, error) {
			l := links[1]
			name := l.Container + "/" + l.Prefix + "_sha256file"
			p := filepath.Join(root, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			// The first sum's first hex digit, changed.
			i := bytes.Index(b, []byte(`"sha256s": [`))
			i = bytes.IndexByte(b[i+len(`"sha256s": [`):], '"') + i + len(`"sha256s": [`) + 1
			if b[i] == '0' {
				b[i] = '1'
			} else {
				b[i] = '0'
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return l.BackupID, name, cinder.ErrCorrupt
		}},
		{name: "sha256file truncated", damage: func(t *testing.T, root string, links []cinder.Link) (string, string, error) {
			l := links[1]
			name := l.Container + "/" + l.Prefix + "_sha256file"
			if err := os.Truncate(filepath.Join(root, name), 300); err != nil {
				t.Fatal(err)
			}
			return l.BackupID, name, cinder.ErrCorrupt
		}},
		{name: "metadata deleted", damage: func(t *testing.T, root string, links []cinder.Link) (string, string, error) {
			l := links[1]
			name := l.Container + "/" + l.Prefix + "_metadata"
			if err := os.Remove(filepath.Join(root, name)); err != nil {
				t.Fatal(err)
			}
			return l.BackupID, name, cinder.ErrMissing
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A copy of the chain to damage.
			root := t.TempDir()
			if out, err := exec.Command("cp", "-a", c.PosixPath+"/.", root).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			repo := openPosix(t, root)
			backupID, object, want := tc.damage(t, root, links)

			p, err := restoreInto(t, repo, links, 4*mib)
			checkObjectError(t, "restore", err, backupID, object, want)
			t.Logf("restore: %v", err)
			if tc.badData {
				// Every block written is the volume's (the target was
				// zeros): nothing damaged was written as if it were good.
				got, _ := os.ReadFile(p)
				want, _ := os.ReadFile(vols[1])
				for off := 0; off < len(want); off += 32 << 10 {
					g, w := got[off:off+32<<10], want[off:off+32<<10]
					if !bytes.Equal(g, w) && !isZeros(g) {
						t.Fatalf("the block at %d was written with data that is not the volume's", off)
					}
				}
			}

			rep, err := cinder.Verify(context.Background(), repo, links, nil)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if len(rep.Damaged) != 1 {
				t.Fatalf("verify lists %d damaged objects, want 1: %v", len(rep.Damaged), rep.Damaged)
			}
			d := rep.Damaged[0]
			checkObjectError(t, "verify", &d, backupID, object, want)
		})
	}
}

// untouched is an object of the full backup that no later backup of the
// chain overwrote any part of.
func untouched(t *testing.T, root string, links []cinder.Link) objectMeta {
	t.Helper()
	var later []objectMeta
	for _, l := range links[1:] {
		later = append(later, objectsOf(t, root, l)...)
	}
next:
	for _, o := range objectsOf(t, root, links[0]) {
		for _, x := range later {
			if x.Offset < o.Offset+o.Length && o.Offset < x.Offset+x.Length {
				continue next
			}
		}
		return o
	}
	t.Fatal("every object of the full backup was overwritten in part")
	return objectMeta{}
}

// flip inverts the byte at off of a file.
func flip(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// checkObjectError checks that err is an *ObjectError naming backupID and
// object, wrapping want.
func checkObjectError(t *testing.T, what string, err error, backupID, object string, want error) {
	t.Helper()
	var oe *cinder.ObjectError
	if !errors.As(err, &oe) || !errors.Is(err, want) {
		t.Fatalf("%s: %v, want an *ObjectError wrapping %v", what, err, want)
	}
	if oe.BackupID != backupID || oe.Object != object {
		t.Fatalf("%s: names backup %s, object %s; want backup %s, object %s (%v)", what, oe.BackupID, oe.Object, backupID, object, err)
	}
	if !strings.Contains(err.Error(), object) || !strings.Contains(err.Error(), backupID) {
		t.Fatalf("%s: the message does not name the object and backup: %v", what, err)
	}
}

func TestDamageS3(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	vols := volumes(t, 2*mib, 2)
	c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.S3, S3: srv.Config, Compression: "zstd", Backups: steps(vols)})
	recs, links := parse(t, c)
	repo := openS3(t, srv, recs[0].Container)
	ctx := context.Background()
	// The full backup's first object, gone from the bucket; the
	// incremental's sha256file, replaced by garbage.
	gone := links[0].Prefix + "-00001"
	if err := repo.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	sums := links[1].Prefix + "_sha256file"
	if err := repo.Put(ctx, sums, []byte(`{"sha256s": [1, 2`)); err != nil {
		t.Fatal(err)
	}
	_, err := restoreInto(t, repo, links[:1], 3*mib)
	checkObjectError(t, "restore the full backup", err, links[0].BackupID, gone, cinder.ErrMissing)
	_, err = restoreInto(t, repo, links, 3*mib)
	checkObjectError(t, "restore the incremental", err, links[1].BackupID, sums, cinder.ErrCorrupt)
	rep, err := cinder.Verify(ctx, repo, links, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Damaged) != 2 {
		t.Fatalf("verify: %v, want the two objects", rep.Damaged)
	}
	for _, d := range rep.Damaged {
		switch d.Object {
		case gone:
			checkObjectError(t, "verify", &d, links[0].BackupID, gone, cinder.ErrMissing)
		case sums:
			checkObjectError(t, "verify", &d, links[1].BackupID, sums, cinder.ErrCorrupt)
		default:
			t.Errorf("verify lists %v", &d)
		}
	}
}
