package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/blockvault/blockvault/pkg/volume"
	"golang.org/x/sys/unix"
)

// Reflink snapshots share their unchanged blocks with each other: a byte
// range that two snapshots map to the same physical address holds the same
// data in both. The extent maps of two snapshot files (FIEMAP) therefore
// tell what changed between them without reading any data.

// FIEMAP of linux/fiemap.h; golang.org/x/sys/unix has no helper for it.
const (
	fsIOCFiemap           = 0xC020660B
	fiemapFlagSync        = 0x1 // write dirty data back before mapping
	fiemapExtentLast      = 0x1
	fiemapExtentUnwritten = 0x800 // allocated, reads zeros
	fiemapExtentMerged    = 0x1000
	fiemapExtentShared    = 0x2000
	// fiemapComparable are the flags under which an extent's physical
	// address says what it holds. Every other flag (UNKNOWN 0x2, DELALLOC
	// 0x4, ENCODED 0x8, DATA_ENCRYPTED 0x80, NOT_ALIGNED 0x100, DATA_INLINE
	// 0x200, DATA_TAIL 0x400, and any defined later) makes the extent count
	// as changed: its physical address is missing, shared by other data
	// (btrfs inline and compressed extents) or not yet final.
	fiemapComparable = fiemapExtentLast | fiemapExtentUnwritten | fiemapExtentMerged | fiemapExtentShared
	// fiemapBatch is the extents asked for per ioctl.
	fiemapBatch = 512
)

// fiemapExtent is struct fiemap_extent.
type fiemapExtent struct {
	logical  uint64
	physical uint64
	length   uint64
	_        [2]uint64
	flags    uint32
	_        [3]uint32
}

// fiemapRequest is struct fiemap followed by room for fiemapBatch extents.
type fiemapRequest struct {
	start         uint64
	length        uint64
	flags         uint32
	mappedExtents uint32
	extentCount   uint32
	_             uint32
	extents       [fiemapBatch]fiemapExtent
}

// mapping is one extent of a file as FIEMAP reports it, in bytes.
type mapping struct {
	logical, physical, length int64
	flags                     uint32
}

// extentSource yields a file's extents in order of offset; ok is false
// past the last one.
type extentSource func() (m mapping, ok bool, err error)

// fiemapExtents pages through the extents of f over [0, size) with FIEMAP,
// fiemapBatch at a time, so that a map of millions of extents is never held
// whole. The gaps between the extents are holes.
func fiemapExtents(ctx context.Context, f *os.File, size int64) extentSource {
	req := new(fiemapRequest)
	var batch []fiemapExtent
	start, done := int64(0), false
	return func() (mapping, bool, error) {
		for len(batch) == 0 {
			if done || start >= size {
				return mapping{}, false, nil
			}
			if err := ctx.Err(); err != nil {
				return mapping{}, false, err
			}
			req.start, req.length = uint64(start), uint64(size-start)
			req.flags, req.mappedExtents, req.extentCount = fiemapFlagSync, 0, fiemapBatch
			if err := ioctlFiemap(f, req); err != nil {
				if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
					return mapping{}, false, fmt.Errorf("fiemap %s: %w: %w", f.Name(), volume.ErrUnsupported, err)
				}
				return mapping{}, false, fmt.Errorf("fiemap %s: %w", f.Name(), err)
			}
			n := int(req.mappedExtents)
			if n == 0 {
				done = true // a hole up to size
				continue
			}
			last := req.extents[n-1]
			next := int64(last.logical + last.length)
			if last.flags&fiemapExtentLast != 0 || next >= size {
				done = true
			} else if next <= start {
				return mapping{}, false, fmt.Errorf("fiemap %s: no progress past offset %d", f.Name(), start)
			}
			batch, start = req.extents[:n], next
		}
		e := batch[0]
		batch = batch[1:]
		return mapping{logical: int64(e.logical), physical: int64(e.physical), length: int64(e.length), flags: e.flags}, true, nil
	}
}

