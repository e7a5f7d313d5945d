package cinder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/cinder/cindertest"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
)

const mib = 1 << 20

// volumes writes the states of a volume that a chain of backups is made
// of, one file each: text that compresses, random data that does not, and
// holes; each later state changes data, fills part of a hole, zeroes data,
// and changes a single byte. size need not be a whole number of blocks.
func volumes(t testing.TB, size int64, states int) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(size), 23))
	dir := t.TempDir()
	cur := make([]byte, size)
	for off := int64(0); off < size; off += 512 << 10 {
		end := min(off+512<<10, size)
		switch (off / (512 << 10)) % 4 {
		case 0: // text
			var b bytes.Buffer
			for int64(b.Len()) < end-off {
				fmt.Fprintf(&b, "blockvault imports Cinder backups, line %d\n", rng.IntN(1000))
			}
			copy(cur[off:end], b.Bytes())
		case 1: // random
			for i := off; i < end; i++ {
				cur[i] = byte(rng.Uint32())
			}
		case 2: // a hole
		case 3: // half random, half zeros
			for i := off; i < off+(end-off)/2; i++ {
				cur[i] = byte(rng.Uint32())
			}
		}
	}
	var paths []string
	for s := range states {
		if s > 0 {
			// Change random data, write into a hole, zero some data, and
			// flip one byte.
			at := rng.Int64N(size - 200<<10)
			for i := at; i < at+100<<10; i++ {
				cur[i] = byte(rng.Uint32())
			}
			hole := int64(2*512<<10) + rng.Int64N(256<<10)
			if hole+64<<10 < size {
				copy(cur[hole:hole+64<<10], bytes.Repeat([]byte("filled "), 64<<10/7))
			}
			zero := rng.Int64N(size - 64<<10)
			clear(cur[zero : zero+64<<10])
			cur[rng.Int64N(size)] ^= 0xff
		}
		p := filepath.Join(dir, fmt.Sprintf("volume-%d", s))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		// Sparse where zero, as a thin volume is.
		for off := int64(0); off < size; off += 64 << 10 {
			b := cur[off:min(off+64<<10, size)]
			if !bytes.Equal(b, make([]byte, len(b))) {
				if _, err := f.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		paths = append(paths, p)
	}
	return paths
}

// steps makes the harness's steps of volume states.
func steps(paths []string) []cindertest.Step {
	var s []cindertest.Step
	for i, p := range paths {
		s = append(s, cindertest.Step{Volume: p, Name: fmt.Sprintf("backup %d", i), Description: fmt.Sprintf("state %d of the volume", i)})
	}
	return s
}

// parse parses a chain's export records and returns its links.
func parse(t *testing.T, c cindertest.Chain) ([]*cinder.Record, []cinder.Link) {
	t.Helper()
	var recs []*cinder.Record
	var links []cinder.Link
	for _, er := range c.Records {
		r, err := cinder.ParseExportRecord(er.BackupService, er.BackupURL)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		links = append(links, r.Link())
	}
	return recs, links
}

func openPosix(t testing.TB, dir string) repository.Repository {
	t.Helper()
	r, err := posix.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openS3(t *testing.T, srv *s3test.Server, bucket string) repository.Repository {
	t.Helper()
	cfg := srv.Config
	cfg.Bucket, cfg.CreateBucket = bucket, false
	r, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// restoreInto restores chain into a new sparse file of size bytes and
// returns its path.
func restoreInto(t *testing.T, repo repository.Repository, chain []cinder.Link, size int64) (string, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "restored")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	dst, err := blockdev.OpenFileForBulkWrites(p)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var last, total int64
	err = cinder.Restore(context.Background(), repo, chain, dst, func(done, tot int64) { last, total = done, tot })
	if err == nil && (last != total || total == 0) {
		t.Errorf("the last progress said %d of %d bytes", last, total)
	}
	return p, err
}

// sameVolume checks that the restored file holds the volume's bytes, then
// zeros, and that the volume's 64 KiB runs of zeros are holes.
func sameVolume(t *testing.T, restored, volume string) {
	t.Helper()
	want, err := os.ReadFile(volume)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(restored)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(want)], want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("restored %s differs from %s from byte %d on", restored, volume, i)
			}
		}
	}
	if !isZeros(got[len(want):]) {
		t.Fatalf("restored %s has data past the volume's %d bytes", restored, len(want))
	}
	f, err := os.Open(restored)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	holes, zeros := 0, 0
	for off := 0; off+64<<10 <= len(want); off += 64 << 10 {
		if !isZeros(want[off : off+64<<10]) {
			continue
		}
		zeros++
		ext, err := blockdev.SeekExtents(f, int64(off), 64<<10)
		if err == nil && len(ext) == 1 && ext[0].Hole {
			holes++
		}
	}
	if zeros > 0 && holes == 0 {
		t.Errorf("none of the volume's %d runs of 64 KiB zeros is a hole in the restored file", zeros)
	}
}

