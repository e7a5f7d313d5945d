package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/volume"
)

// cbwMode makes snapshots by copy-before-write (any filesystem): the volume
// manager is the only writer of a volume, and saves a block's old contents
// into each snapshot lacking it before the block is first overwritten.
type cbwMode struct{ d *Driver }

func (cbwMode) name() string { return ModeCopyBeforeWrite }

// localPaths: a write to the volume's file behind the driver's back would
// not be copied first, and a snapshot is not one file.
func (cbwMode) localPaths() bool { return false }

func (cbwMode) newVolume(*os.File) {}

// openVolume loads the volume's snapshots (after a restart).
func (m cbwMode) openVolume(st *volState) error { return st.loadSnapshots(m.d) }

func (m cbwMode) createSnapshot(st *volState, id string) error { return st.addSnapshot(m.d, id) }

func (m cbwMode) deleteSnapshot(volumeID, snapshotID string) error {
	m.forget(volumeID, snapshotID)
	if err := m.d.removeSnapshotFiles(volumeID, snapshotID); err != nil {
		return err
	}
	// A snapshot being created registers itself only once its files are
	// durable: drop one that did so meanwhile.
	m.forget(volumeID, snapshotID)
	return nil
}

// forget drops a snapshot's registration in its volume's state.
func (m cbwMode) forget(volumeID, snapshotID string) {
	if st, err := m.d.state(volumeID); err == nil {
		st.removeSnapshot(snapshotID)
		m.d.release(st)
	}
}

func (m cbwMode) openSnapshot(volumeID, snapshotID string) (blockdev.Device, error) {
	st, err := m.d.state(volumeID)
	if err != nil {
		return nil, err
	}
	sn := st.snapshot(snapshotID)
	if sn == nil {
		m.d.release(st)
		return nil, fmt.Errorf("snapshot %s: %w", snapshotID, volume.ErrNotFound)
	}
	return &snapshotDevice{d: m.d, st: st, sn: sn}, nil
}

// clone copies the view of a short-lived internal snapshot, which gives the
// point in time, holes skipped.
func (m cbwMode) clone(ctx context.Context, st *volState, dstID string) error {
	tmp := "clone-" + dstID
	if err := st.addSnapshot(m.d, tmp); err != nil {
		return err
	}
	defer m.d.DeleteSnapshot(context.WithoutCancel(ctx), st.id, tmp)
	sn := st.snapshot(tmp)
	return m.d.copyInto(ctx, &snapshotDevice{d: m.d, st: st, sn: sn, noRelease: true}, dstID, sn.size)
}

func (m cbwMode) volumeFromSnapshot(ctx context.Context, volumeID, snapshotID, dstID string, size int64) error {
	dev, err := m.d.OpenSnapshot(ctx, volumeID, snapshotID)
	if err != nil {
		return err
	}
	defer dev.Close()
	return m.d.copyInto(ctx, dev, dstID, max(size, dev.Size()))
}

// volState is what every open device of one volume shares.
type volState struct {
	id string
	f  *os.File
	// direct writes a bulk writer's large aligned writes around the page
	// cache; opened (once, by directOnce) when the first bulk writer opens
	// the volume, so volumes only a virtual machine writes hold no second
	// descriptor.
	direct     *blockdev.DirectWriter
	directOnce sync.Once
	size       int64
	bs         int64
	refs       int // guarded by Driver.mu

	// lock orders writes against snapshots: a write takes it shared while
	// the volume has no copy-before-write snapshot and exclusive while it
	// has one; taking a snapshot takes it exclusive, so it waits for the
	// writes in flight and the writes after it see the snapshot.
	lock  sync.RWMutex
	snaps []*cbwSnap
	// staging, in reflink mode, holds the writes made while a snapshot or
	// clone of the volume is taken (see stage.go); broken is set when they
	// could not be applied afterwards.
	staging *stage
	broken  error
}

// cbwSnap is a copy-before-write snapshot: a sparse store of the blocks
// saved from the volume, and a map of which ones are saved.
type cbwSnap struct {
	id    string
	size  int64
	store *os.File
	mapf  *os.File
	saved []byte // one byte a block: 1 = saved in store
	// written has, for a snapshot this process took, a bit for each
	// sixteenth of a block (4 KiB at least; see sub) written since the
	// snapshot: changed ranges finer than whole saved blocks. It lives in
	// memory only, so a snapshot loaded after a restart has none, and its
	// changed ranges are its saved blocks, whole.
	written []uint16
}

