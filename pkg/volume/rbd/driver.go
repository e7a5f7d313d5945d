//go:build rbd && cgo

package rbd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
)

// Image and snapshot names (Cinder's).
const (
	volumePrefix   = "volume-"
	snapshotPrefix = "snapshot-"
	// clonePrefix names the hidden snapshot a clone of a volume is made
	// from: clone-<clone's id>.
	clonePrefix = "clone-"
)

const (
	// order is log2 of the object size: 4 MiB objects.
	order = 22
	// features of the images the driver creates.
	features = librbd.FeatureLayering | librbd.FeatureExclusiveLock | librbd.FeatureObjectMap |
		librbd.FeatureFastDiff | librbd.FeatureDeepFlatten
)

// Driver is the rbd driver: one rados connection and one I/O context (the
// pool, and the namespace if any) shared by every operation; each device
// has an image handle of its own.
type Driver struct {
	cfg   Config
	log   *slog.Logger
	where string // "pool rbd" or "pool rbd, namespace ns", for messages

	// life is held (read) by every operation, and by Close (write), which
	// frees the connection.
	life   sync.RWMutex
	closed bool
	conn   *rados.Conn
	ioctx  *rados.IOContext

	mu   sync.Mutex
	devs map[*device]struct{} // open devices, for DeleteVolume and Close
}

var (
	_ volume.Driver         = (*Driver)(nil)
	_ volume.Snapshotter    = (*Driver)(nil)
	_ volume.SnapshotOpener = (*Driver)(nil)
	_ volume.Cloner         = (*Driver)(nil)
	_ volume.Extender       = (*Driver)(nil)
	_ volume.ChangedRanger  = (*Driver)(nil)
)

// New connects to the cluster and checks that the pool (and the namespace)
// exist.
func New(cfg Config) (*Driver, error) {
	if cfg.Pool == "" {
		return nil, fmt.Errorf("rbd driver: %w: the pool is required", volume.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	conf, user := cfg.ConfPath, cfg.User
	if conf == "" {
		conf = "the default ceph.conf"
	}
	if user == "" {
		user = "admin"
	}
	var conn *rados.Conn
	var err error
	if cfg.User == "" {
		conn, err = rados.NewConn()
	} else {
		conn, err = rados.NewConnWithUser(cfg.User)
	}
	if err != nil {
		return nil, fmt.Errorf("rbd driver: %w", err)
	}
	if cfg.ConfPath != "" {
		err = conn.ReadConfigFile(cfg.ConfPath)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("rbd driver: read %s: %w", conf, err)
	}
	// Connect waits for the monitors up to client_mount_timeout (300 s
	// unless ceph.conf says otherwise): say what it waits for.
	cfg.Logger.Info("rbd driver: connecting to the Ceph cluster", "conf", conf, "user", "client."+user, "pool", cfg.Pool, "namespace", cfg.Namespace)
	if err := conn.Connect(); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("rbd driver: connect to the cluster of %s as client.%s: %w", conf, user, err)
	}
	ioctx, err := conn.OpenIOContext(cfg.Pool)
	if err != nil {
		conn.Shutdown()
		if errno(err) == -int(syscall.ENOENT) {
			return nil, fmt.Errorf("rbd driver: pool %q does not exist in the cluster of %s (create it with `ceph osd pool create %s` and `rbd pool init %s`, or name another with --rbd-pool): %w",
				cfg.Pool, conf, cfg.Pool, cfg.Pool, volume.ErrNotFound)
		}
		return nil, fmt.Errorf("rbd driver: open pool %q of the cluster of %s: %w", cfg.Pool, conf, err)
	}
	where := "pool " + cfg.Pool
	if cfg.Namespace != "" {
		ok, err := librbd.NamespaceExists(ioctx, cfg.Namespace)
		if err == nil && !ok {
			err = fmt.Errorf("%w (create it with `rbd namespace create %s/%s`)", volume.ErrNotFound, cfg.Pool, cfg.Namespace)
		}
		if err != nil {
			ioctx.Destroy()
			conn.Shutdown()
			return nil, fmt.Errorf("rbd driver: namespace %q of pool %q in the cluster of %s: %w", cfg.Namespace, cfg.Pool, conf, err)
		}
		ioctx.SetNamespace(cfg.Namespace)
		where += ", namespace " + cfg.Namespace
	}
	return &Driver{cfg: cfg, log: cfg.Logger, where: where, conn: conn, ioctx: ioctx, devs: map[*device]struct{}{}}, nil
}

// Close closes the devices still open and the connection.
func (d *Driver) Close() error {
	d.life.Lock()
	defer d.life.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.mu.Lock()
	devs := d.devs
	d.devs = map[*device]struct{}{}
	d.mu.Unlock()
	for dev := range devs {
		dev.Close()
	}
	d.ioctx.Destroy()
	d.conn.Shutdown()
	return nil
}

var errClosed = errors.New("rbd driver: closed")

// begin holds the connection open for an operation: release when done.
func (d *Driver) begin() (release func(), err error) {
	d.life.RLock()
	if d.closed {
		d.life.RUnlock()
		return nil, errClosed
	}
	return d.life.RUnlock, nil
}

// Name implements volume.Driver.
func (d *Driver) Name() string { return "rbd" }

// Capabilities implements volume.Driver.
func (d *Driver) Capabilities() volume.Capabilities {
	return volume.Capabilities{
		Snapshot:       true,
		SnapshotExport: !d.cfg.DisableSnapshotOpen,
		Clone:          true,
		Extend:         true,
		ChangedRanges:  true,
		Mode:           "rbd-snapshot",
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

func checkIDs(ids ...string) error {
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return err
		}
	}
	return nil
}

func imageName(volumeID string) string  { return volumePrefix + volumeID }
func snapName(snapshotID string) string { return snapshotPrefix + snapshotID }
func cloneSnapName(dstID string) string { return clonePrefix + dstID }

// errno is the negative errno of a go-ceph error, or 0.
func errno(err error) int {
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		return ce.ErrorCode()
	}
	return 0
}

