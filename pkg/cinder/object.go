package cinder

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	md5simd "github.com/minio/md5-simd"

	"github.com/blockvault/blockvault/pkg/repository"
)

// objectBuffer is the size of a worker's buffers (whole blocks, at least
// one) where a restore or a verify has 3 workers or fewer; with more, they
// are smaller, so that all stay near 3*workerBuffers*objectBuffer: objects
// are streamed, never held whole (Cinder's posix objects are near 2 GB).
const objectBuffer = 4 << 20

// workerBuffers is how many buffers a worker has: one being filled by the
// decompressor, one being hashed by md5, one being checked and written, so
// that one object keeps more than one CPU busy (a posix backup of a volume
// under 1.9 GB is a single object).
const workerBuffers = 3

// objectReader streams objects for one worker: its buffers, decoders and
// md5.
type objectReader struct {
	repo   repository.Repository
	free   chan []byte
	in     *bufio.Reader
	dec    decoders
	newMD5 func() md5simd.Hasher
}

// readBuffer is the size of a worker's reads of an object: zlib's decoder
// would otherwise read 4 KiB at a time, a system call each from a posix
// repository.
const readBuffer = 256 << 10

// newObjectReader returns the reader of one of n workers, whose buffers
// hold whole blocks of blockSize.
func newObjectReader(repo repository.Repository, blockSize int64, n int, newMD5 func() md5simd.Hasher) *objectReader {
	size := max(1, objectBuffer*3/int64(max(n, 3))/blockSize) * blockSize
	r := &objectReader{repo: repo, free: make(chan []byte, workerBuffers), newMD5: newMD5}
	for range workerBuffers {
		r.free <- make([]byte, size)
	}
	return r
}

func (r *objectReader) close() { r.dec.close() }

// run is a stretch of an object's data in one of a worker's buffers, going
// to the md5 and to the check and use; the last to be done with it gives
// the buffer back.
type run struct {
	data []byte
	off  int64 // in the volume
	refs *atomic.Int32
}

func (r *objectReader) release(x run) {
	if x.refs.Add(-1) == 0 {
		r.free <- x.data[:cap(x.data)]
	}
}

// read streams an object of backup l, decompressed, in runs of whole blocks
// (the last maybe short, at the end of the volume): each run is checked
// (check, given the run's volume offset) and then handed to use, in order,
// while the md5 is computed beside. Once the object ends, its length and
// md5 are checked. A missing or damaged object is an *ObjectError naming
// it; where the object's md5 is right but a block's sha256 is not, the
// error names the sha256file.
func (r *objectReader) read(ctx context.Context, l Link, o *object, check, use func(off int64, data []byte) error) error {
	name := l.objectName(o.Name)
	fail := func(err error) error { return &ObjectError{BackupID: l.BackupID, Object: name, Err: err} }
	c, err := compressionOf(o.Compression)
	if err != nil {
		return fail(err)
	}
	rc, err := repository.Open(ctx, r.repo, name)
	if err != nil {
		return objectErr(l, name, err)
	}
	defer rc.Close()
	src := &sourceReader{r: rc}
	// A read error of the repository is its own; any other error of the
	// decoder means the object's bytes are wrong.
	damaged := func(err error) error {
		if src.err != nil {
			return objectErr(l, name, src.err)
		}
		return fail(fmt.Errorf("%w: %s data: %w", ErrCorrupt, o.Compression, err))
	}
	if r.in == nil {
		r.in = bufio.NewReaderSize(src, readBuffer)
	} else {
		r.in.Reset(src)
	}
	data, err := r.dec.open(c, r.in)
	if err != nil {
		return damaged(err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hashes := make(chan run, workerBuffers)
	uses := make(chan run, workerBuffers)
	var wg sync.WaitGroup
	sum := r.newMD5()
	defer sum.Close()
	wg.Go(func() {
		for x := range hashes {
			sum.Write(x.data)
			r.release(x)
		}
	})
	// A block that does not match the sha256file is not used, nor is any
	// block after it; the object is still read to its end, so that its md5
	// tells whether the data or the sha256file is wrong.
	var mismatch, useErr error
	wg.Go(func() {
		for x := range uses {
			if mismatch == nil && useErr == nil {
				mismatch = check(x.off, x.data)
				if mismatch == nil {
					if useErr = use(x.off, x.data); useErr != nil {
						cancel(useErr)
					}
				}
			}
			r.release(x)
		}
	})
	pos, readErr := o.Offset, error(nil)
	for readErr == nil {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-ctx.Done():
			readErr = context.Cause(ctx)
			continue
		}
		n, err := io.ReadFull(data, buf)
		switch {
		case pos+int64(n) > o.end():
			readErr = fail(fmt.Errorf("%w: holds more than its %d bytes", ErrCorrupt, o.Length))
		case n > 0:
			x := run{data: buf[:n], off: pos, refs: new(atomic.Int32)}
			x.refs.Store(2)
			hashes <- x
			uses <- x
			pos += int64(n)
			buf = nil
		}
		if buf != nil {
			r.free <- buf
		}
		if readErr == nil && err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			readErr = damaged(err)
		}
	}
	close(hashes)
	close(uses)
	wg.Wait()
	switch {
	case useErr != nil:
		return useErr
	case readErr != nil:
		return readErr
	case pos != o.end():
		return fail(fmt.Errorf("%w: holds %d bytes, not %d", ErrCorrupt, pos-o.Offset, o.Length))
	}
	if got := sum.Sum(nil); !bytes.Equal(got, o.MD5[:]) {
		return fail(fmt.Errorf("%w: md5 %x, the metadata says %x", ErrCorrupt, got, o.MD5))
	}
	var bm *blockMismatch
	if errors.As(mismatch, &bm) {
		// The data is what Cinder wrote: the sums are wrong.
		return &ObjectError{BackupID: bm.file.BackupID, Object: bm.file.Name, Err: fmt.Errorf("%w: the sha256 of block %d (volume offset %d) does not match the data of %s, whose md5 does", ErrCorrupt, bm.block, bm.block*bm.file.BlockSize, name)}
	}
	if mismatch != nil {
		return fail(mismatch)
	}
	return nil
}