func (st *volState) blocks(size int64) int64 { return (size + st.bs - 1) / st.bs }

// sub is the granularity of the written maps: a sixteenth of a block, and
// at least 4 KiB.
func (st *volState) sub() int64 { return max(4096, st.bs/16) }

// markWritten records [off, off+length) in the written maps. Called with
// lock held exclusively, before the write.
func (st *volState) markWritten(off, length int64) {
	sub := st.sub()
	for _, sn := range st.snaps {
		if sn.written == nil {
			continue
		}
		for s, end := off/sub, min(off+length, sn.size); s*sub < end; s++ {
			pos := s * sub
			sn.written[pos/st.bs] |= 1 << (pos % st.bs / sub)
		}
	}
}

// loadSnapshots reads the copy-before-write snapshots of a volume from the
// pool (after a restart).
func (st *volState) loadSnapshots(d *Driver) error {
	entries, err := os.ReadDir(d.snapDir(st.id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".map") {
			continue
		}
		id := strings.TrimSuffix(e.Name(), ".map")
		sn, err := openSnap(d, st.id, id)
		if err != nil {
			return fmt.Errorf("load snapshot %s of volume %s: %w", id, st.id, err)
		}
		st.snaps = append(st.snaps, sn)
	}
	return nil
}

func openSnap(d *Driver, volID, id string) (*cbwSnap, error) {
	store, err := os.OpenFile(d.snapPath(volID, id, ".cow"), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	mapf, err := os.OpenFile(d.snapPath(volID, id, ".map"), os.O_RDWR, 0)
	if err != nil {
		store.Close()
		return nil, err
	}
	fi, err := store.Stat()
	if err != nil {
		store.Close()
		mapf.Close()
		return nil, err
	}
	saved, err := io.ReadAll(mapf)
	if err != nil {
		store.Close()
		mapf.Close()
		return nil, err
	}
	return &cbwSnap{id: id, size: fi.Size(), store: store, mapf: mapf, saved: saved}, nil
}

// addSnapshot registers a new snapshot at this instant. Its files are
// created and made durable before the volume's lock is taken: an fsync on a
// busy filesystem can wait for the volume's own writeback (ext4 commits
// ordered data first), and writers must not wait meanwhile.
func (st *volState) addSnapshot(d *Driver, id string) error {
	if st.snapshot(id) != nil {
		return fmt.Errorf("snapshot %s: %w", id, volume.ErrAlreadyExists)
	}
	if err := os.MkdirAll(d.snapDir(st.id), 0o750); err != nil {
		return err
	}
	paths := []string{d.snapPath(st.id, id, ".cow"), d.snapPath(st.id, id, ".map")}
	cleanup := func() {
		for _, p := range paths {
			os.Remove(p)
		}
	}
	store, err := os.OpenFile(paths[0], os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("snapshot %s: %w", id, volume.ErrAlreadyExists)
	}
	if err != nil {
		return err
	}
	mapf, err := os.OpenFile(paths[1], os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		// We made the store file: a map file without it is a crash's
		// leftover, removed with it so the next try can succeed.
		store.Close()
		cleanup()
		return err
	}
	st.lock.RLock()
	size := st.size
	st.lock.RUnlock()
	n := st.blocks(size)
	if err := errors.Join(store.Truncate(size), mapf.Truncate(n), store.Sync(), mapf.Sync(), syncDir(filepath.Dir(paths[0]))); err != nil {
		store.Close()
		mapf.Close()
		cleanup()
		return err
	}
	st.lock.Lock()
	defer st.lock.Unlock()
	if _, err := os.Stat(paths[1]); err != nil {
		// Deleted while it was being created (DeleteSnapshot removes the
		// files, then the registration once more).
		store.Close()
		mapf.Close()
		cleanup()
		return fmt.Errorf("snapshot %s: deleted while being created: %w", id, err)
	}
	if st.size != size {
		// Extended meanwhile: size the snapshot as the volume is now.
		n = st.blocks(st.size)
		if err := errors.Join(store.Truncate(st.size), mapf.Truncate(n), store.Sync(), mapf.Sync()); err != nil {
			store.Close()
			mapf.Close()
			cleanup()
			return err
		}
	}
	st.snaps = append(st.snaps, &cbwSnap{id: id, size: st.size, store: store, mapf: mapf, saved: make([]byte, n), written: make([]uint16, n)})
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (st *volState) snapshot(id string) *cbwSnap {
	st.lock.RLock()
	defer st.lock.RUnlock()
	return st.snapshotLocked(id)
}

func (st *volState) snapshotLocked(id string) *cbwSnap {
	for _, s := range st.snaps {
		if s.id == id {
			return s
		}
	}
	return nil
}

func (st *volState) removeSnapshot(id string) {
	st.lock.Lock()
	defer st.lock.Unlock()
	for i, s := range st.snaps {
		if s.id == id {
			s.store.Close()
			s.mapf.Close()
			st.snaps = append(st.snaps[:i], st.snaps[i+1:]...)
			return
		}
	}
}

// preserve saves, for every snapshot still lacking them, the current
// contents of the blocks [off, off+length) touches. Called with lock held
// exclusively, before the write.
func (st *volState) preserve(off, length int64) error {
	if length <= 0 {
		return nil
	}
	var buf []byte
	for b := off / st.bs; b <= (off+length-1)/st.bs; b++ {
		start := b * st.bs
		var loaded bool
		for _, sn := range st.snaps {
			if start >= sn.size || sn.saved[b] != 0 {
				continue
			}
			n := min(st.bs, sn.size-start)
			if !loaded {
				if buf == nil {
					buf = make([]byte, st.bs)
				}
				if _, err := st.f.ReadAt(buf[:n], start); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("copy-before-write: read block %d: %w", b, err)
				}
				loaded = true
			}
			if isZero(buf[:n]) {
				// Nothing to store: the store is sparse and reads zeros there.
			} else if _, err := sn.store.WriteAt(buf[:n], start); err != nil {
				return fmt.Errorf("copy-before-write: save block %d in snapshot %s: %w", b, sn.id, err)
			}
			if _, err := sn.mapf.WriteAt([]byte{1}, b); err != nil {
				return fmt.Errorf("copy-before-write: map block %d in snapshot %s: %w", b, sn.id, err)
			}
			sn.saved[b] = 1
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
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

// modify runs a change of [off, off+length) of the live volume (data p, or
// a zeroing when p is nil) with the copy-before-write it needs, or stages it
// while a reflink snapshot is being taken.
func (st *volState) modify(off, length int64, p []byte, change func() error) error {
	for {
		st.lock.RLock()
		if st.broken != nil {
			st.lock.RUnlock()
			return st.broken
		}
		if st.staging != nil {
			done, wait, err := st.stageWrite(off, length, p, change)
			st.lock.RUnlock()
			if done {
				return err
			}
			<-wait
			continue
		}
		if len(st.snaps) == 0 {
			err := change()
			st.lock.RUnlock()
			return err
		}
		st.lock.RUnlock()
		break
	}
	st.lock.Lock()
	defer st.lock.Unlock()
	if err := st.preserve(off, length); err != nil {
		return err
	}
	st.markWritten(off, length)
	return change()
}

// writeFile writes p at off into the volume's file: when direct, and p is
// large and aligned, around the page cache; else through it.
func (st *volState) writeFile(p []byte, off int64, direct bool) error {
	if !direct {
		_, err := st.f.WriteAt(p, off)
		return err
	}
	if done, err := st.direct.WriteAt(p, off); done {
		return err
	}
	_, err := st.f.WriteAt(p, off)
	return err
}

// volumeDevice is a volume opened by OpenVolume.
type volumeDevice struct {
	d        *Driver
	st       *volState
	size     int64
	readOnly bool
	// direct sends large aligned writes around the page cache (a bulk
	// writer's device, OpenVolumeForBulkWrites).
	direct bool
	once   sync.Once
}

func (v *volumeDevice) Size() int64    { return v.size }
func (v *volumeDevice) ReadOnly() bool { return v.readOnly }

func (v *volumeDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckRange(v.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	v.st.lock.RLock()
	defer v.st.lock.RUnlock()
	if v.st.staging != nil {
		return v.st.readStaged(p, off)
	}
	n, err := v.st.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) && n == len(p) {
		err = nil
	}
	return n, err
}

func (v *volumeDevice) WriteAt(p []byte, off int64) (int, error) {
	if v.readOnly {
		return 0, blockdev.ErrReadOnly
	}
	if err := blockdev.CheckRange(v.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	err := v.st.modify(off, int64(len(p)), p, func() error { return v.st.writeFile(p, off, v.direct) })
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (v *volumeDevice) Zero(off, length int64) error {
	if v.readOnly {
		return blockdev.ErrReadOnly
	}
	if err := blockdev.CheckRange(v.size, off, length); err != nil {
		return err
	}
	return v.st.modify(off, length, nil, func() error { return blockdev.PunchHole(v.st.f, off, length) })
}

func (v *volumeDevice) Trim(off, length int64) error { return v.Zero(off, length) }

// Flush makes the snapshots' saved blocks durable before the volume's data.
func (v *volumeDevice) Flush() error {
	if v.readOnly {
		return nil
	}
	v.st.lock.RLock()
	if s := v.st.staging; s != nil {
		// Staged writes reach the file when the snapshot is taken.
		v.st.lock.RUnlock()
		<-s.done
		v.st.lock.RLock()
	}
	defer v.st.lock.RUnlock()
	if v.st.broken != nil {
		return v.st.broken
	}
	for _, sn := range v.st.snaps {
		if err := errors.Join(sn.store.Sync(), sn.mapf.Sync()); err != nil {
			return err
		}
	}
	return v.st.f.Sync()
}

func (v *volumeDevice) Extents(off, length int64) ([]blockdev.Extent, error) {
	if err := blockdev.CheckRange(v.size, off, length); err != nil {
		return nil, err
	}
	v.st.lock.RLock()
	defer v.st.lock.RUnlock()
	if s := v.st.staging; s != nil && s.touches(off, length) {
		// Staged writes may fill holes: call it all data for now.
		return []blockdev.Extent{{Offset: off, Length: length}}, nil
	}
	return blockdev.SeekExtents(v.st.f, off, length)
}

func (v *volumeDevice) Close() error {
	v.once.Do(func() { v.d.release(v.st) })
	return nil
}

// snapshotDevice reads a copy-before-write snapshot: saved blocks from its
// store, the rest from the live volume.
type snapshotDevice struct {
	d         *Driver
	st        *volState
	sn        *cbwSnap
	noRelease bool
	once      sync.Once
}

func (s *snapshotDevice) Size() int64    { return s.sn.size }
func (s *snapshotDevice) ReadOnly() bool { return true }

func (s *snapshotDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckRange(s.sn.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	s.st.lock.RLock()
	defer s.st.lock.RUnlock()
	bs := s.st.bs
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		b := pos / bs
		n := int(min(int64(len(p)-done), (b+1)*bs-pos))
		src := s.st.f
		if s.sn.saved[b] != 0 {
			src = s.sn.store
		}
		m, err := src.ReadAt(p[done:done+n], pos)
		if errors.Is(err, io.EOF) {
			clear(p[done+m : done+n]) // past the live file's end: zeros
			err = nil
		}
		if err != nil {
			return done + m, err
		}
		done += n
	}
	return done, nil
}

func (s *snapshotDevice) WriteAt([]byte, int64) (int, error) { return 0, blockdev.ErrReadOnly }
func (s *snapshotDevice) Zero(int64, int64) error            { return blockdev.ErrReadOnly }
func (s *snapshotDevice) Trim(int64, int64) error            { return blockdev.ErrReadOnly }
func (s *snapshotDevice) Flush() error                       { return nil }

// Extents: a block is data where it is saved or where the live volume has
// data (a conservative answer: never a hole where data is).
func (s *snapshotDevice) Extents(off, length int64) ([]blockdev.Extent, error) {
	if err := blockdev.CheckRange(s.sn.size, off, length); err != nil {
		return nil, err
	}
	s.st.lock.RLock()
	defer s.st.lock.RUnlock()
	live, err := blockdev.SeekExtents(s.st.f, off, length)
	if err != nil {
		return nil, err
	}
	var out []blockdev.Extent
	add := func(o, l int64, hole bool) {
		if l <= 0 {
			return
		}
		if n := len(out); n > 0 && out[n-1].Hole == hole && out[n-1].End() == o {
			out[n-1].Length += l
			return
		}
		out = append(out, blockdev.Extent{Offset: o, Length: l, Hole: hole, Zero: hole})
	}
	bs := s.st.bs
	for _, e := range live {
		if !e.Hole {
			add(e.Offset, e.Length, false)
			continue
		}
		for pos := e.Offset; pos < e.End(); {
			b := pos / bs
			n := min(e.End(), (b+1)*bs) - pos
			add(pos, n, s.sn.saved[b] == 0)
			pos += n
		}
	}
	return out, nil
}

func (s *snapshotDevice) Close() error {
	if !s.noRelease {
		s.once.Do(func() { s.d.release(s.st) })
	}
	return nil
}
