package file

import (
	"fmt"
	"slices"
	"sync"

	"github.com/blockvault/blockvault/pkg/blockdev"
)

// Staging keeps writers of an in-use volume running while a reflink
// snapshot or clone is taken. FICLONE holds the file's inode lock while it
// writes the dirty pages back and shares the extents (hundreds of
// milliseconds on a busy volume), and every write through the file waits
// for it. In reflink mode the volume manager is the writer of attached
// volumes, so instead of writing through, it stages the writes that arrive
// during the clone in memory (the clone's point in time is the moment
// staging begins), serves reads from file + staged writes, and applies the
// staged writes to the file once the clone is done. Writers wait only for
// the last, small part of that apply, or when staging holds more than
// maxStaged bytes.

// maxStaged bounds the memory staged writes may take; past it, writers
// wait for the clone to end.
const maxStaged = 256 << 20

// stagedWrite is one write (or zeroing, data == nil) made while staging.
type stagedWrite struct {
	off, length int64
	data        []byte
}

// stage is the writes made since staging began, in order. Writes append
// under mu (several writers hold volState.lock shared at once); reads
// overlay them in order on what the file holds.
type stage struct {
	mu     sync.Mutex
	writes []stagedWrite
	bytes  int64
	// older is a stage being applied to the file; reads overlay it first.
	older *stage
	// done is closed when staging has ended and the file holds every write.
	done chan struct{}
}

func newStage(older *stage, done chan struct{}) *stage {
	return &stage{older: older, done: done}
}

// add records a write; false when the stage is full.
func (s *stage) add(off int64, p []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes+int64(len(p)) > maxStaged {
		return false
	}
	s.writes = append(s.writes, stagedWrite{off: off, length: int64(len(p)), data: append([]byte(nil), p...)})
	s.bytes += int64(len(p))
	return true
}

// addZero records a zeroing of [off, off+length).
func (s *stage) addZero(off, length int64) {
	s.mu.Lock()
	s.writes = append(s.writes, stagedWrite{off: off, length: length})
	s.mu.Unlock()
}

// overlay applies the staged writes (older first) to p, which holds the
// file's bytes at off.
func (s *stage) overlay(p []byte, off int64) {
	if s.older != nil {
		s.older.overlay(p, off)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	end := off + int64(len(p))
	for _, w := range s.writes {
		lo, hi := max(w.off, off), min(w.off+w.length, end)
		if lo >= hi {
			continue
		}
		if w.data == nil {
			clear(p[lo-off : hi-off])
		} else {
			copy(p[lo-off:hi-off], w.data[lo-w.off:hi-w.off])
		}
	}
}

// touches reports whether a staged write (older ones too) overlaps
// [off, off+length).
func (s *stage) touches(off, length int64) bool {
	if s.older != nil && s.older.touches(off, length) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.writes {
		if w.off < off+length && off < w.off+w.length {
			return true
		}
	}
	return false
}

// size is the bytes staged.
func (s *stage) size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// applyTo writes the staged writes to the volume's file, in order.
func (s *stage) applyTo(st *volState) error {
	s.mu.Lock()
	writes := s.writes
	s.mu.Unlock()
	for _, w := range writes {
		var err error
		if w.data == nil {
			err = blockdev.PunchHole(st.f, w.off, w.length)
		} else {
			_, err = st.f.WriteAt(w.data, w.off)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// withStaging runs clone (a FICLONE of the volume's file) while the
// volume's writes are staged, then applies them. The clone sees the volume
// as it was when staging began.
func (st *volState) withStaging(clone func() error) error {
	done := make(chan struct{})
	st.lock.Lock()
	if st.staging != nil {
		// Another clone is staging: wait for it, then take our turn.
		wait := st.staging.done
		st.lock.Unlock()
		<-wait
		return st.withStaging(clone)
	}
	st.staging = newStage(nil, done)
	st.lock.Unlock()

	cloneErr := clone()

	// Apply in rounds: while a round is written to the file, new writes go
	// to a fresh stage that reads overlay on top; the last, small round is
	// applied with writers held.
	var applyErr error
	for round := 0; ; round++ {
		st.lock.Lock()
		cur := st.staging
		if cur.size() <= 1<<20 || round >= 4 {
			applyErr = cur.applyTo(st)
			st.staging = nil
			if applyErr != nil {
				// Writes the clients were told are done could not reach the
				// file: the volume fails every later write and flush
				// rather than pretend.
				st.broken = fmt.Errorf("applying writes staged during a snapshot: %w", applyErr)
			}
			st.lock.Unlock()
			close(done)
			break
		}
		next := newStage(cur, done)
		st.staging = next
		st.lock.Unlock()
		err := cur.applyTo(st)
		st.lock.Lock()
		if err != nil {
			// Keep cur's writes, before next's; the last round tries
			// once more with all of them.
			next.mu.Lock()
			next.writes = append(slices.Clone(cur.writes), next.writes...)
			next.bytes += cur.bytes
			next.mu.Unlock()
		}
		next.older = nil // cur is in the file now, or in next
		st.lock.Unlock()
	}
	if cloneErr != nil {
		return cloneErr
	}
	return applyErr
}

// stageWrite records a write (p) or a zeroing (p == nil) in the volume's
// stage. Called with st.lock held shared while st.staging is set. A full
// stage returns the channel to wait on before writing through.
func (st *volState) stageWrite(off, length int64, p []byte) (staged bool, wait chan struct{}) {
	s := st.staging
	if p == nil {
		s.addZero(off, length)
		return true, nil
	}
	if s.add(off, p) {
		return true, nil
	}
	return false, s.done
}
