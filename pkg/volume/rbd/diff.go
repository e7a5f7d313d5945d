//go:build rbd && cgo

package rbd

import (
	"cmp"
	"slices"

	"github.com/blockvault/blockvault/pkg/volume"
	librbd "github.com/ceph/go-ceph/rbd"
)

// diffExtent is an extent librbd's diff-iterate reports: changed (or, from
// no snapshot, allocated), with data (exists) or known to be zeros.
type diffExtent struct {
	off, n int64
	exists bool
}

// diff reports the extents of [off, off+length) of the image (at the snapshot
// or head it is set to) that differ from snapshot from (NoSnapshot: that
// hold data), sorted. Two passes: whole objects first, which fast-diff
// answers from the object maps without reading the objects, then byte
// ranges within the objects that pass reported, listing only those.
func diff(img *librbd.Image, from string, off, length int64) ([]diffExtent, error) {
	if length <= 0 {
		return nil, nil
	}
	var objects []volume.Range
	err := img.DiffIterate(librbd.DiffIterateConfig{
		SnapName:      from,
		Offset:        uint64(off),
		Length:        uint64(length),
		IncludeParent: librbd.IncludeParent,
		WholeObject:   librbd.EnableWholeObject,
		Callback: func(o, n uint64, _ int, _ any) int {
			objects = append(objects, volume.Range{Offset: int64(o), Length: int64(n)})
			return 0
		},
	})
	if err != nil {
		return nil, err
	}
	var out []diffExtent
	for _, r := range mergeRanges(objects) {
		start, end := max(r.Offset, off), min(r.Offset+r.Length, off+length)
		if start >= end {
			continue
		}
		err := img.DiffIterate(librbd.DiffIterateConfig{
			SnapName:      from,
			Offset:        uint64(start),
			Length:        uint64(end - start),
			IncludeParent: librbd.IncludeParent,
			WholeObject:   librbd.DisableWholeObject,
			Callback: func(o, n uint64, exists int, _ any) int {
				out = append(out, diffExtent{off: int64(o), n: int64(n), exists: exists != 0})
				return 0
			},
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b diffExtent) int { return cmp.Compare(a.off, b.off) })
	return out, nil
}

// mergeRanges sorts ranges and merges those that overlap or touch.
func mergeRanges(rs []volume.Range) []volume.Range {
	slices.SortFunc(rs, func(a, b volume.Range) int { return cmp.Compare(a.Offset, b.Offset) })
	var out []volume.Range
	for _, r := range rs {
		if r.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && r.Offset <= out[n-1].Offset+out[n-1].Length {
			out[n-1].Length = max(out[n-1].Length, r.Offset+r.Length-out[n-1].Offset)
			continue
		}
		out = append(out, r)
	}
	return out
}
