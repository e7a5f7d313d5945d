package file

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/blockvault/blockvault/pkg/blockdev"
)

// Staging keeps writers of an in-use volume running while a reflink
// snapshot or clone is taken. FICLONE holds the file's inode lock while it
// writes the dirty pages back and shares the extents (tens of milliseconds
// to seconds on a busy, fragmented volume), and every write through the
// file waits for it. In reflink mode the volume manager is the writer of
// attached volumes, so it never writes through during a clone:
//
//  1. While the clone runs, writes and zeroings are staged: in memory up to
//     maxStagedMemory, then in a spill file in the pool (unlinked, so a
//     crash leaves nothing behind). The clone's point in time is the moment
//     staging begins. Reads see the file with the staged writes on top.
//  2. Once the clone is done, the staged writes are applied to the file in
//     order, one at a time, while new writes go straight to the file. A new
//     write is recorded as "newer", and the parts of staged writes it covers
//     are skipped when they are applied, so the newest data wins without
//     holding writers back for the whole apply: a writer waits at most for
//     one staged write to be applied.
//
// Only when the spill file cannot take more (maxStagedSpill, or a write to
// it fails) does a writer wait, for the clone to end.

// Default bounds of a stage.
const (
	// maxStagedMemory bounds the memory staged writes take per volume.
	maxStagedMemory = 64 << 20
	// maxStagedSpill bounds the spill file (and so does a quarter of the
	// pool's free space).
	maxStagedSpill = 16 << 30
)

// stagedWrite is one write (or zeroing) made while staging: its data is in
// memory (data), in the spill file at spillOff (spilled), or nowhere (zero).
type stagedWrite struct {
	off, length int64
	data        []byte
	spillOff    int64
	spilled     bool
	zero        bool
}

// stage is the writes made since staging began, in order, and the state of
// their apply. mu orders every access to the volume's file while staging:
// reads, new writes, and the apply of each staged write.
type stage struct {
	mu       sync.Mutex
	writes   []stagedWrite
	memBytes int64
	// memLimit and spillLimit bound memBytes and spillEnd.
	memLimit, spillLimit int64
	spillDir             string
	spill                *os.File
	spillEnd             int64

	// applying is set once the clone is done: new writes go to the file.
	applying bool
	// applied is how many of writes are in the file.
	applied int
	// newer is what new writes have covered since applying began, and
	// newerWrites how many they were.
	newer       rangeSet
	newerWrites int
	// cloned is closed when applying begins.
	cloned chan struct{}

	// done is closed when staging has ended and the file holds every write.
	done chan struct{}
	// beforeApply, when set (by tests), runs before each staged write is
	// applied.
	beforeApply func()
}

func newStage(spillDir string) *stage {
	// The spill file takes at most a quarter of the pool's free space: the
	// staged writes need room in the volume's file too once applied, and
	// copy on write needs room of its own.
	spillLimit := int64(maxStagedSpill)
	var fs unix.Statfs_t
	if unix.Statfs(spillDir, &fs) == nil {
		spillLimit = min(spillLimit, int64(fs.Bavail)*fs.Bsize/4)
	}
	return &stage{spillDir: spillDir, memLimit: maxStagedMemory, spillLimit: spillLimit, cloned: make(chan struct{}), done: make(chan struct{})}
}

// add records a write of p at off (p == nil: a zeroing of length bytes);
// false when the stage can take no more and the writer must wait for done.
func (s *stage) add(off, length int64, p []byte) bool {
	w := stagedWrite{off: off, length: length, zero: p == nil}
	switch {
	case p == nil:
	case s.memBytes+int64(len(p)) <= s.memLimit:
		w.data = append([]byte(nil), p...)
		s.memBytes += int64(len(p))
	default:
		if !s.spillWrite(&w, p) {
			return false
		}
	}
	s.writes = append(s.writes, w)
	return true
}

// spillWrite appends p to the spill file (opened on first use).
func (s *stage) spillWrite(w *stagedWrite, p []byte) bool {
	if s.spillEnd+int64(len(p)) > s.spillLimit {
		return false
	}
	if s.spill == nil {
		f, err := openSpill(s.spillDir)
		if err != nil {
			return false
		}
		s.spill = f
	}
	if _, err := s.spill.WriteAt(p, s.spillEnd); err != nil {
		return false
	}
	w.spillOff, w.spilled = s.spillEnd, true
	s.spillEnd += int64(len(p))
	return true
}

