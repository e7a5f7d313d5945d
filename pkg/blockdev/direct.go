package blockdev

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DirectMin is the smallest write a DirectWriter sends around the page
// cache. Restores and bulk copies write whole chunks (4 MiB by default);
// a virtual machine's writes are mostly smaller and stay buffered.
const DirectMin = 1 << 20

// DirectWriter sends large, aligned writes to a file with O_DIRECT, around
// the page cache. Writing a restore through the page cache costs the
// kernel a page allocation and a copy per 4 KiB, and leaves gigabytes of
// dirty pages that the final flush then waits for and that push the node's
// working set out; written directly, the data goes from the caller's
// buffer to the disk.
//
// What a caller sees does not change: the kernel writes back and drops any
// cached pages of the range before a direct write, so reads through any
// descriptor of the file see the new data, and a flush (fsync) still makes
// it durable, with the file's allocation. A write that is small or not
// aligned in offset and length is left to the caller (WriteAt reports it
// not handled), as is every write when the filesystem cannot do direct I/O
// (statx reports no alignment, as on tmpfs) or refuses it. Only bulk
// writers should use one: a large write that waits for the disk is slower
// for a writer than one the page cache takes.
type DirectWriter struct {
	f *os.File // nil when direct I/O is not possible
	// memAlign and offAlign are the alignments the filesystem asks of
	// buffers and of offsets and lengths (statx STATX_DIOALIGN).
	memAlign, offAlign int64
	refused            atomic.Bool // set once a direct write was refused
}

// NewDirectWriter opens a second, O_DIRECT descriptor of f's file (by its
// /proc/self/fd link, so a rename does not matter). When the file cannot
// take direct writes, the DirectWriter is inert.
func NewDirectWriter(f *os.File) *DirectWriter {
	w := &DirectWriter{}
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err != nil ||
		stx.Mask&unix.STATX_DIOALIGN == 0 || stx.Dio_offset_align == 0 || stx.Mode&unix.S_IFMT != unix.S_IFREG {
		return w
	}
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return w
	}
	w.f = df
	w.memAlign = max(int64(stx.Dio_mem_align), 1)
	// Offsets and lengths at least 4 KiB-aligned: a write that covers only
	// part of a page would make the kernel mix it with cached pages.
	w.offAlign = max(int64(stx.Dio_offset_align), 4096)
	return w
}

// Enabled reports whether WriteAt may write directly.
func (w *DirectWriter) Enabled() bool { return w != nil && w.f != nil && !w.refused.Load() }

// WriteAt writes p at off directly when p is at least DirectMin bytes and
// aligned in offset and length; handled is false when it did not write (the
// caller writes p itself). Data whose memory is not aligned (a chunk stored
// raw, decrypted where it lies after its header) is copied into an aligned
// buffer first: a copy costs far less than the page cache. An error is the
// write's own (EIO, ENOSPC): p may be partly written, as with any failed
// write.
func (w *DirectWriter) WriteAt(p []byte, off int64) (handled bool, err error) {
	if !w.Enabled() || len(p) < DirectMin || off%w.offAlign != 0 || int64(len(p))%w.offAlign != 0 {
		return false, nil
	}
	if !w.aligned(p) {
		b := bounceBuffers.Get().(*[]byte)
		defer bounceBuffers.Put(b)
		if cap(*b) < len(p) {
			*b = make([]byte, 1<<bits.Len(uint(len(p)-1)))
		}
		if !w.aligned((*b)[:1]) {
			return false, nil
		}
		p = append((*b)[:0], p...)
	}
	_, err = w.f.WriteAt(p, off)
	if errors.Is(err, unix.EINVAL) {
		// The filesystem refused after all (statx promised otherwise):
		// buffered writes from now on.
		w.refused.Store(true)
		return false, nil
	}
	return true, err
}

// bounceBuffers holds the aligned copies of unaligned data (large Go
// allocations start on a page boundary; aligned checks it anyway).
var bounceBuffers = sync.Pool{New: func() any { return new([]byte) }}

func (w *DirectWriter) aligned(p []byte) bool {
	return int64(uintptr(unsafe.Pointer(unsafe.SliceData(p))))%w.memAlign == 0
}

// Close closes the direct descriptor.
func (w *DirectWriter) Close() error {
	if w == nil || w.f == nil {
		return nil
	}
	return w.f.Close()
}
