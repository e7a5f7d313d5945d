//go:build rbd && cgo

package rbd

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/blockvault/blockvault/pkg/blockdev"
	librbd "github.com/ceph/go-ceph/rbd"
)

// device is a blockdev.Device over an image handle of its own (librbd's
// reads and writes at an offset are safe to call concurrently).
type device struct {
	d        *Driver
	name     string // image
	snap     string // "" for the image's head
	size     int64
	readOnly bool

	// mu is held (read) by every I/O and (write) by Close, which frees the
	// handle.
	mu  sync.RWMutex
	img *librbd.Image // nil once closed
}

var errDeviceClosed = errors.New("rbd driver: device is closed")

// maxOp is the most one discard or write-same covers: librbd refuses
// lengths past INT_MAX.
const maxOp = 1 << 30

func (v *device) Size() int64    { return v.size }
func (v *device) ReadOnly() bool { return v.readOnly }

func (v *device) what() string {
	if v.snap != "" {
		return v.name + "@" + v.snap
	}
	return v.name
}

// with runs f on the open handle.
func (v *device) with(f func(img *librbd.Image) error) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.img == nil {
		return fmt.Errorf("image %s: %w", v.what(), errDeviceClosed)
	}
	return f(v.img)
}

func (v *device) ReadAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckRange(v.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	var n int
	err := v.with(func(img *librbd.Image) error {
		var err error
		n, err = img.ReadAt(p, off)
		return err
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return n, v.d.translate(err, "read %d bytes at %d from image %s", len(p), off, v.what())
	}
	return n, err
}

func (v *device) WriteAt(p []byte, off int64) (int, error) {
	if v.readOnly {
		return 0, fmt.Errorf("image %s: %w", v.what(), blockdev.ErrReadOnly)
	}
	if err := blockdev.CheckRange(v.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	var n int
	err := v.with(func(img *librbd.Image) error {
		var err error
		n, err = img.WriteAt(p, off)
		return err
	})
	if err != nil {
		// go-ceph reports every failed write as EPERM, whatever librbd said.
		return n, v.d.translate(err, "write %d bytes at %d to image %s", len(p), off, v.what())
	}
	return n, nil
}

// Flush implements blockdev.Device: librbd's cache written back.
func (v *device) Flush() error {
	return v.d.translate(v.with(func(img *librbd.Image) error { return img.Flush() }), "flush image %s", v.what())
}

// Trim implements blockdev.Device. librbd's plain discard skips the parts
// of a range not aligned to rbd_discard_granularity_bytes (reads there then
// return the old data), so a trim zeroes the range as Zero does, which
// librbd carries out as a discard of exactly the range.
func (v *device) Trim(off, length int64) error { return v.Zero(off, length) }

var zeros [512]byte

// Zero implements blockdev.Device: a write-same of zeros, which librbd
// turns into a discard of exactly the range (rbd_discard_on_zeroed_write_same,
// on by default): whole objects are removed, parts of objects zeroed or
// truncated, and reads of the range give zeros, unaligned edges included.
func (v *device) Zero(off, length int64) error {
	if v.readOnly {
		return fmt.Errorf("image %s: %w", v.what(), blockdev.ErrReadOnly)
	}
	if err := blockdev.CheckRange(v.size, off, length); err != nil {
		return err
	}
	return v.with(func(img *librbd.Image) error {
		for length > 0 {
			n := min(length, maxOp)
			// The pattern's length must divide the range's: 512 for the
			// sizes the volume manager uses, 1 byte otherwise.
			pattern := zeros[:]
			if n%int64(len(pattern)) != 0 {
				pattern = zeros[:1]
			}
			if _, err := img.WriteSame(uint64(off), uint64(n), pattern, 0); err != nil {
				return v.d.translate(err, "zero %d bytes at %d of image %s", n, off, v.what())
			}
			off += n
			length -= n
		}
		return nil
	})
}

// Extents implements blockdev.Device: the image's allocated extents (its
// parent's too, for a clone) from librbd's diff from nothing are data, the
// rest holes.
func (v *device) Extents(off, length int64) ([]blockdev.Extent, error) {
	if err := blockdev.CheckRange(v.size, off, length); err != nil {
		return nil, err
	}
	var exts []diffExtent
	err := v.with(func(img *librbd.Image) error {
		var err error
		exts, err = diff(img, librbd.NoSnapshot, off, length)
		return err
	})
	if err != nil {
		return nil, v.d.translate(err, "extents of image %s", v.what())
	}
	var out []blockdev.Extent
	add := func(e blockdev.Extent) {
		if e.Length <= 0 {
			return
		}
		if n := len(out); n > 0 && out[n-1].Hole == e.Hole && out[n-1].End() == e.Offset {
			out[n-1].Length += e.Length
			return
		}
		out = append(out, e)
	}
	pos := off
	for _, e := range exts {
		if !e.exists || e.off+e.n <= pos {
			continue
		}
		start := max(e.off, pos)
		add(blockdev.Extent{Offset: pos, Length: start - pos, Hole: true, Zero: true})
		add(blockdev.Extent{Offset: start, Length: e.off + e.n - start})
		pos = e.off + e.n
	}
	add(blockdev.Extent{Offset: pos, Length: off + length - pos, Hole: true, Zero: true})
	return out, nil
}

// Close implements io.Closer; closing twice is not an error.
func (v *device) Close() error {
	v.mu.Lock()
	img := v.img
	v.img = nil
	v.mu.Unlock()
	if img == nil {
		return nil
	}
	v.d.forget(v)
	return v.d.translate(img.Close(), "close image %s", v.what())
}
