package cinder

import (
	"compress/bzip2"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// compression is how an object's data is stored.
type compression int

const (
	uncompressed compression = iota
	zlibCompressed
	bz2Compressed
	zstdCompressed
)

// compressionOf maps an object's "compression" to how to read it: what
// chunkeddriver.py's _get_compressor accepts (the option's value,
// lowercased, or "none" where compressing a chunk did not pay).
func compressionOf(name string) (compression, error) {
	switch strings.ToLower(name) {
	case "none", "off", "no":
		return uncompressed, nil
	case "zlib", "gzip": // Python's zlib module either way: zlib's format
		return zlibCompressed, nil
	case "bz2", "bzip2":
		return bz2Compressed, nil
	case "zstd":
		return zstdCompressed, nil
	}
	return 0, fmt.Errorf("%w: compression %q (known: zlib, gzip, bz2, bzip2, zstd, none)", ErrUnsupported, name)
}

// decoders are one worker's decompressors, reused from object to object.
type decoders struct {
	zlib io.ReadCloser
	zstd *zstd.Decoder
}

// open returns a reader of r's data decompressed.
func (d *decoders) open(c compression, r io.Reader) (io.Reader, error) {
	switch c {
	case zlibCompressed:
		if d.zlib == nil {
			zr, err := zlib.NewReader(r)
			if err != nil {
				return nil, err
			}
			d.zlib = zr
			return zr, nil
		}
		if err := d.zlib.(zlib.Resetter).Reset(r, nil); err != nil {
			return nil, err
		}
		return d.zlib, nil
	case bz2Compressed:
		return bzip2.NewReader(r), nil
	case zstdCompressed:
		if d.zstd == nil {
			// One goroutine and the frame's window: a worker's memory stays
			// small whatever the object's size.
			zd, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				return nil, err
			}
			d.zstd = zd
		}
		if err := d.zstd.Reset(r); err != nil {
			return nil, err
		}
		return d.zstd, nil
	}
	return r, nil
}

func (d *decoders) close() {
	if d.zstd != nil {
		d.zstd.Close()
	}
}
