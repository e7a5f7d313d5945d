package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/volume"
)

// reflinkMode makes snapshots and clones as FICLONE copies of the volume's
// file (XFS, btrfs): a snapshot is one file, snapshots/<volume>/<id>.img.
type reflinkMode struct{ d *Driver }

func (reflinkMode) name() string     { return ModeReflink }
func (reflinkMode) localPaths() bool { return true }

// newVolume sets XFS's allocation hints (see xfshint.go).
func (reflinkMode) newVolume(f *os.File) { setAllocationHints(f) }

func (reflinkMode) openVolume(*volState) error { return nil }

func (m reflinkMode) createSnapshot(st *volState, id string) error {
	// FICLONE writes the source's dirty pages back and shares the extents
	// holding the inode lock; flushing first leaves it less to do. Both
	// run while the writes are staged: a write to a page under writeback
	// waits for it on devices that need stable pages (zram, disks with
	// integrity data), so flushing with the writers going stalled them for
	// as long as the flush (40-55 ms a snapshot on zram,
	// docs/benchmarks.md).
	return m.cloneStaged(st, m.d.snapPath(st.id, id, ".img"))
}

// cloneStaged reflinks the volume's file to dst, with the volume's writes
// staged (see stage.go) while it is flushed and cloned.
func (m reflinkMode) cloneStaged(st *volState, dst string) error {
	return st.withStaging(newStage(m.d.cfg.Dir), func() error {
		if err := st.flushForClone(); err != nil {
			return err
		}
		return reflink(st.f, dst, 0)
	})
}

func (m reflinkMode) deleteSnapshot(volumeID, snapshotID string) error {
	return m.d.removeSnapshotFiles(volumeID, snapshotID)
}

func (m reflinkMode) openSnapshot(volumeID, snapshotID string) (blockdev.Device, error) {
	dev, err := blockdev.OpenFile(m.d.snapPath(volumeID, snapshotID, ".img"), true)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("snapshot %s: %w", snapshotID, volume.ErrNotFound)
	}
	return dev, err
}

func (m reflinkMode) clone(_ context.Context, st *volState, dstID string) error {
	// As in createSnapshot: the flush too runs with the writes staged.
	return m.cloneStaged(st, m.d.volumePath(dstID))
}

func (m reflinkMode) volumeFromSnapshot(_ context.Context, volumeID, snapshotID, dstID string, size int64) error {
	src, err := os.Open(m.d.snapPath(volumeID, snapshotID, ".img"))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshot %s: %w", snapshotID, volume.ErrNotFound)
	}
	if err != nil {
		return err
	}
	defer src.Close()
	return reflink(src, m.d.volumePath(dstID), size)
}

// reflink clones src into a new file at dst (grown to size if larger).
func reflink(src *os.File, dst string, size int64) error {
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s: %w", filepath.Base(dst), volume.ErrAlreadyExists)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlFileClone(int(f.Fd()), int(src.Fd())); err != nil {
		os.Remove(dst)
		return fmt.Errorf("reflink: %w", err)
	}
	if fi, err := f.Stat(); err == nil && size > fi.Size() {
		if err := f.Truncate(size); err != nil {
			os.Remove(dst)
			return err
		}
	}
	return nil
}
