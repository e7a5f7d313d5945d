// Package blockdev defines the block device that every part of blockvault
// reads and writes: a driver's volume or snapshot, an NBD export served by the
// volume manager, the NBD client the backup service reads with, and a local
// file. One interface lets the NBD server serve any driver's device and lets
// the backup engine read from a local path or a remote export alike.
package blockdev

import (
	"errors"
	"fmt"
	"io"
)

// ErrReadOnly is returned by writes to a device opened read-only.
var ErrReadOnly = errors.New("blockdev: device is read-only")

// ErrOutOfRange is returned for an access that reaches past the end of the device.
var ErrOutOfRange = errors.New("blockdev: access past the end of the device")

// Device is a fixed-size random-access block device.
//
// ReadAt and WriteAt follow io.ReaderAt and io.WriterAt, and may be called
// concurrently from several goroutines. An access past Size returns
// ErrOutOfRange (wrapped) and transfers nothing.
type Device interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Size is the device's size in bytes.
	Size() int64
	// ReadOnly reports whether writes are refused with ErrReadOnly.
	ReadOnly() bool
	// Flush makes every completed write durable.
	Flush() error
	// Trim discards a range: later reads of it return zeros. A device may
	// deallocate the range (punch a hole).
	Trim(off, length int64) error
	// Zero writes zeros over a range, deallocating it where it can.
	Zero(off, length int64) error
	// Extents describes the allocation of [off, off+length): a list of
	// adjacent extents covering exactly that range, in order.
	Extents(off, length int64) ([]Extent, error)
}

// Extent is a run of a device with one allocation state.
type Extent struct {
	Offset int64
	Length int64
	// Hole is true where no storage is allocated (reads return zeros).
	Hole bool
	// Zero is true where reads are known to return zeros (always so for holes).
	Zero bool
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// CheckRange returns ErrOutOfRange (wrapped) when [off, off+length) does not
// lie within a device of the given size.
func CheckRange(size, off, length int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return &RangeError{Off: off, Length: length, Size: size}
	}
	return nil
}

// RangeError describes an access outside the device.
type RangeError struct {
	Off, Length, Size int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("blockdev: range [%d, +%d) is outside the device of %d bytes", e.Off, e.Length, e.Size)
}

// Unwrap makes errors.Is(err, ErrOutOfRange) hold.
func (e *RangeError) Unwrap() error { return ErrOutOfRange }
