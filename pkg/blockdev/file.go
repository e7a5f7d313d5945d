package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// File is a Device backed by a regular file (a sparse volume image, a
// snapshot, or any local path). Its size is fixed when it is opened.
type File struct {
	f        *os.File
	size     int64
	readOnly bool
	direct   *DirectWriter // large aligned writes (OpenFileForBulkWrites)
}

var _ Device = (*File)(nil)

// OpenFile opens the regular file or block device at path as a Device.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: size of %s: %w", path, err)
	}
	return &File{f: f, size: size, readOnly: readOnly}, nil
}

// OpenFileForBulkWrites opens path read-write for a bulk writer, such as
// a restore: writes of DirectMin or more, 4 KiB-aligned, go around the page
// cache (see DirectWriter).
func OpenFileForBulkWrites(path string) (*File, error) {
	d, err := OpenFile(path, false)
	if err != nil {
		return nil, err
	}
	d.direct = NewDirectWriter(d.f)
	return d, nil
}

// Name is the path the file was opened with.
func (d *File) Name() string { return d.f.Name() }

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// ReadOnly implements Device.
func (d *File) ReadOnly() bool { return d.readOnly }

// ReadAt implements Device.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if err := CheckRange(d.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := d.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) && n == len(p) {
		err = nil
	}
	return n, err
}

// WriteAt implements Device.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, ErrReadOnly
	}
	if err := CheckRange(d.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	if done, err := d.direct.WriteAt(p, off); done {
		if err != nil {
			return 0, fmt.Errorf("blockdev: write %s: %w", d.f.Name(), err)
		}
		return len(p), nil
	}
	return d.f.WriteAt(p, off)
}

// Flush implements Device with fsync.
func (d *File) Flush() error {
	if d.readOnly {
		return nil
	}
	return d.f.Sync()
}

// Trim implements Device by punching a hole.
func (d *File) Trim(off, length int64) error { return d.Zero(off, length) }

// Zero implements Device by punching a hole, falling back to writing zeros
// where the filesystem cannot punch holes.
func (d *File) Zero(off, length int64) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if err := CheckRange(d.size, off, length); err != nil {
		return err
	}
	return PunchHole(d.f, off, length)
}

// PunchHole deallocates [off, off+length) of f, keeping its size; where the
// filesystem cannot, it writes zeros instead.
func PunchHole(f *os.File, off, length int64) error {
	if length == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("blockdev: punch hole in %s: %w", f.Name(), err)
	}
	zeros := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Extents implements Device with SEEK_DATA and SEEK_HOLE.
func (d *File) Extents(off, length int64) ([]Extent, error) {
	if err := CheckRange(d.size, off, length); err != nil {
		return nil, err
	}
	return SeekExtents(d.f, off, length)
}

// SeekExtents describes the allocation of [off, off+length) of f with
// SEEK_DATA and SEEK_HOLE. Where the filesystem cannot tell, the range is
// reported as data.
func SeekExtents(f *os.File, off, length int64) ([]Extent, error) {
	end := off + length
	var out []Extent
	add := func(o, l int64, hole bool) {
		if l <= 0 {
			return
		}
		if n := len(out); n > 0 && out[n-1].Hole == hole && out[n-1].End() == o {
			out[n-1].Length += l
			return
		}
		out = append(out, Extent{Offset: o, Length: l, Hole: hole, Zero: hole})
	}
	fd := int(f.Fd())
	pos := off
	for pos < end {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			add(pos, end-pos, true) // no data until the end of the file
			break
		}
		if err != nil {
			add(pos, end-pos, false) // the filesystem cannot tell: all data
			break
		}
		if data > pos {
			add(pos, min(data, end)-pos, true)
			pos = min(data, end)
			if pos >= end {
				break
			}
		}
		hole, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
		if err != nil {
			add(pos, end-pos, false)
			break
		}
		add(pos, min(hole, end)-pos, false)
		pos = min(hole, end)
	}
	return out, nil
}

// Close implements Device.
func (d *File) Close() error { return errors.Join(d.direct.Close(), d.f.Close()) }
