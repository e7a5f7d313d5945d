// Package file is the volume manager's default storage driver: each volume
// is a sparse file in a pool directory. Point-in-time copies (snapshots,
// clones) are made one of two ways, chosen when the driver starts:
//
//   - reflink (XFS, btrfs): a snapshot or clone is a FICLONE copy of the
//     file: instant, copy-on-write, a true point in time whoever writes the
//     file, since the ioctl is atomic with respect to concurrent writes.
//   - copy-before-write (any other filesystem): the volume manager is the
//     only writer (attachments go through its NBD server, which writes
//     through the devices this driver opens), so before a block of a volume
//     is overwritten for the first time after a snapshot, its old contents
//     are saved into that snapshot's store. A snapshot reads its saved blocks
//     from the store and every other block from the live volume. The save
//     (data, then the block's map entry) is written before the new data, so a
//     crash of the process never leaves a snapshot pointing at new data;
//     Flush syncs the stores before the volume.
//
// The two are the two implementations of pointInTime (reflink.go, cbw.go);
// the Driver's methods do what is common and leave the rest to the one New
// chose.
//
// Layout under the pool directory:
//
//	volumes/<id>.img                  a volume
//	snapshots/<volume>/<id>.img       a reflink snapshot
//	snapshots/<volume>/<id>.cow       a copy-before-write store (sparse, the snapshot's size)
//	snapshots/<volume>/<id>.map       its map: one byte a block, 1 = saved
//
// Local paths are offered in reflink mode only, where a snapshot is one file.
//
// Changed ranges between two snapshots of a volume, for incremental backups,
// come in copy-before-write mode from the snapshots' maps (a block that
// changed between two snapshots is saved in the older one), and in reflink
// mode from comparing the two snapshot files' extent maps (FIEMAP: a range
// both files map to the same disk blocks is unchanged); see changed.go.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/volume"
	"golang.org/x/sys/unix"
)

// Modes.
const (
	ModeAuto            = "auto"
	ModeReflink         = "reflink"
	ModeCopyBeforeWrite = "copy-before-write"
)

// DefaultBlockSize is the copy-before-write granularity.
const DefaultBlockSize = 64 << 10

// Config configures the driver.
type Config struct {
	// Dir is the pool directory (created if missing).
	Dir string
	// Mode is auto (reflink when the filesystem can, else
	// copy-before-write), reflink, or copy-before-write.
	Mode string
	// BlockSize is the copy-before-write granularity (default 64 KiB).
	BlockSize int64
	// DisableSnapshotOpen makes the driver report that it cannot attach
	// snapshots, so backups of in-use volumes take a temporary clone.
	DisableSnapshotOpen bool
	Logger              *slog.Logger
}

// Driver is the file driver.
type Driver struct {
	cfg Config
	pit pointInTime
	log *slog.Logger

	mu   sync.Mutex
	vols map[string]*volState
}

// pointInTime is one way of making point-in-time copies (snapshots,
// clones): reflink (reflink.go) or copy-before-write (cbw.go), chosen once
// at New. The Driver's methods check their arguments and the volume, and
// leave to it what differs.
type pointInTime interface {
	// name is the mode's name (ModeReflink or ModeCopyBeforeWrite).
	name() string
	// localPaths reports whether volumes and snapshots may be used as
	// files (volume.LocalPather): only where nothing but the filesystem
	// keeps the point in time.
	localPaths() bool
	// newVolume prepares the file of a new volume, still empty.
	newVolume(f *os.File)
	// openVolume completes the state of a volume when this process opens
	// it first.
	openVolume(st *volState) error
	// createSnapshot takes snapshot id of the volume (its snapshot
	// directory exists).
	createSnapshot(st *volState, id string) error
	// deleteSnapshot removes a snapshot's files and whatever state it has;
	// a snapshot that is absent is no error.
	deleteSnapshot(volumeID, snapshotID string) error
	// openSnapshot opens a snapshot read-only.
	openSnapshot(volumeID, snapshotID string) (blockdev.Device, error)
	// clone makes volume dstID a point-in-time copy of the volume, which
	// may be in use.
	clone(ctx context.Context, st *volState, dstID string) error
	// volumeFromSnapshot makes volume dstID of at least size bytes from a
	// snapshot.
	volumeFromSnapshot(ctx context.Context, volumeID, snapshotID, dstID string, size int64) error
	// changedRanges answers ChangedRanges (the ids are checked).
	changedRanges(ctx context.Context, volumeID, fromID, toID string) ([]volume.Range, error)
}

var (
	_ pointInTime = reflinkMode{}
	_ pointInTime = cbwMode{}
)

