package file_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/file"
)

// TestChangedRangesAfterRestart: copy-before-write changed ranges come from
// the snapshots' maps: in 4 KiB sixteenths of a block from the driver that
// took the snapshots, in whole 64 KiB blocks (the maps on disk) from a new
// driver on the same pool. Both cover every write.
func TestChangedRangesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d := newDriver(t, dir, file.ModeCopyBeforeWrite)
	if err := d.CreateVolume(ctx, "v", 4<<20); err != nil {
		t.Fatal(err)
	}
	dev, err := d.OpenVolume(ctx, "v", false)
	if err != nil {
		t.Fatal(err)
	}
	write := func(off int64) {
		t.Helper()
		if _, err := dev.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	mustSnapshot(t, d, "v", "s1")
	write(1<<20 + 100)
	write(3 << 20)
	mustSnapshot(t, d, "v", "s2")
	write(2 << 20) // after s2: in s1's map too, so reported
	before := mustChangedRanges(t, d, "v", "s1", "s2")
	dev.Close()
	d.Close()

	d2 := newDriver(t, dir, file.ModeCopyBeforeWrite)
	after := mustChangedRanges(t, d2, "v", "s1", "s2")
	// The write at 1 MiB + 100 touches two 4 KiB pages.
	wantBefore := []volume.Range{{Offset: 1 << 20, Length: 8 << 10}, {Offset: 2 << 20, Length: 4 << 10}, {Offset: 3 << 20, Length: 4 << 10}}
	wantAfter := []volume.Range{{Offset: 1 << 20, Length: 64 << 10}, {Offset: 2 << 20, Length: 64 << 10}, {Offset: 3 << 20, Length: 64 << 10}}
	if !reflect.DeepEqual(before, wantBefore) || !reflect.DeepEqual(after, wantAfter) {
		t.Fatalf("changed ranges before the restart %v (want %v), after %v (want %v)", before, wantBefore, after, wantAfter)
	}
	if err := d2.DeleteSnapshot(ctx, "v", "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.ChangedRanges(ctx, "v", "s1", "s2"); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("changed ranges to a deleted snapshot: %v", err)
	}
}

// TestChangedRangesRatio measures how much more than what was written the
// driver reports: 1% of a 256 MiB volume rewritten in scattered 4 KiB
// writes, then 1 MiB runs at offsets that are 4 KiB- but not 64 KiB-aligned.
//
// Copy-before-write saves whole blocks of 64 KiB but reports the 4 KiB
// sixteenths of them that were written: exactly what was written.
// Reflink compares extent maps, which XFS keeps exact to the filesystem
// block: the allocation hints (extsize, cowextsize 1 MiB) make XFS reserve
// 1 MiB on the first write to a shared or unallocated megabyte, but only the
// blocks written are remapped into the file (the rest stays preallocated in
// the copy-on-write fork, or unwritten, which a reflink does not copy), so
// the report is the written bytes rounded to 4 KiB.
func TestChangedRangesRatio(t *testing.T) {
	for _, c := range []struct {
		mode        string
		xfs         bool
		maxScatter  float64 // reported/changed bound for scattered 4 KiB writes
		maxMiBRuns  float64 // for 1 MiB runs
		description string
	}{
		{file.ModeCopyBeforeWrite, false, 1, 1, "4 KiB sixteenths of 64 KiB blocks"},
		{file.ModeReflink, true, 1, 257.0 / 256, "FIEMAP, 4 KiB blocks"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			dir := t.TempDir()
			if c.xfs {
				dir = testenv.XFSDir(t, 1<<30)
			}
			d := newDriver(t, dir+"/pool", c.mode)
			ctx := context.Background()
			const size = 256 << 20
			if err := d.CreateVolume(ctx, "v", size); err != nil {
				t.Fatal(err)
			}
			dev, err := d.OpenVolume(ctx, "v", false)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			mib := bytes.Repeat([]byte{0x11}, 1<<20)
			for off := int64(0); off < size; off += int64(len(mib)) {
				mustWrite(t, dev, mib, off)
			}
			mustFlush(t, dev)
			mustSnapshot(t, d, "v", "s0")
			_, free0, _ := d.Space(ctx)

			// Scattered 4 KiB writes, 1% of the volume, distinct blocks.
			rng := rand.New(rand.NewPCG(1, 2))
			n := size / 4096 / 100
			var scattered []volume.Range
			page := bytes.Repeat([]byte{0xa5}, 4096)
			for _, b := range rng.Perm(size / 4096)[:n] {
				off := int64(b) * 4096
				mustWrite(t, dev, page, off)
				scattered = append(scattered, volume.Range{Offset: off, Length: 4096})
			}
			mustFlush(t, dev)
			_, free1, _ := d.Space(ctx)
			mustSnapshot(t, d, "v", "s1")
			check(t, d, "s0", "s1", scattered, c.maxScatter, "scattered 4 KiB writes, "+c.description)
			if c.xfs {
				t.Logf("pool free space fell by %d KiB for %d KiB written (copy-on-write preallocation of cowextsize)",
					(free0-free1)>>10, int64(n)*4)
			}
			if err := d.DeleteSnapshot(ctx, "v", "s0"); err != nil {
				t.Fatal(err)
			}

			// 1 MiB runs at 4 KiB-aligned offsets, apart from each other.
			var runs []volume.Range
			for i := range 8 {
				off := int64(i)*(32<<20) + int64(rng.IntN(4096))*4096
				mustWrite(t, dev, bytes.Repeat([]byte{byte(0xb0 + i)}, 1<<20), off)
				runs = append(runs, volume.Range{Offset: off, Length: 1 << 20})
			}
			mustSnapshot(t, d, "v", "s2")
			check(t, d, "s1", "s2", runs, c.maxMiBRuns, "1 MiB runs, "+c.description)
		})
	}
}