// translate maps a librbd/librados error to the volume package's sentinel
// (keeping the original in the chain), once, with what was being done.
func (d *Driver) translate(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	var sentinel error
	switch errno(err) {
	case -int(syscall.ENOENT):
		sentinel = volume.ErrNotFound
	case -int(syscall.EEXIST):
		sentinel = volume.ErrAlreadyExists
	case -int(syscall.EBUSY), -int(syscall.ENOTEMPTY):
		sentinel = volume.ErrInUse
	case -int(syscall.ENOSPC), -int(syscall.EDQUOT):
		sentinel = volume.ErrNoSpace
	case -int(syscall.EROFS):
		sentinel = blockdev.ErrReadOnly
	}
	if errors.Is(err, librbd.ErrNotFound) {
		sentinel = volume.ErrNotFound
	}
	if sentinel != nil {
		return fmt.Errorf("%s (%s): %w (%w)", what, d.where, sentinel, err)
	}
	return fmt.Errorf("%s (%s): %w", what, d.where, err)
}

func isErrno(err error, e syscall.Errno) bool { return errno(err) == -int(e) }

// Space implements volume.Driver: the cluster's raw size and what the pool
// can still hold (ceph df's max_avail, which counts its replication).
func (d *Driver) Space(ctx context.Context) (total, free int64, err error) {
	release, err := d.begin()
	if err != nil {
		return 0, 0, err
	}
	cmd, _ := json.Marshal(map[string]string{"prefix": "df", "format": "json"})
	type result struct {
		out    []byte
		status string
		err    error
	}
	done := make(chan result, 1)
	// The command may outlive ctx: it keeps the connection until it ends.
	go func() {
		defer release()
		out, status, err := d.conn.MonCommand(cmd)
		done <- result{out, status, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("rbd driver: ceph df: %w", ctx.Err())
	}
	if r.err != nil {
		return 0, 0, fmt.Errorf("rbd driver: ceph df: %w (%s)", r.err, r.status)
	}
	var df struct {
		Stats struct {
			TotalBytes int64 `json:"total_bytes"`
		} `json:"stats"`
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				MaxAvail int64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(r.out, &df); err != nil {
		return 0, 0, fmt.Errorf("rbd driver: ceph df: %w", err)
	}
	for _, p := range df.Pools {
		if p.Name == d.cfg.Pool {
			return df.Stats.TotalBytes, p.Stats.MaxAvail, nil
		}
	}
	// The pool exists (New opened it), but the mgr has not reported its
	// statistics yet: it does within seconds of the pool's creation.
	return 0, 0, fmt.Errorf("rbd driver: ceph df does not list pool %q yet (the mgr reports a new pool's space within seconds; if this lasts, is a ceph-mgr running?)", d.cfg.Pool)
}

// checkSize refuses a size that is not a positive multiple of 512, and one
// the pool cannot hold.
func (d *Driver) checkSize(ctx context.Context, size int64) error {
	if size <= 0 || size%512 != 0 {
		return fmt.Errorf("%w: size %d is not a positive multiple of 512", volume.ErrInvalidArgument, size)
	}
	return d.checkFree(ctx, size)
}

func (d *Driver) checkFree(ctx context.Context, size int64) error {
	_, free, err := d.Space(ctx)
	if err != nil {
		return err
	}
	if size > free {
		return fmt.Errorf("%w: %d bytes requested, %s can hold %d more", volume.ErrNoSpace, size, d.where, free)
	}
	return nil
}

// imageOptions are the options of the images (and clones) the driver
// makes; the caller destroys them.
func imageOptions(clone bool) (*librbd.ImageOptions, error) {
	opts := librbd.NewRbdImageOptions()
	set := []struct {
		opt librbd.ImageOption
		val uint64
	}{
		{librbd.ImageOptionFormat, 2},
		{librbd.ImageOptionFeatures, features},
		{librbd.ImageOptionOrder, order},
	}
	if clone {
		// Format 1 clones: the parent snapshot is protected while it has
		// children, whatever the cluster's minimum client version.
		set = append(set, struct {
			opt librbd.ImageOption
			val uint64
		}{librbd.ImageOptionCloneFormat, 1})
	}
	for _, s := range set {
		if err := opts.SetUint64(s.opt, s.val); err != nil {
			opts.Destroy()
			return nil, fmt.Errorf("rbd driver: image option %d: %w", s.opt, err)
		}
	}
	return opts, nil
}

// CreateVolume implements volume.Driver.
func (d *Driver) CreateVolume(ctx context.Context, id string, size int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	release, err := d.begin()
	if err != nil {
		return err
	}
	defer release()
	if err := d.checkSize(ctx, size); err != nil {
		return err
	}
	opts, err := imageOptions(false)
	if err != nil {
		return err
	}
	defer opts.Destroy()
	return d.translate(librbd.CreateImage(d.ioctx, imageName(id), uint64(size), opts), "create image %s", imageName(id))
}

// openImage opens an image read-write, or read-only (at a snapshot if
// snap is not "").
func (d *Driver) openImage(name, snap string, readOnly bool) (*librbd.Image, error) {
	var img *librbd.Image
	var err error
	if readOnly {
		img, err = librbd.OpenImageReadOnly(d.ioctx, name, snap)
	} else {
		img, err = librbd.OpenImage(d.ioctx, name, snap)
	}
	if err != nil {
		if snap != "" {
			return nil, d.translate(err, "open image %s at snapshot %s", name, snap)
		}
		return nil, d.translate(err, "open image %s", name)
	}
	return img, nil
}

// onImage holds the connection open, opens image name (read-only or not)
// and runs f on it.
func (d *Driver) onImage(name string, readOnly bool, f func(img *librbd.Image) error) error {
	release, err := d.begin()
	if err != nil {
		return err
	}
	defer release()
	img, err := d.openImage(name, librbd.NoSnapshot, readOnly)
	if err != nil {
		return err
	}
	defer img.Close()
	return f(img)
}

// VolumeSize implements volume.Driver.
func (d *Driver) VolumeSize(_ context.Context, id string) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	var size uint64
	err := d.onImage(imageName(id), true, func(img *librbd.Image) (err error) {
		size, err = img.GetSize()
		return d.translate(err, "size of image %s", imageName(id))
	})
	return int64(size), err
}

// OpenVolume implements volume.Driver: a device over an image handle of its
// own. A read-only handle does not take the exclusive lock, and sees what
// the writers have flushed.
func (d *Driver) OpenVolume(_ context.Context, id string, readOnly bool) (blockdev.Device, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	return d.openDevice(imageName(id), librbd.NoSnapshot, readOnly)
}

// OpenSnapshot implements volume.SnapshotOpener: the image opened read-only
// at the snapshot.
func (d *Driver) OpenSnapshot(_ context.Context, volumeID, snapshotID string) (blockdev.Device, error) {
	if d.cfg.DisableSnapshotOpen {
		return nil, fmt.Errorf("opening snapshots is disabled: %w", volume.ErrUnsupported)
	}
	if err := checkIDs(volumeID, snapshotID); err != nil {
		return nil, err
	}
	return d.openDevice(imageName(volumeID), snapName(snapshotID), true)
}

func (d *Driver) openDevice(name, snap string, readOnly bool) (blockdev.Device, error) {
	release, err := d.begin()
	if err != nil {
		return nil, err
	}
	defer release()
	img, err := d.openImage(name, snap, readOnly)
	if err != nil {
		return nil, err
	}
	size, err := img.GetSize()
	if err != nil {
		img.Close()
		return nil, d.translate(err, "size of image %s", name)
	}
	dev := &device{d: d, name: name, snap: snap, size: int64(size), readOnly: readOnly, img: img}
	d.mu.Lock()
	d.devs[dev] = struct{}{}
	d.mu.Unlock()
	return dev, nil
}

func (d *Driver) forget(dev *device) {
	d.mu.Lock()
	delete(d.devs, dev)
	d.mu.Unlock()
}

// openDevices counts the devices open in this process on an image (at its
// head or any snapshot), or with snap not "", on that snapshot of it.
func (d *Driver) openDevices(name, snap string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for dev := range d.devs {
		if dev.name == name && (snap == "" || dev.snap == snap) {
			n++
		}
	}
	return n
}

// DeleteVolume implements volume.Driver. A volume with snapshots, or open
// (here or by another client), is in use. The hidden snapshots its clones
// were made from go with it: the clones are flattened first.
func (d *Driver) DeleteVolume(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	release, err := d.begin()
	if err != nil {
		return err
	}
	defer release()
	name := imageName(id)
	if n := d.openDevices(name, ""); n > 0 {
		return fmt.Errorf("image %s has %d device(s) open: %w", name, n, volume.ErrInUse)
	}
	img, err := d.openImage(name, librbd.NoSnapshot, true)
	if errors.Is(err, volume.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		img.Close()
		return d.translate(err, "list the snapshots of image %s", name)
	}
	watchers, err := img.ListWatchers()
	if err != nil {
		img.Close()
		return d.translate(err, "list the watchers of image %s", name)
	}
	parent, perr := img.GetParent()
	img.Close()
	if len(watchers) > 0 {
		return fmt.Errorf("image %s is open by %d client(s) (%s): %w", name, len(watchers), watchers[0].Addr, volume.ErrInUse)
	}
	var user, hidden []string
	for _, s := range snaps {
		if strings.HasPrefix(s.Name, clonePrefix) {
			hidden = append(hidden, s.Name)
		} else {
			user = append(user, s.Name)
		}
	}
	if len(user) > 0 {
		return fmt.Errorf("image %s has snapshot(s) %s: delete them first: %w", name, strings.Join(user, ", "), volume.ErrInUse)
	}
	for _, s := range hidden {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.removeSnapshot(name, s, true); err != nil {
			return err
		}
	}
	if err := librbd.RemoveImage(d.ioctx, name); err != nil && !isErrno(err, syscall.ENOENT) {
		return d.translate(err, "remove image %s", name)
	}
	// The hidden snapshot this volume was cloned from, if any, goes
	// when it has no other clone.
	if perr == nil && d.ours(parent.Image.PoolName, parent.Image.PoolNamespace) && strings.HasPrefix(parent.Snap.SnapName, clonePrefix) {
		if err := d.removeSnapshot(parent.Image.ImageName, parent.Snap.SnapName, false); err != nil && !errors.Is(err, volume.ErrInUse) {
			d.log.Warn("rbd: removing the hidden snapshot of a deleted clone", "image", parent.Image.ImageName, "snapshot", parent.Snap.SnapName, "err", err)
		}
	}
	return nil
}

// ours reports whether an image of that pool and namespace is one of this
// driver's.
func (d *Driver) ours(pool, namespace string) bool {
	return pool == d.cfg.Pool && namespace == d.cfg.Namespace
}

// removeSnapshot removes snapshot snap of image name (absent: nil). Its
// clones are flattened first if flatten, else the snapshot stays, ErrInUse.
func (d *Driver) removeSnapshot(name, snap string, flatten bool) error {
	children, err := d.children(name, snap)
	if errors.Is(err, volume.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(children) > 0 && !flatten {
		return fmt.Errorf("snapshot %s@%s has clone(s) %v: %w", name, snap, children, volume.ErrInUse)
	}
	for _, c := range children {
		if err := d.flatten(c); err != nil {
			return err
		}
	}
	img, err := d.openImage(name, librbd.NoSnapshot, false)
	if errors.Is(err, volume.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer img.Close()
	s := img.GetSnapshot(snap)
	protected, err := s.IsProtected()
	if isErrno(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return d.translate(err, "snapshot %s@%s", name, snap)
	}
	if protected {
		if err := s.Unprotect(); err != nil && !isErrno(err, syscall.EINVAL) {
			return d.translate(err, "unprotect snapshot %s@%s", name, snap)
		}
	}
	if err := s.Remove(); err != nil && !isErrno(err, syscall.ENOENT) {
		return d.translate(err, "remove snapshot %s@%s", name, snap)
	}
	return nil
}

// children lists the clones of a snapshot (image names in this pool and
// namespace); ErrNotFound if the image or the snapshot is absent.
func (d *Driver) children(name, snap string) ([]string, error) {
	img, err := d.openImage(name, snap, true)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	pools, images, err := img.ListChildren()
	if err != nil {
		return nil, d.translate(err, "list the clones of %s@%s", name, snap)
	}
	for i, p := range pools {
		if p != d.cfg.Pool {
			return nil, fmt.Errorf("snapshot %s@%s has clone %s in pool %s, outside this driver's %s: flatten it first: %w", name, snap, images[i], p, d.where, volume.ErrInUse)
		}
	}
	return images, nil
}

// flatten copies the parent's data into a clone, which then no longer
// needs the parent snapshot.
func (d *Driver) flatten(name string) error {
	img, err := d.openImage(name, librbd.NoSnapshot, false)
	if err != nil {
		return err
	}
	defer img.Close()
	d.log.Info("rbd: flattening a clone so that its parent snapshot can go", "image", name, "where", d.where)
	return d.translate(img.Flatten(), "flatten image %s", name)
}

// CreateSnapshot implements volume.Snapshotter. librbd has the handle
// holding the image's exclusive lock (a writer) take the snapshot, after
// its writes in flight: a point in time.
func (d *Driver) CreateSnapshot(_ context.Context, volumeID, snapshotID string) error {
	if err := checkIDs(volumeID, snapshotID); err != nil {
		return err
	}
	name := imageName(volumeID)
	return d.onImage(name, false, func(img *librbd.Image) error {
		_, err := img.CreateSnapshot(snapName(snapshotID))
		return d.translate(err, "create snapshot %s@%s", name, snapName(snapshotID))
	})
}

// DeleteSnapshot implements volume.Snapshotter: its clones (volumes made
// from it) are flattened first; absent is not an error.
func (d *Driver) DeleteSnapshot(_ context.Context, volumeID, snapshotID string) error {
	if err := checkIDs(volumeID, snapshotID); err != nil {
		return err
	}
	release, err := d.begin()
	if err != nil {
		return err
	}
	defer release()
	name, snap := imageName(volumeID), snapName(snapshotID)
	if n := d.openDevices(name, snap); n > 0 {
		return fmt.Errorf("snapshot %s@%s has %d device(s) open: %w", name, snap, n, volume.ErrInUse)
	}
	return d.removeSnapshot(name, snap, true)
}

// protect protects a snapshot (already protected is fine).
func (d *Driver) protect(img *librbd.Image, snap string) error {
	s := img.GetSnapshot(snap)
	protected, err := s.IsProtected()
	if err != nil {
		return d.translate(err, "snapshot %s@%s", img.GetName(), snap)
	}
	if protected {
		return nil
	}
	if err := s.Protect(); err != nil && !isErrno(err, syscall.EBUSY) {
		return d.translate(err, "protect snapshot %s@%s", img.GetName(), snap)
	}
	return nil
}

// clone makes image dst a clone of parent@snap.
func (d *Driver) clone(parent, snap, dst string) error {
	opts, err := imageOptions(true)
	if err != nil {
		return err
	}
	defer opts.Destroy()
	return d.translate(librbd.CloneImage(d.ioctx, parent, snap, d.ioctx, dst, opts), "clone %s@%s to image %s", parent, snap, dst)
}

func (d *Driver) exists(name string) (bool, error) {
	img, err := d.openImage(name, librbd.NoSnapshot, true)
	if errors.Is(err, volume.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	img.Close()
	return true, nil
}

// CloneVolume implements volume.Cloner: a copy-on-write clone of a hidden
// snapshot of the source (clone-<dst>), which DeleteVolume of the clone
// removes. The clone is not flattened: the backup service's temporary
// clones live briefly.
func (d *Driver) CloneVolume(_ context.Context, srcID, dstID string) error {
	if err := checkIDs(srcID, dstID); err != nil {
		return err
	}
	release, err := d.begin()
	if err != nil {
		return err
	}
	defer release()
	src, dst, hidden := imageName(srcID), imageName(dstID), cloneSnapName(dstID)
	if ok, err := d.exists(dst); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("image %s (%s): %w", dst, d.where, volume.ErrAlreadyExists)
	}
	img, err := d.openImage(src, librbd.NoSnapshot, false)
	if err != nil {
		return err
	}
	defer img.Close()
	if _, err := img.CreateSnapshot(hidden); isErrno(err, syscall.EEXIST) {
		// Left by a clone that failed or was removed by hand: the clone
		// it was for does not exist.
		if err := d.removeSnapshot(src, hidden, false); err != nil {
			return err
		}
		_, err = img.CreateSnapshot(hidden)
		if err != nil {
			return d.translate(err, "create snapshot %s@%s", src, hidden)
		}
	} else if err != nil {
		return d.translate(err, "create snapshot %s@%s", src, hidden)
	}
	err = d.protect(img, hidden)
	if err == nil {
		err = d.clone(src, hidden, dst)
	}
	if err != nil {
		if rerr := d.removeSnapshot(src, hidden, false); rerr != nil {
			d.log.Warn("rbd: removing the hidden snapshot of a failed clone", "image", src, "snapshot", hidden, "err", rerr)
		}
		return err
	}
	return nil
}

// VolumeFromSnapshot implements volume.Cloner: a clone of the (protected)
// snapshot, grown to size if that is larger.
func (d *Driver) VolumeFromSnapshot(ctx context.Context, volumeID, snapshotID, dstID string, size int64) error {
	if err := checkIDs(volumeID, snapshotID, dstID); err != nil {
		return err
	}
	if size < 0 || size%512 != 0 {
		return fmt.Errorf("%w: size %d is not a multiple of 512", volume.ErrInvalidArgument, size)
	}
	release, err := d.begin()
	if err != nil {
		return err
	}
	defer release()
	src, snap, dst := imageName(volumeID), snapName(snapshotID), imageName(dstID)
	img, err := d.openImage(src, librbd.NoSnapshot, false)
	if err != nil {
		return err
	}
	defer img.Close()
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return d.translate(err, "list the snapshots of image %s", src)
	}
	var snapSize int64 = -1
	for _, s := range snaps {
		if s.Name == snap {
			snapSize = int64(s.Size)
		}
	}
	if snapSize < 0 {
		return fmt.Errorf("snapshot %s@%s (%s): %w", src, snap, d.where, volume.ErrNotFound)
	}
	if size > snapSize {
		if err := d.checkFree(ctx, size); err != nil {
			return err
		}
	}
	if err := d.protect(img, snap); err != nil {
		return err
	}
	if err := d.clone(src, snap, dst); err != nil {
		return err
	}
	if size > snapSize {
		c, err := d.openImage(dst, librbd.NoSnapshot, false)
		if err == nil {
			err = d.translate(c.Resize(uint64(size)), "resize image %s to %d bytes", dst, size)
			c.Close()
		}
		if err != nil {
			if rerr := librbd.RemoveImage(d.ioctx, dst); rerr != nil {
				d.log.Warn("rbd: removing a clone that could not be resized", "image", dst, "err", rerr)
			}
			return err
		}
	}
	return nil
}

// ExtendVolume implements volume.Extender.
func (d *Driver) ExtendVolume(ctx context.Context, id string, newSize int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	name := imageName(id)
	return d.onImage(name, false, func(img *librbd.Image) error {
		cur, err := img.GetSize()
		if err != nil {
			return d.translate(err, "size of image %s", name)
		}
		if newSize <= int64(cur) || newSize%512 != 0 {
			return fmt.Errorf("%w: new size %d must be a multiple of 512 larger than %d", volume.ErrInvalidArgument, newSize, cur)
		}
		if err := d.checkFree(ctx, newSize-int64(cur)); err != nil {
			return err
		}
		return d.translate(img.Resize(uint64(newSize)), "resize image %s to %d bytes", name, newSize)
	})
}

// ChangedRanges implements volume.ChangedRanger: librbd's diff between the
// two snapshots (the earlier by snapshot id from the later), byte-exact.
func (d *Driver) ChangedRanges(_ context.Context, volumeID, fromSnapshotID, toSnapshotID string) ([]volume.Range, error) {
	if err := checkIDs(volumeID, fromSnapshotID, toSnapshotID); err != nil {
		return nil, err
	}
	name := imageName(volumeID)
	var out []volume.Range
	err := d.onImage(name, true, func(img *librbd.Image) (err error) {
		out, err = d.changedRanges(img, name, fromSnapshotID, toSnapshotID)
		return err
	})
	return out, err
}

// changedRanges is ChangedRanges on the open image name.
func (d *Driver) changedRanges(img *librbd.Image, name, fromSnapshotID, toSnapshotID string) ([]volume.Range, error) {
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return nil, d.translate(err, "list the snapshots of image %s", name)
	}
	find := func(id string) (librbd.SnapInfo, error) {
		for _, s := range snaps {
			if s.Name == snapName(id) {
				return s, nil
			}
		}
		return librbd.SnapInfo{}, fmt.Errorf("snapshot %s@%s (%s): %w", name, snapName(id), d.where, volume.ErrNotFound)
	}
	from, err := find(fromSnapshotID)
	if err != nil {
		return nil, err
	}
	to, err := find(toSnapshotID)
	if err != nil {
		return nil, err
	}
	if from.Id == to.Id {
		return nil, nil
	}
	if from.Id > to.Id {
		from, to = to, from
	}
	if err := img.SetSnapByID(to.Id); err != nil {
		return nil, d.translate(err, "set image %s to snapshot %s", name, to.Name)
	}
	exts, err := diff(img, from.Name, 0, int64(to.Size))
	if err != nil {
		return nil, d.translate(err, "diff of image %s from %s to %s", name, from.Name, to.Name)
	}
	out := make([]volume.Range, 0, len(exts))
	for _, e := range exts {
		out = append(out, volume.Range{Offset: e.off, Length: e.n})
	}
	return mergeRanges(out), nil
}