var (
	_ volume.Driver         = (*Driver)(nil)
	_ volume.Snapshotter    = (*Driver)(nil)
	_ volume.SnapshotOpener = (*Driver)(nil)
	_ volume.LocalPather    = (*Driver)(nil)
	_ volume.Cloner         = (*Driver)(nil)
	_ volume.Extender       = (*Driver)(nil)
	_ volume.ChangedRanger  = (*Driver)(nil)
	_ volume.BulkOpener     = (*Driver)(nil)
)

// New opens (creating) the pool and decides the mode.
func New(cfg Config) (*Driver, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("file driver: %w: the pool directory is required", volume.ErrInvalidArgument)
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.BlockSize < 4096 || cfg.BlockSize&(cfg.BlockSize-1) != 0 {
		return nil, fmt.Errorf("file driver: %w: block size %d is not a power of two of at least 4096", volume.ErrInvalidArgument, cfg.BlockSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o750); err != nil {
			return nil, fmt.Errorf("file driver: %w", err)
		}
	}
	d := &Driver{cfg: cfg, log: cfg.Logger, vols: map[string]*volState{}}
	canReflink := probeReflink(cfg.Dir)
	switch cfg.Mode {
	case "", ModeAuto:
		d.pit = cbwMode{d}
		if canReflink {
			d.pit = reflinkMode{d}
		}
	case ModeReflink:
		if !canReflink {
			return nil, fmt.Errorf("file driver: %w: the filesystem of %s cannot reflink (FICLONE); use XFS or btrfs, or mode copy-before-write", volume.ErrUnsupported, cfg.Dir)
		}
		d.pit = reflinkMode{d}
	case ModeCopyBeforeWrite:
		d.pit = cbwMode{d}
	default:
		return nil, fmt.Errorf("file driver: %w: mode %q (want auto, reflink, copy-before-write)", volume.ErrInvalidArgument, cfg.Mode)
	}
	return d, nil
}

// probeReflink clones a small file to see whether the filesystem can.
func probeReflink(dir string) bool {
	src, err := os.CreateTemp(dir, ".probe-")
	if err != nil {
		return false
	}
	defer os.Remove(src.Name())
	defer src.Close()
	src.Write(make([]byte, 4096))
	dst, err := os.CreateTemp(dir, ".probe-")
	if err != nil {
		return false
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil
}

// Close closes the files the driver keeps open. Devices still open must
// not be used afterwards.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, st := range d.vols {
		st.lock.Lock()
		for _, sn := range st.snaps {
			sn.store.Close()
			sn.mapf.Close()
		}
		st.direct.Close()
		st.f.Close()
		st.lock.Unlock()
		delete(d.vols, id)
	}
	return nil
}

// Name implements volume.Driver.
func (d *Driver) Name() string { return "file" }

// Mode is the point-in-time mode in use.
func (d *Driver) Mode() string { return d.pit.name() }

// Capabilities implements volume.Driver.
func (d *Driver) Capabilities() volume.Capabilities {
	return volume.Capabilities{
		Snapshot:       true,
		SnapshotExport: !d.cfg.DisableSnapshotOpen,
		LocalPath:      d.pit.localPaths(),
		Clone:          true,
		Extend:         true,
		ChangedRanges:  true,
		Mode:           d.pit.name(),
	}
}

func checkID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w: id %q", volume.ErrInvalidArgument, id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("%w: id %q may contain only letters, digits and '-'", volume.ErrInvalidArgument, id)
		}
	}
	return nil
}

func (d *Driver) volumePath(id string) string { return filepath.Join(d.cfg.Dir, "volumes", id+".img") }
func (d *Driver) snapDir(volID string) string { return filepath.Join(d.cfg.Dir, "snapshots", volID) }
func (d *Driver) snapPath(volID, snapID, ext string) string {
	return filepath.Join(d.snapDir(volID), snapID+ext)
}

// Space implements volume.Driver.
func (d *Driver) Space(context.Context) (int64, int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.cfg.Dir, &st); err != nil {
		return 0, 0, fmt.Errorf("file driver: statfs: %w", err)
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize, nil
}

func (d *Driver) checkSize(ctx context.Context, size int64) error {
	if size <= 0 || size%512 != 0 {
		return fmt.Errorf("%w: size %d is not a positive multiple of 512", volume.ErrInvalidArgument, size)
	}
	_, free, err := d.Space(ctx)
	if err != nil {
		return err
	}
	if size > free {
		return fmt.Errorf("%w: %d bytes requested, %d free", volume.ErrNoSpace, size, free)
	}
	return nil
}

