package livefill

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The state file (see the package comment):
//
//	offset  size  field
//	0       8     magic "BVLFILL\n"
//	8       4     version (1), little endian like every field
//	12      4     header size (4096)
//	16      8     fill size: the source's size in bytes
//	24      8     region size in bytes
//	32      8     number of regions
//	40      2     length of the source identity (at most MaxSourceIDLen)
//	42      n     source identity
//	...           zeros
//	4092    4     CRC-32C of bytes [0, 4092)
//	4096    m     bitmap, m = ceil(regions/8): bit i%8 of byte i/8 set when
//	              region i is filled and durable on the target
//
// The header is written once, when the file is made (temporary file,
// fsync, rename, fsync of the directory), and never again. The bitmap is
// written in place with pwrite then fdatasync; its bits only ever go from 0
// to 1, and a bit is written only after the target was flushed with the
// region's content, so a torn write of the bitmap only leaves out some
// regions that a resumed fill copies again.
const (
	stateMagic     = "BVLFILL\n"
	stateVersion   = 1
	headerSize     = 4096
	crcAt          = headerSize - 4
	MaxSourceIDLen = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is what the state file's header holds.
type header struct {
	fillSize, regionSize, regions int64
	sourceID                      string
}

func (h header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, stateMagic)
	binary.LittleEndian.PutUint32(b[8:], stateVersion)
	binary.LittleEndian.PutUint32(b[12:], headerSize)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.fillSize))
	binary.LittleEndian.PutUint64(b[24:], uint64(h.regionSize))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.regions))
	binary.LittleEndian.PutUint16(b[40:], uint16(len(h.sourceID)))
	copy(b[42:], h.sourceID)
	binary.LittleEndian.PutUint32(b[crcAt:], crc32.Checksum(b[:crcAt], castagnoli))
	return b
}

func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize || string(b[:8]) != stateMagic {
		return h, fmt.Errorf("%w: not a live-fill state file", ErrBadState)
	}
	if crc32.Checksum(b[:crcAt], castagnoli) != binary.LittleEndian.Uint32(b[crcAt:]) {
		return h, fmt.Errorf("%w: header checksum mismatch", ErrBadState)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != stateVersion {
		return h, fmt.Errorf("%w: version %d, this build reads %d", ErrBadState, v, stateVersion)
	}
	if hs := binary.LittleEndian.Uint32(b[12:]); hs != headerSize {
		return h, fmt.Errorf("%w: header size %d", ErrBadState, hs)
	}
	h.fillSize = int64(binary.LittleEndian.Uint64(b[16:]))
	h.regionSize = int64(binary.LittleEndian.Uint64(b[24:]))
	h.regions = int64(binary.LittleEndian.Uint64(b[32:]))
	n := int(binary.LittleEndian.Uint16(b[40:]))
	if n > MaxSourceIDLen || h.fillSize < 0 || h.regionSize <= 0 || h.regions != regionsOf(h.fillSize, h.regionSize) {
		return h, fmt.Errorf("%w: inconsistent header", ErrBadState)
	}
	h.sourceID = string(b[42 : 42+n])
	return h, nil
}

func regionsOf(size, rs int64) int64 { return (size + rs - 1) / rs }

// bitmapLen is the bitmap's length in bytes.
func bitmapLen(regions int64) int64 { return (regions + 7) / 8 }

// createState makes the state file at path for a fresh fill: header and
// an empty bitmap, durable (temporary file, fsync, rename, fsync of the
// directory) before it is opened.
func createState(path string, h header) (*os.File, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("livefill: create the state file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(h.encode()); err != nil {
		return nil, fmt.Errorf("livefill: write the state file: %w", err)
	}
	if err := tmp.Truncate(headerSize + bitmapLen(h.regions)); err != nil {
		return nil, fmt.Errorf("livefill: size the state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("livefill: sync the state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("livefill: create the state file: %w", err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		tmp.Close()
		return nil, err
	}
	return tmp, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("livefill: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("livefill: sync %s: %w", dir, err)
	}
	return nil
}

// readState reads a state file: its header and bitmap.
func readState(f *os.File) (header, []byte, error) {
	hb := make([]byte, headerSize)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, headerSize), hb); err != nil {
		return header{}, nil, fmt.Errorf("%w: short header: %v", ErrBadState, err)
	}
	h, err := decodeHeader(hb)
	if err != nil {
		return h, nil, err
	}
	bm := make([]byte, bitmapLen(h.regions))
	if _, err := io.ReadFull(io.NewSectionReader(f, headerSize, int64(len(bm))), bm); err != nil {
		return h, nil, fmt.Errorf("%w: short bitmap: %v", ErrBadState, err)
	}
	// Bits past the last region are never set.
	if r := h.regions % 8; r != 0 && len(bm) > 0 {
		bm[len(bm)-1] &= byte(1<<r - 1)
	}
	return h, bm, nil
}

// writeBitmap writes bytes [lo, hi) of the bitmap in place and makes them
// durable.
func writeBitmap(f *os.File, bm []byte, lo, hi int64) error {
	if hi <= lo {
		return nil
	}
	if _, err := f.WriteAt(bm[lo:hi], headerSize+lo); err != nil {
		return fmt.Errorf("livefill: write the state file: %w", err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("livefill: fdatasync the state file: %w", err)
	}
	return nil
}

func countBits(bm []byte) int64 {
	n := 0
	for _, b := range bm {
		n += bits.OnesCount8(b)
	}
	return int64(n)
}

// State is what a state file says about a live fill.
type State struct {
	// SourceID is the identity of the source the fill copies.
	SourceID string
	// Size is the number of bytes the fill copies (the source's size).
	Size int64
	// RegionSize and Regions describe the regions.
	RegionSize, Regions int64
	// Filled counts the regions filled and durable on the target.
	Filled int64
}

// Complete says whether every region is filled.
func (s State) Complete() bool { return s.Filled == s.Regions }

// ReadState reads the state file at path without opening the fill: for
// an operator, or a service that lists live restores after a restart.
func ReadState(path string) (State, error) {
	f, err := os.Open(path)
	if err != nil {
		return State{}, fmt.Errorf("livefill: open the state file: %w", err)
	}
	defer f.Close()
	h, bm, err := readState(f)
	if err != nil {
		return State{}, err
	}
	return State{SourceID: h.sourceID, Size: h.fillSize, RegionSize: h.regionSize, Regions: h.regions, Filled: countBits(bm)}, nil
}