func isZeros(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func TestRestorePosix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		compression string
		size        int64
		objectSize  int
	}{
		{"zlib", 5*mib + 12345, 1 * mib}, // a short last block
		{"zstd", 6 * mib, 1 * mib},
		{"bz2", 3 * mib, 512 << 10},
		{"none", 3 * mib, 2 * mib},
	} {
		t.Run(tc.compression, func(t *testing.T) {
			t.Parallel()
			vols := volumes(t, tc.size, 3)
			c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.Posix, Compression: tc.compression, ObjectSize: tc.objectSize, Backups: steps(vols)})
			recs, links := parse(t, c)
			repo := openPosix(t, c.PosixPath)
			checkChain(t, repo, recs, links, vols, tc.compression)
		})
	}
}

func TestRestoreS3(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	for _, compression := range []string{"zlib", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			vols := volumes(t, 4*mib, 3)
			c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.S3, S3: srv.Config, Compression: compression, ObjectSize: 1 * mib, AvailabilityZone: "az-" + compression, Backups: steps(vols)})
			recs, links := parse(t, c)
			if recs[0].Container != srv.Config.Bucket {
				t.Fatalf("container %q, want the bucket %q", recs[0].Container, srv.Config.Bucket)
			}
			repo := openS3(t, srv, recs[0].Container)
			checkChain(t, repo, recs, links, vols, compression)
		})
	}
}

// checkChain restores every backup of a chain (each over its parents) and
// compares it with the volume it was made of, and verifies the chain.
func checkChain(t *testing.T, repo repository.Repository, recs []*cinder.Record, links []cinder.Link, vols []string, compression string) {
	t.Helper()
	ctx := context.Background()
	for i, r := range recs {
		if i == 0 && r.Incremental() || i > 0 && r.ParentID != recs[i-1].ID {
			t.Fatalf("backup %d: parent %q", i, r.ParentID)
		}
	}
	// Cinder compressed what paid (and stored the random data raw).
	used := map[string]int{}
	err := repo.List(ctx, "", func(oi repository.ObjectInfo) error {
		if !strings.HasSuffix(oi.Name, "_metadata") {
			return nil
		}
		b, err := repo.Get(ctx, oi.Name)
		if err != nil {
			return err
		}
		var m struct {
			Objects []map[string]struct{ Compression string }
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		for _, o := range m.Objects {
			for _, v := range o {
				used[v.Compression]++
			}
		}
		return nil
	})
	if err != nil || used[compression] == 0 {
		t.Fatalf("objects by compression %v (%v), want some %s", used, err, compression)
	}
	stored := 0
	for k := 1; k <= len(links); k++ {
		info, err := cinder.Inspect(ctx, repo, links[:k])
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(vols[k-1])
		if info.Size != fi.Size() || info.BlockSize != 32768 {
			t.Fatalf("backup %d: Inspect says %+v, the volume has %d bytes", k-1, info, fi.Size())
		}
		stored = info.Objects
		p, err := restoreInto(t, repo, links[:k], info.Size+mib)
		if err != nil {
			t.Fatalf("restore backup %d: %v", k-1, err)
		}
		sameVolume(t, p, vols[k-1])
	}
	rep, err := cinder.Verify(ctx, repo, links, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Damaged) != 0 || rep.Objects != stored {
		t.Fatalf("verify: %d objects checked of %d, damaged %v", rep.Objects, stored, rep.Damaged)
	}
	t.Logf("%s: %d backups, %d objects (by compression %v), restored and verified", compression, len(links), stored, used)
}

func TestBrokenChain(t *testing.T) {
	t.Parallel()
	vols := volumes(t, 2*mib, 3)
	c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.Posix, Backups: steps(vols)})
	_, links := parse(t, c)
	repo := openPosix(t, c.PosixPath)
	dst := filepath.Join(t.TempDir(), "dst")
	os.WriteFile(dst, make([]byte, 3*mib), 0o644)
	for name, chain := range map[string][]cinder.Link{
		"incremental alone":  links[2:],
		"a parent left out":  {links[0], links[2]},
		"out of order":       {links[0], links[2], links[1]},
		"newest first":       {links[2], links[1], links[0]},
		"no backups":         nil,
		"full twice":         {links[0], links[0]},
		"another's metadata": {links[0], {BackupID: links[1].BackupID, Kind: links[1].Kind, Container: links[0].Container, Prefix: links[0].Prefix}},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := blockdev.OpenFile(dst, false)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			err = cinder.Restore(context.Background(), repo, chain, d, nil)
			if !errors.Is(err, cinder.ErrBrokenChain) && !errors.Is(err, cinder.ErrCorrupt) {
				t.Fatalf("restore: %v, want ErrBrokenChain", err)
			}
			t.Log(err)
		})
	}
}