// CreateVolume implements volume.Driver: a sparse file of size bytes.
func (d *Driver) CreateVolume(ctx context.Context, id string, size int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.checkSize(ctx, size); err != nil {
		return err
	}
	f, err := os.OpenFile(d.volumePath(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("volume %s: %w", id, volume.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create volume %s: %w", id, err)
	}
	defer f.Close()
	d.pit.newVolume(f)
	if err := f.Truncate(size); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("size volume %s: %w", id, err)
	}
	return f.Sync()
}

// DeleteVolume implements volume.Driver. A volume with snapshots is not
// deleted (ErrInUse): their data may live in it.
func (d *Driver) DeleteVolume(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	snaps, _ := os.ReadDir(d.snapDir(id))
	if len(snaps) > 0 {
		return fmt.Errorf("volume %s has %d snapshot file(s): %w", id, len(snaps), volume.ErrInUse)
	}
	d.mu.Lock()
	if st := d.vols[id]; st != nil {
		if st.refs > 0 {
			d.mu.Unlock()
			return fmt.Errorf("volume %s is open: %w", id, volume.ErrInUse)
		}
		st.direct.Close()
		st.f.Close()
		delete(d.vols, id)
	}
	d.mu.Unlock()
	os.Remove(d.snapDir(id))
	if err := os.Remove(d.volumePath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	return nil
}

// VolumeSize implements volume.Driver.
func (d *Driver) VolumeSize(_ context.Context, id string) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	fi, err := os.Stat(d.volumePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// ExtendVolume implements volume.Extender.
func (d *Driver) ExtendVolume(ctx context.Context, id string, newSize int64) error {
	cur, err := d.VolumeSize(ctx, id)
	if err != nil {
		return err
	}
	if newSize <= cur || newSize%512 != 0 {
		return fmt.Errorf("%w: new size %d must be a multiple of 512 larger than %d", volume.ErrInvalidArgument, newSize, cur)
	}
	if err := d.checkSize(ctx, newSize-cur); err != nil {
		return err
	}
	st, err := d.state(id)
	if err != nil {
		return err
	}
	defer d.release(st)
	st.lock.Lock()
	defer st.lock.Unlock()
	if err := st.f.Truncate(newSize); err != nil {
		return fmt.Errorf("extend volume %s: %w", id, err)
	}
	st.size = newSize
	return st.f.Sync()
}

// LocalPath implements volume.LocalPather (reflink mode: the volume's or
// the snapshot's file).
func (d *Driver) LocalPath(ctx context.Context, volumeID, snapshotID string) (string, error) {
	if err := checkID(volumeID); err != nil {
		return "", err
	}
	if !d.pit.localPaths() {
		return "", fmt.Errorf("local paths in %s mode: %w", d.pit.name(), volume.ErrUnsupported)
	}
	p := d.volumePath(volumeID)
	if snapshotID != "" {
		if err := checkID(snapshotID); err != nil {
			return "", err
		}
		p = d.snapPath(volumeID, snapshotID, ".img")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w", p, volume.ErrNotFound)
	}
	return p, nil
}

// OpenVolume implements volume.Driver.
func (d *Driver) OpenVolume(_ context.Context, id string, readOnly bool) (blockdev.Device, error) {
	st, err := d.state(id)
	if err != nil {
		return nil, err
	}
	st.lock.RLock()
	size := st.size
	st.lock.RUnlock()
	return &volumeDevice{d: d, st: st, size: size, readOnly: readOnly}, nil
}

// OpenVolumeForBulkWrites implements volume.BulkOpener: writes of
// blockdev.DirectMin or more, 4 KiB-aligned, go to the volume's file with
// O_DIRECT, where the filesystem can. Only for bulk writers (restores): a
// virtual machine's large writes would wait for the disk instead of the
// page cache.
func (d *Driver) OpenVolumeForBulkWrites(ctx context.Context, id string) (blockdev.Device, error) {
	dev, err := d.OpenVolume(ctx, id, false)
	if err != nil {
		return nil, err
	}
	v := dev.(*volumeDevice)
	v.st.directOnce.Do(func() { v.st.direct = blockdev.NewDirectWriter(v.st.f) })
	v.direct = true
	return dev, nil
}

// state returns the shared state of a volume, opened on first use; every
// device of the volume uses it, so copy-before-write sees every write.
func (d *Driver) state(id string) (*volState, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.vols[id]; st != nil {
		st.refs++
		return st, nil
	}
	f, err := os.OpenFile(d.volumePath(id), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st := &volState{id: id, f: f, size: fi.Size(), bs: d.cfg.BlockSize, refs: 1}
	if err := d.pit.openVolume(st); err != nil {
		f.Close()
		return nil, err
	}
	d.vols[id] = st
	return st, nil
}

// release drops a reference; the state stays cached (closing the file
// handle happens at delete).
func (d *Driver) release(st *volState) {
	d.mu.Lock()
	st.refs--
	d.mu.Unlock()
}

// CreateSnapshot implements volume.Snapshotter.
func (d *Driver) CreateSnapshot(ctx context.Context, volumeID, snapshotID string) error {
	if err := checkID(snapshotID); err != nil {
		return err
	}
	st, err := d.state(volumeID)
	if err != nil {
		return err
	}
	defer d.release(st)
	if err := os.MkdirAll(d.snapDir(volumeID), 0o750); err != nil {
		return err
	}
	return d.pit.createSnapshot(st, snapshotID)
}

// DeleteSnapshot implements volume.Snapshotter.
func (d *Driver) DeleteSnapshot(ctx context.Context, volumeID, snapshotID string) error {
	if err := checkID(volumeID); err != nil {
		return err
	}
	if err := checkID(snapshotID); err != nil {
		return err
	}
	if err := d.pit.deleteSnapshot(volumeID, snapshotID); err != nil {
		return err
	}
	if entries, _ := os.ReadDir(d.snapDir(volumeID)); len(entries) == 0 {
		os.Remove(d.snapDir(volumeID))
	}
	return nil
}

// removeSnapshotFiles removes the files a snapshot may have, in either
// mode.
func (d *Driver) removeSnapshotFiles(volumeID, snapshotID string) error {
	for _, ext := range []string{".img", ".cow", ".map"} {
		if err := os.Remove(d.snapPath(volumeID, snapshotID, ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delete snapshot %s: %w", snapshotID, err)
		}
	}
	return nil
}

// OpenSnapshot implements volume.SnapshotOpener (read-only).
func (d *Driver) OpenSnapshot(ctx context.Context, volumeID, snapshotID string) (blockdev.Device, error) {
	if d.cfg.DisableSnapshotOpen {
		return nil, fmt.Errorf("opening snapshots is disabled: %w", volume.ErrUnsupported)
	}
	for _, id := range []string{volumeID, snapshotID} {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	return d.pit.openSnapshot(volumeID, snapshotID)
}

// CloneVolume implements volume.Cloner: a point-in-time copy of a volume
// that may be in use.
func (d *Driver) CloneVolume(ctx context.Context, srcID, dstID string) error {
	if err := checkID(dstID); err != nil {
		return err
	}
	st, err := d.state(srcID)
	if err != nil {
		return err
	}
	defer d.release(st)
	if err := d.checkSize(ctx, 512); err != nil {
		return err
	}
	return d.pit.clone(ctx, st, dstID)
}

// VolumeFromSnapshot implements volume.Cloner.
func (d *Driver) VolumeFromSnapshot(ctx context.Context, volumeID, snapshotID, dstID string, size int64) error {
	for _, id := range []string{volumeID, snapshotID, dstID} {
		if err := checkID(id); err != nil {
			return err
		}
	}
	return d.pit.volumeFromSnapshot(ctx, volumeID, snapshotID, dstID, size)
}

// copyInto creates volume dstID of size bytes holding src's data.
func (d *Driver) copyInto(ctx context.Context, src blockdev.Device, dstID string, size int64) error {
	if err := d.CreateVolume(ctx, dstID, size); err != nil {
		return err
	}
	dst, err := os.OpenFile(d.volumePath(dstID), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer dst.Close()
	direct := blockdev.NewDirectWriter(dst)
	defer direct.Close()
	fail := func(err error) error {
		dst.Close()
		os.Remove(d.volumePath(dstID))
		return fmt.Errorf("copy into volume %s: %w", dstID, err)
	}
	exts, err := src.Extents(0, src.Size())
	if err != nil {
		return fail(err)
	}
	buf := make([]byte, 4<<20)
	for _, e := range exts {
		if e.Hole || e.Zero {
			continue
		}
		for off := e.Offset; off < e.End(); {
			if err := ctx.Err(); err != nil {
				return fail(err)
			}
			n := min(int64(len(buf)), e.End()-off)
			if _, err := src.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return fail(err)
			}
			done, err := direct.WriteAt(buf[:n], off)
			if !done {
				_, err = dst.WriteAt(buf[:n], off)
			}
			if err != nil {
				return fail(err)
			}
			off += n
		}
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	return nil
}

// Snapshots lists the snapshot ids of a volume found in the pool (for tests
// and consistency checks).
func (d *Driver) Snapshots(volumeID string) []string {
	entries, _ := os.ReadDir(d.snapDir(volumeID))
	seen := map[string]bool{}
	var out []string
	for _, e := range entries {
		id := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".img"), ".cow"), ".map")
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