// openSpill opens an unnamed file in dir (O_TMPFILE), or a named one that
// is removed at once where the filesystem has no O_TMPFILE.
func openSpill(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/staged-writes"), nil
	}
	f, err := os.CreateTemp(dir, ".staged-writes-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// bytesOf returns the staged data of w, read from the spill file if need be.
func (s *stage) bytesOf(w stagedWrite) ([]byte, error) {
	if !w.spilled {
		return w.data, nil
	}
	p := make([]byte, w.length)
	if _, err := s.spill.ReadAt(p, w.spillOff); err != nil {
		return nil, fmt.Errorf("reading the spill file of staged writes: %w", err)
	}
	return p, nil
}

// overlay lays the staged writes not yet in the file, minus what newer
// writes covered, on p, which holds the file's bytes at off. Called with
// s.mu held.
func (s *stage) overlay(p []byte, off int64) error {
	end := off + int64(len(p))
	for _, w := range s.writes[s.applied:] {
		lo, hi := max(w.off, off), min(w.off+w.length, end)
		if lo >= hi {
			continue
		}
		var src []byte
		if !w.zero {
			if w.spilled {
				src = make([]byte, hi-lo)
				if _, err := s.spill.ReadAt(src, w.spillOff+lo-w.off); err != nil {
					return fmt.Errorf("reading the spill file of staged writes: %w", err)
				}
			} else {
				src = w.data[lo-w.off : hi-w.off]
			}
		}
		for _, r := range s.newer.subtract(lo, hi) {
			if w.zero {
				clear(p[r.lo-off : r.hi-off])
			} else {
				copy(p[r.lo-off:r.hi-off], src[r.lo-lo:r.hi-lo])
			}
		}
	}
	return nil
}

// touches reports whether a staged write not yet in the file overlaps
// [off, off+length).
func (s *stage) touches(off, length int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.writes[s.applied:] {
		if w.off < off+length && off < w.off+w.length {
			return true
		}
	}
	return false
}

// applyNext writes the next staged write to the file, minus what newer
// writes covered.
func (s *stage) applyNext(st *volState) error {
	s.mu.Lock()
	w := s.writes[s.applied]
	s.mu.Unlock()
	// Reading a spilled write back needs no lock: the spill only grows.
	data, err := s.bytesOf(w)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.newer.subtract(w.off, w.off+w.length) {
		if w.zero {
			err = blockdev.PunchHole(st.f, r.lo, r.hi-r.lo)
		} else {
			_, err = st.f.WriteAt(data[r.lo-w.off:r.hi-w.off], r.lo)
		}
		if err != nil {
			return err
		}
	}
	s.writes[s.applied] = stagedWrite{} // let the memory go
	s.applied++
	return nil
}

// fdatasync is unix.Fdatasync; tests replace it to make a flush fail.
var fdatasync = unix.Fdatasync

// flushForClone makes the volume's file durable before a FICLONE, which
// then has less to write back under the inode lock. A flush that fails has
// taken the file's writeback error with it: a client's later flush would
// succeed although writes it was told were done may be lost. So the volume
// fails every later write and flush instead, as when staged writes cannot
// be applied.
func (st *volState) flushForClone() error {
	err := fdatasync(int(st.f.Fd()))
	if err == nil {
		return nil
	}
	err = fmt.Errorf("flushing the volume before a clone: %w", err)
	st.lock.Lock()
	if st.broken == nil {
		st.broken = err
	}
	st.lock.Unlock()
	return err
}

// withStaging runs clone (a FICLONE of the volume's file) while the
// volume's writes are staged, then applies them. The clone sees the volume
// as it was when staging began.
func (st *volState) withStaging(s *stage, clone func() error) error {
	st.lock.Lock()
	if st.staging != nil {
		// Another clone is staging: wait for it, then take our turn.
		wait := st.staging.done
		st.lock.Unlock()
		<-wait
		return st.withStaging(s, clone)
	}
	st.staging = s
	st.lock.Unlock()

	cloneErr := clone()

	s.mu.Lock()
	s.applying = true
	s.mu.Unlock()
	close(s.cloned)
	var applyErr error
	for applyErr == nil {
		s.mu.Lock()
		left := s.applied < len(s.writes)
		s.mu.Unlock()
		if !left {
			break
		}
		if s.beforeApply != nil {
			s.beforeApply()
		}
		applyErr = s.applyNext(st)
	}

	st.lock.Lock()
	if applyErr == nil {
		// Writers stopped adding to the stage when applying began; the
		// loop above applied every write, so the stage holds nothing.
		s.mu.Lock()
		if s.applied != len(s.writes) {
			applyErr = errors.New("staged writes left unapplied")
		}
		s.mu.Unlock()
	}
	if applyErr != nil {
		// Writes the clients were told are done could not reach the file:
		// the volume fails every later write and flush rather than pretend.
		st.broken = fmt.Errorf("applying writes staged during a snapshot: %w", applyErr)
	}
	st.staging = nil
	st.lock.Unlock()
	if s.spill != nil {
		s.spill.Close()
	}
	close(s.done)
	if cloneErr != nil {
		return cloneErr
	}
	return applyErr
}

// stageWrite records a write (p) or a zeroing (p == nil) of [off,
// off+length) while a clone is taken, or once it is done, makes it with
// change and records it as newer than the staged writes. Called with
// st.lock held shared while st.staging is set. A stage that can take no
// more returns the channel to wait on before trying again.
func (st *volState) stageWrite(off, length int64, p []byte, change func() error) (done bool, wait chan struct{}, err error) {
	s := st.staging
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applying {
		if err := change(); err != nil {
			return true, nil, err
		}
		s.newer.add(off, off+length)
		s.newerWrites++
		return true, nil, nil
	}
	if s.add(off, length, p) {
		return true, nil, nil
	}
	return false, s.cloned, nil
}

// readStaged reads [off, off+len(p)) of the file with the staged writes on
// top. Called with st.lock held shared while st.staging is set.
func (st *volState) readStaged(p []byte, off int64) (int, error) {
	s := st.staging
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.applying {
		// While the clone runs the file does not change: read it without
		// holding up the writers (FICLONE blocks the read meanwhile).
		s.mu.Unlock()
		n, err := st.f.ReadAt(p, off)
		s.mu.Lock()
		if s.applying {
			// The apply began meanwhile: read again, in step with it.
			n, err = st.f.ReadAt(p, off)
		}
		if err != nil && !(n == len(p) && errors.Is(err, io.EOF)) {
			return n, err
		}
		return n, s.overlay(p, off)
	}
	n, err := st.f.ReadAt(p, off)
	if err != nil && !(n == len(p) && errors.Is(err, io.EOF)) {
		return n, err
	}
	return n, s.overlay(p, off)
}

// rangeSet is a set of byte ranges, kept sorted and merged.
type rangeSet struct{ rs []byteRange }

type byteRange struct{ lo, hi int64 }

// add puts [lo, hi) in the set.
func (s *rangeSet) add(lo, hi int64) {
	// The first range that ends at or after lo, and the first that starts
	// after hi: those in between merge with [lo, hi).
	i, _ := slices.BinarySearchFunc(s.rs, lo, func(r byteRange, v int64) int { return cmpInt(r.hi, v) })
	j := i
	for j < len(s.rs) && s.rs[j].lo <= hi {
		lo, hi = min(lo, s.rs[j].lo), max(hi, s.rs[j].hi)
		j++
	}
	s.rs = slices.Replace(s.rs, i, j, byteRange{lo, hi})
}

// subtract returns the parts of [lo, hi) outside the set, in order.
func (s *rangeSet) subtract(lo, hi int64) []byteRange {
	i, _ := slices.BinarySearchFunc(s.rs, lo, func(r byteRange, v int64) int { return cmpInt(r.hi, v+1) })
	var out []byteRange
	for ; i < len(s.rs) && s.rs[i].lo < hi && lo < hi; i++ {
		if r := s.rs[i]; r.lo > lo {
			out = append(out, byteRange{lo, min(r.lo, hi)})
		}
		lo = max(lo, s.rs[i].hi)
	}
	if lo < hi {
		out = append(out, byteRange{lo, hi})
	}
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