// check asserts that the changed ranges between two snapshots cover the
// written ranges (distinct) and total at most maxRatio times them.
func check(t *testing.T, d *file.Driver, from, to string, written []volume.Range, maxRatio float64, what string) {
	t.Helper()
	rs := mustChangedRanges(t, d, "v", from, to)
	var changed, reported int64
	for _, w := range written {
		changed += w.Length
		if !coveredBy(rs, w) {
			t.Fatalf("%s: write %d@%d is not in the changed ranges", what, w.Length, w.Offset)
		}
	}
	for _, r := range rs {
		reported += r.Length
	}
	ratio := float64(reported) / float64(changed)
	t.Logf("%s: %d writes, %d bytes changed, %d bytes reported in %d ranges: %.3fx", what, len(written), changed, reported, len(rs), ratio)
	if ratio > maxRatio {
		t.Errorf("%s: reported %.3f times the bytes changed, want at most %.3f", what, ratio, maxRatio)
	}
}

func coveredBy(rs []volume.Range, w volume.Range) bool {
	for _, r := range rs {
		if r.Offset <= w.Offset && w.Offset+w.Length <= r.Offset+r.Length {
			return true
		}
	}
	return false
}

func mustSnapshot(t *testing.T, d *file.Driver, vol, id string) {
	t.Helper()
	if err := d.CreateSnapshot(context.Background(), vol, id); err != nil {
		t.Fatalf("snapshot %s: %v", id, err)
	}
}

func mustChangedRanges(t *testing.T, d *file.Driver, vol, from, to string) []volume.Range {
	t.Helper()
	rs, err := d.ChangedRanges(context.Background(), vol, from, to)
	if err != nil {
		t.Fatalf("changed ranges %s -> %s: %v", from, to, err)
	}
	return rs
}

func mustWrite(t *testing.T, dev blockdev.Device, p []byte, off int64) {
	t.Helper()
	if _, err := dev.WriteAt(p, off); err != nil {
		t.Fatalf("write %d@%d: %v", len(p), off, err)
	}
}

func mustFlush(t *testing.T, dev blockdev.Device) {
	t.Helper()
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestChangedRangesCoverDifferences: whatever is written (unaligned writes
// across blocks, zeroing) and whenever snapshots are taken, every byte that
// differs between two snapshots lies in their changed ranges, asked in
// either order; also from a new driver on the same pool (after a restart).
func TestChangedRangesCoverDifferences(t *testing.T) {
	for _, mode := range []string{file.ModeCopyBeforeWrite, file.ModeReflink} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			if mode == file.ModeReflink {
				dir = testenv.XFSDir(t, 1<<30)
			}
			dir += "/pool"
			ctx := context.Background()
			d := newDriver(t, dir, mode)
			const size = 32 << 20
			if err := d.CreateVolume(ctx, "v", size); err != nil {
				t.Fatal(err)
			}
			dev, err := d.OpenVolume(ctx, "v", false)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(7, 9))
			var snaps []string
			// Sparse writes, so that a change reported in the wrong place
			// leaves a difference uncovered.
			for step := 0; step < 400; step++ {
				off := rng.Int64N(size - 1)
				length := min(1+rng.Int64N(24<<10), size-off)
				switch r := rng.IntN(40); {
				case r < 2 && len(snaps) < 8:
					id := fmt.Sprint("s", len(snaps))
					mustSnapshot(t, d, "v", id)
					snaps = append(snaps, id)
				case r < 6:
					if err := dev.Zero(off, length); err != nil {
						t.Fatal(err)
					}
				default:
					p := make([]byte, length)
					for i := range p {
						p[i] = byte(rng.IntN(255) + 1)
					}
					mustWrite(t, dev, p, off)
				}
			}
			mustSnapshot(t, d, "v", "last")
			snaps = append(snaps, "last")
			dev.Close()

			checkAll := func(d *file.Driver, when string) {
				images := map[string][]byte{}
				for _, id := range snaps {
					s, err := d.OpenSnapshot(ctx, "v", id)
					if err != nil {
						t.Fatal(err)
					}
					images[id] = make([]byte, size)
					if _, err := s.ReadAt(images[id], 0); err != nil {
						t.Fatal(err)
					}
					s.Close()
				}
				for i, a := range snaps {
					for _, b := range snaps[i+1:] {
						rs := mustChangedRanges(t, d, "v", a, b)
						if back := mustChangedRanges(t, d, "v", b, a); !reflect.DeepEqual(rs, back) {
							t.Fatalf("%s: changed ranges %s -> %s %v, the other way %v", when, a, b, rs, back)
						}
						var differ, reported int64
						for page := int64(0); page < size; page += 4096 {
							if bytes.Equal(images[a][page:page+4096], images[b][page:page+4096]) {
								continue
							}
							for off := page; off < page+4096; off++ {
								if images[a][off] != images[b][off] {
									differ++
									if !coveredBy(rs, volume.Range{Offset: off, Length: 1}) {
										t.Fatalf("%s: byte %d differs between %s and %s, outside their %d changed ranges", when, off, a, b, len(rs))
									}
								}
							}
						}
						for _, r := range rs {
							reported += r.Length
						}
						t.Logf("%s: %s -> %s: %d bytes differ, %d reported in %d ranges", when, a, b, differ, reported, len(rs))
					}
				}
			}
			checkAll(d, "same driver")
			d.Close()
			checkAll(newDriver(t, dir, mode), "after a restart")
		})
	}
}
