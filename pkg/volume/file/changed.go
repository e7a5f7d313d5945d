package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/blockvault/blockvault/pkg/volume"
)

// ChangedRanges implements volume.ChangedRanger: the ranges of a volume that
// may differ between two of its snapshots, given in either order. The answer
// is a superset of the bytes that differ (it never misses a change), sorted,
// merged, aligned to the driver's unit and clipped to the larger snapshot's
// size; where the two sizes differ (the volume was extended in between),
// everything past the smaller one is reported. A snapshot compared with
// itself has no changed ranges.
//
//   - copy-before-write: a block that differs between two snapshots was
//     written between their creation times, so the older snapshot saved it;
//     the answer is the union of both snapshots' maps. Each snapshot taken
//     by this process also knows which sixteenths of its saved blocks (4
//     KiB at least) were written, and answers in those; one loaded after a
//     restart answers in whole blocks of the copy-before-write granularity.
//     It also holds what was written since the newer snapshot was taken
//     (the older one saved those too).
//   - reflink: the snapshots' extent maps are compared (see fiemap.go);
//     only runs written since the older snapshot map to new places, in
//     filesystem blocks.
func (d *Driver) ChangedRanges(ctx context.Context, volumeID, fromSnapshotID, toSnapshotID string) ([]volume.Range, error) {
	for _, id := range []string{volumeID, fromSnapshotID, toSnapshotID} {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	return d.pit.changedRanges(ctx, volumeID, fromSnapshotID, toSnapshotID)
}

// changedRanges answers ChangedRanges from the copy-before-write maps,
// read under the volume's lock since writers set them.
func (m cbwMode) changedRanges(_ context.Context, volumeID, fromID, toID string) ([]volume.Range, error) {
	st, err := m.d.state(volumeID)
	if err != nil {
		return nil, err
	}
	defer m.d.release(st)
	st.lock.RLock()
	defer st.lock.RUnlock()
	var snaps [2]*cbwSnap
	for i, id := range []string{fromID, toID} {
		if snaps[i] = st.snapshotLocked(id); snaps[i] == nil {
			return nil, fmt.Errorf("snapshot %s of volume %s: %w", id, volumeID, volume.ErrNotFound)
		}
	}
	if fromID == toID {
		return nil, nil
	}
	a, b := snaps[0], snaps[1]
	lo, hi := min(a.size, b.size), max(a.size, b.size)
	sub := st.sub()
	all := uint16(1<<(st.bs/sub) - 1)
	var out []volume.Range
	for blk, n := int64(0), st.blocks(lo); blk < n; blk++ {
		mask := a.changedIn(blk, all) | b.changedIn(blk, all)
		for k := int64(0); mask != 0; k, mask = k+1, mask>>1 {
			if mask&1 == 0 {
				continue
			}
			off := blk*st.bs + k*sub
			if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == off {
				out[n-1].Length += sub
				continue
			}
			out = append(out, volume.Range{Offset: off, Length: sub})
		}
	}
	if hi > lo {
		out = append(out, volume.Range{Offset: lo, Length: hi - lo})
	}
	return normalizeRanges(out, sub, hi), nil
}

// isSaved reports whether block b is saved in the snapshot's store. A map
// shorter than the snapshot (damaged) counts its missing blocks as saved,
// so that they are reported as changed.
func (sn *cbwSnap) isSaved(b int64) bool {
	return b >= int64(len(sn.saved)) || sn.saved[b] != 0
}

// changedIn is which sixteenths of block b were written since the snapshot
// (bits of all): none where the block is not saved; where it is, those its
// written map names, or all of them when it has none (a snapshot loaded
// after a restart) or names none (never so, but all is the safe answer).
func (sn *cbwSnap) changedIn(b int64, all uint16) uint16 {
	if !sn.isSaved(b) {
		return 0
	}
	if b < int64(len(sn.written)) && sn.written[b] != 0 {
		return sn.written[b] & all
	}
	return all
}

// changedRanges answers ChangedRanges by comparing the extent maps of the
// two snapshot files. Snapshot files are never written, so the maps cannot
// change while they are read.
func (m reflinkMode) changedRanges(ctx context.Context, volumeID, fromID, toID string) ([]volume.Range, error) {
	d := m.d
	if _, err := os.Stat(d.volumePath(volumeID)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", volumeID, volume.ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("changed ranges of volume %s: %w", volumeID, err)
	}
	var files [2]*os.File
	for i, id := range []string{fromID, toID} {
		f, err := os.Open(d.snapPath(volumeID, id, ".img"))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("snapshot %s of volume %s: %w", id, volumeID, volume.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("changed ranges of volume %s: %w", volumeID, err)
		}
		defer f.Close()
		files[i] = f
	}
	if fromID == toID {
		return nil, nil
	}
	var sizes [2]int64
	for i, f := range files {
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("changed ranges of volume %s: %w", volumeID, err)
		}
		sizes[i] = fi.Size()
	}
	lo, hi := min(sizes[0], sizes[1]), max(sizes[0], sizes[1])
	out, err := diffExtents(fiemapExtents(ctx, files[0], lo), fiemapExtents(ctx, files[1], lo), lo)
	if err != nil {
		return nil, fmt.Errorf("changed ranges of volume %s: %w", volumeID, err)
	}
	if hi > lo {
		out = append(out, volume.Range{Offset: lo, Length: hi - lo})
	}
	return normalizeRanges(out, fsBlockSize(files[0]), hi), nil
}

// normalizeRanges rounds ranges outward to multiples of align, clips them
// to [0, size), sorts them and merges those that overlap or touch.
func normalizeRanges(rs []volume.Range, align, size int64) []volume.Range {
	var out []volume.Range
	for _, r := range rs {
		start := r.Offset / align * align
		end := min((r.Offset+r.Length+align-1)/align*align, size)
		if r.Length > 0 && start < end {
			out = append(out, volume.Range{Offset: start, Length: end - start})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Offset < out[j].Offset })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Offset <= merged[n-1].Offset+merged[n-1].Length {
			merged[n-1].Length = max(merged[n-1].Length, r.Offset+r.Length-merged[n-1].Offset)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}
