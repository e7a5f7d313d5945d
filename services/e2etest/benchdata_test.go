package e2etest

// The data of BenchmarkThroughDaemons: volume contents that are a function
// of (volume, offset) only, so the same bytes can be written through NBD in
// each stack variant and into the image file the other tools back up, and
// the 1% changes between backups, equally reproducible.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/blockvault/blockvault/pkg/nbd"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

const (
	// benchRegion is the unit of a volume's layout: each region is all
	// holes, all random or all text, like the files and free space of a
	// real disk.
	benchRegion = 64 << 20
	// benchPiece is the unit of writes and reads while building and
	// reading volumes back (the engine's chunk size, the NBD client's
	// largest request).
	benchPiece = 4 << 20
)

type regionKind int

const (
	regionHole regionKind = iota
	regionRandom
	regionText
)

// benchVolume is a volume layout: pattern repeats every len(pattern)
// regions.
type benchVolume struct {
	name    string
	about   string
	pattern []regionKind
	// withWriter: a writer's slowdown during a backup is measured on it.
	withWriter bool
}

var benchVolumes = []benchVolume{
	{"mixed", "per 64 MiB region, in turn: random, hole, text, hole (1/2 holes, 1/4 random, 1/4 text)",
		[]regionKind{regionRandom, regionHole, regionText, regionHole}, true},
	{"random", "all random bytes", []regionKind{regionRandom}, false},
}

func (v benchVolume) kindAt(off int64) regionKind {
	return v.pattern[(off/benchRegion)%int64(len(v.pattern))]
}

// seed is the ChaCha8 seed of the piece at off: the content depends on
// the volume and the offset only.
func (v benchVolume) seed(off int64) [32]byte {
	var s [32]byte
	copy(s[:], v.name)
	binary.LittleEndian.PutUint64(s[24:], uint64(off))
	return s
}

// fill writes the content of the piece at off into buf (len(buf) bytes,
// within one region); scratch is the caller's reusable text buffer.
func (v benchVolume) fill(buf []byte, off int64, scratch *[]byte) {
	switch v.kindAt(off) {
	case regionHole:
		clear(buf)
	case regionRandom:
		rand.NewChaCha8(v.seed(off)).Read(buf)
	case regionText:
		s := v.seed(off)
		textLike(buf, rand.New(rand.NewPCG(binary.LittleEndian.Uint64(s[:8]), uint64(off))), scratch)
	}
}

// benchWords are the words of the text-like data.
var benchWords = strings.Fields(`the of and to in is that for it as was with be by on not this are or from at which but have an
	they you were her she there been one all we their has would when if so no will more out up into do any your what some can only
	other time could new them about than then its our two first may over after also should most these between where before must
	volume snapshot backup restore block storage request error warning info debug node service daemon repository chunk manifest
	export attach detach create delete status available in-use creating deleting failed retry timeout connection client server
	config listen address token project user admin quota gigabytes bytes seconds offset length size hash compress encrypt`)

// textLike fills buf with log-like lines of words picked at random: it
// compresses about as well as text, and no two pieces share content (so
// no tool can deduplicate it away).
func textLike(buf []byte, r *rand.Rand, scratch *[]byte) {
	out := (*scratch)[:0]
	for len(out) < len(buf) {
		out = strconv.AppendUint(out, r.Uint64N(1<<32), 16)
		out = append(out, ' ')
		for n := 8 + r.IntN(8); n > 0; n-- {
			out = append(out, benchWords[r.IntN(len(benchWords))]...)
			out = append(out, ' ')
		}
		out = strconv.AppendInt(out, r.Int64N(100000), 10)
		out = append(out, '\n')
	}
	copy(buf, out)
	*scratch = out
}