func ioctlFiemap(f *os.File, req *fiemapRequest) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIOCFiemap, uintptr(unsafe.Pointer(req)))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return e
		}
	}
}

// segmentKind is what a run of a file holds, as far as its extent map says.
type segmentKind uint8

const (
	segZero   segmentKind = iota // a hole or an unwritten extent: reads zeros
	segData                      // written data at logical+delta on disk
	segOpaque                    // cannot tell: compares unequal to anything
)

// segment is a run [start, end) of one kind.
type segment struct {
	start, end int64
	kind       segmentKind
	delta      int64 // physical - logical, for segData
}

// segments turns a file's extents into runs that cover [0, size) exactly,
// one after the other.
type segments struct {
	src     extentSource
	size    int64
	pos     int64   // where the next run starts
	held    mapping // the next extent, read ahead
	hasHeld bool
	srcDone bool
	// disordered is set when an extent starts before the end of the one
	// before it: the map cannot be trusted, the rest is opaque, and the
	// caller must count everything as changed.
	disordered bool
}

// next returns the run starting at s.pos (which is below s.size).
func (s *segments) next() (segment, error) {
	for !s.hasHeld && !s.srcDone && !s.disordered {
		m, ok, err := s.src()
		switch {
		case err != nil:
			return segment{}, err
		case !ok:
			s.srcDone = true
		case m.length <= 0:
		case m.logical < s.pos:
			s.disordered = true
		default:
			s.held, s.hasHeld = m, true
		}
	}
	var seg segment
	switch {
	case s.disordered:
		seg = segment{start: s.pos, end: s.size, kind: segOpaque}
	case !s.hasHeld || s.held.logical >= s.size:
		seg = segment{start: s.pos, end: s.size, kind: segZero} // a hole to the end
	case s.held.logical > s.pos:
		seg = segment{start: s.pos, end: s.held.logical, kind: segZero}
	default:
		m := s.held
		s.hasHeld = false
		seg = segment{start: m.logical, end: min(m.logical+m.length, s.size)}
		switch {
		case m.flags&^fiemapComparable != 0:
			seg.kind = segOpaque
		case m.flags&fiemapExtentUnwritten != 0:
			seg.kind = segZero
		default:
			seg.kind, seg.delta = segData, m.physical-m.logical
		}
	}
	s.pos = seg.end
	return seg, nil
}

// diffExtents returns the runs of [0, size) where two files' extent maps do
// not prove the files equal. Equal are runs that read zeros in both (holes,
// unwritten extents) and runs of written data at the same physical address
// in both. The runs are in order and merged, not rounded. A map whose
// extents are out of order makes all of [0, size) changed.
func diffExtents(a, b extentSource, size int64) ([]volume.Range, error) {
	sa, sb := &segments{src: a, size: size}, &segments{src: b, size: size}
	var x, y segment
	var out []volume.Range
	for pos := int64(0); pos < size; {
		var err error
		if x.end <= pos {
			if x, err = sa.next(); err != nil {
				return nil, err
			}
		}
		if y.end <= pos {
			if y, err = sb.next(); err != nil {
				return nil, err
			}
		}
		end := min(x.end, y.end)
		same := x.kind == segZero && y.kind == segZero ||
			x.kind == segData && y.kind == segData && x.delta == y.delta
		if !same {
			if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == pos {
				out[n-1].Length += end - pos
			} else {
				out = append(out, volume.Range{Offset: pos, Length: end - pos})
			}
		}
		pos = end
	}
	if sa.disordered || sb.disordered {
		return []volume.Range{{Offset: 0, Length: size}}, nil
	}
	return out, nil
}

// fsBlockSize is the block size of f's filesystem, at least 4096: the unit
// changed ranges are rounded to in reflink mode.
func fsBlockSize(f *os.File) int64 {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err == nil && st.Bsize > 4096 && st.Bsize <= 1<<20 && st.Bsize&(st.Bsize-1) == 0 {
		return st.Bsize
	}
	return 4096
}