// blockMismatch is a block whose sha256 is not the one its sha256file
// lists.
type blockMismatch struct {
	file  *sha256File
	block int64
}

func (e *blockMismatch) Error() string {
	return fmt.Sprintf("block %d (volume offset %d) does not match its sha256 in %s", e.block, e.block*e.file.BlockSize, e.file.Name)
}

func (e *blockMismatch) Unwrap() error { return ErrCorrupt }

// checkBlocks checks the blocks of run (at volume offset off) that lie in
// parts against sums (nil parts: every block).
func checkBlocks(sums *sha256File, parts []span, off int64, run []byte) error {
	bs := sums.BlockSize
	end := off + int64(len(run))
	in := func(b int64) bool {
		if parts == nil {
			return true
		}
		for _, p := range parts {
			if b >= p.off && b < p.end {
				return true
			}
		}
		return false
	}
	for b := off; b < end; b += bs {
		if !in(b) {
			continue
		}
		i := b / bs
		if i >= int64(len(sums.Sums)) {
			return fmt.Errorf("%w: block %d (volume offset %d) is past the %d blocks of %s", ErrCorrupt, i, b, len(sums.Sums), sums.Name)
		}
		if blockSum(run[b-off:min(b+bs, end)-off]) != sums.Sums[i] {
			return &blockMismatch{file: sums, block: i}
		}
	}
	return nil
}

// zeroSums holds the sha256 of a block of zeros of each length it has met
// (in practice the block size alone): a third or more of a volume's blocks
// are often zeros, and telling them is a fraction of hashing them.
var zeroSums sync.Map // int -> [32]byte

// blockSum is sha256.Sum256(b): the same sum, looked up where b is zeros.
func blockSum(b []byte) [32]byte {
	if !isZero(b) {
		return sha256.Sum256(b)
	}
	if s, ok := zeroSums.Load(len(b)); ok {
		return s.([32]byte)
	}
	s := sha256.Sum256(b)
	zeroSums.Store(len(b), s)
	return s
}

// damaged reports whether err is about a backup's data (an object missing
// or corrupt) rather than about reaching it.
func damaged(err error) bool {
	var oe *ObjectError
	return errors.As(err, &oe) && (errors.Is(err, ErrMissing) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported))
}