// writeVolume writes v's content over [0, size) of dst, holes skipped
// (never written), with GOMAXPROCS writers so the generator is not the
// bottleneck.
func writeVolume(ctx context.Context, dst io.WriterAt, size int64, v benchVolume) error {
	g, ctx := errgroup.WithContext(ctx)
	offs := make(chan int64)
	g.Go(func() error {
		defer close(offs)
		for off := int64(0); off < size; off += benchPiece {
			if v.kindAt(off) == regionHole {
				continue
			}
			select {
			case offs <- off:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			buf := make([]byte, benchPiece)
			var scratch []byte
			for off := range offs {
				b := buf[:min(benchPiece, size-off)]
				v.fill(b, off, &scratch)
				if _, err := dst.WriteAt(b, off); err != nil {
					return fmt.Errorf("write at %d: %w", off, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// benchChange is one set of changes between backups: 1% of the volume
// rewritten in runs of run bytes at random 4 KiB-aligned offsets.
type benchChange struct {
	name string
	run  int64
	seed uint64
}

var benchChanges = []benchChange{
	{"inc 1% in 1 MiB runs", 1 << 20, 1},
	{"inc 1% in 4 KiB writes", 4 << 10, 2},
}

// apply writes the change into dst (a volume of size bytes); the offsets
// and bytes depend on the change only, so a volume and its image file get
// the same. It returns the bytes written.
func (c benchChange) apply(dst io.WriterAt, size int64) (int64, error) {
	pos := rand.New(rand.NewPCG(c.seed, uint64(c.run)))
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], c.seed)
	data := rand.NewChaCha8(seed)
	buf := make([]byte, c.run)
	var written int64
	for n := max(size/100/c.run, 1); n > 0; n-- {
		off := pos.Int64N((size-c.run)/4096+1) * 4096
		data.Read(buf)
		if _, err := dst.WriteAt(buf, off); err != nil {
			return written, fmt.Errorf("write at %d: %w", off, err)
		}
		written += c.run
	}
	return written, nil
}

// writeAtFunc is a function as an io.WriterAt.
type writeAtFunc func(p []byte, off int64) (int, error)

func (f writeAtFunc) WriteAt(p []byte, off int64) (int, error) { return f(p, off) }

// applyUndoable applies the change to an image file and returns a function
// that puts back what it overwrote (as holes where it was zeros, so the
// file stays as sparse as the volume).
func (c benchChange) applyUndoable(f *os.File, size int64) (undo func() error, err error) {
	type saved struct {
		off  int64
		data []byte // nil: zeros
	}
	var old []saved
	undo = func() error {
		for i := len(old) - 1; i >= 0; i-- {
			o := old[i]
			var err error
			if o.data == nil {
				err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, o.off, c.run)
			} else {
				_, err = f.WriteAt(o.data, o.off)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	_, err = c.apply(writeAtFunc(func(p []byte, off int64) (int, error) {
		prev := make([]byte, len(p))
		if _, err := f.ReadAt(prev, off); err != nil {
			return 0, err
		}
		if allZero(prev) {
			prev = nil
		}
		old = append(old, saved{off, prev})
		return f.WriteAt(p, off)
	}), size)
	return undo, err
}

// volumeRead is what one pass over a volume found.
type volumeRead struct {
	sum    [32]byte // SHA-256 of the whole volume
	sample []byte   // its first bytes, for the pipeline limit
}

// readVolume reads src from start to end, hashing it; it keeps the first
// sampleLen bytes, and copies the non-zero pieces into image when not nil
// (a sparse file of the volume's size: zero pieces stay holes). A reader
// goroutine keeps the next pieces coming while one is hashed.
func readVolume(ctx context.Context, src io.ReaderAt, size int64, image *os.File, sampleLen int64) (volumeRead, error) {
	type piece struct {
		off int64
		buf []byte
	}
	free := make(chan []byte, 4)
	for range cap(free) {
		free <- make([]byte, benchPiece)
	}
	full := make(chan piece, cap(free))
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(full)
		for off := int64(0); off < size; off += benchPiece {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			buf = buf[:min(benchPiece, size-off)]
			if _, err := src.ReadAt(buf, off); err != nil {
				return fmt.Errorf("read at %d: %w", off, err)
			}
			select {
			case full <- piece{off, buf}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	out := volumeRead{sample: make([]byte, 0, min(sampleLen, size))}
	h := sha256.New()
	g.Go(func() error {
		for p := range full {
			h.Write(p.buf)
			if p.off < sampleLen {
				out.sample = append(out.sample, p.buf[:min(int64(len(p.buf)), sampleLen-p.off)]...)
			}
			if image != nil && !allZero(p.buf) {
				if _, err := image.WriteAt(p.buf, p.off); err != nil {
					return err
				}
			}
			free <- p.buf[:cap(p.buf)]
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return out, err
	}
	if image != nil {
		if err := image.Truncate(size); err != nil {
			return out, err
		}
	}
	h.Sum(out.sum[:0])
	return out, nil
}

// hashFile is the SHA-256 of a file's content.
func hashFile(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, benchPiece)); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// allocatedNBD is the bytes of dev that its NBD block status reports as
// allocated (not holes).
func allocatedNBD(dev *nbd.Client) (int64, error) {
	if !dev.CanBlockStatus() {
		return -1, nil
	}
	exts, err := dev.Extents(0, dev.Size())
	if err != nil {
		return 0, err
	}
	var n int64
	for _, x := range exts {
		if !x.Hole {
			n += x.Length
		}
	}
	return n, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
