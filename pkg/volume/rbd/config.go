// Package rbd is the Ceph RBD volume driver: each volume is an RBD image in
// a pool (optionally in an RBD namespace of it), named as Cinder names them.
//
//	volume X                       image volume-X
//	snapshot Y of volume X         RBD snapshot volume-X@snapshot-Y
//	the point in time of a clone Z hidden RBD snapshot volume-X@clone-Z
//
// Images are created with the features layering, exclusive-lock,
// object-map, fast-diff and deep-flatten, in 4 MiB objects. Snapshots are
// RBD snapshots: a point in time by construction, also while the volume is
// written through another handle (librbd hands a snapshot request to the
// handle that holds the exclusive lock, which quiesces and flushes its
// writes first). Clones are copy-on-write RBD clones (format 1: the parent
// snapshot is protected while it has children); a clone of a volume is
// made from a hidden snapshot of it, removed with the clone's deletion.
// Changed ranges between two snapshots and a device's extents come from
// librbd's diff-iterate, first object by object (fast-diff answers from the
// object maps), then byte ranges within the objects it reported: exact
// where an object already existed, and from the object's start to the end
// of its data where it did not (librbd reports no finer).
//
// The driver needs librbd (cgo, build tag rbd). A binary built without them
// has a New that says so.
package rbd

import (
	"errors"
	"log/slog"
)

// Config is the rbd driver's configuration.
type Config struct {
	// ConfPath is the ceph.conf naming the monitors and the keyring; ""
	// uses librados's default search (CEPH_CONF, /etc/ceph/ceph.conf, ...).
	ConfPath string
	// User is the cephx client id without "client." ("" = admin).
	User string
	// Pool is the pool volumes live in (required).
	Pool string
	// Namespace is an RBD namespace in the pool ("" = none).
	Namespace string
	// DisableSnapshotOpen makes the driver refuse to open snapshots, so
	// backups of in-use volumes go through a temporary clone.
	DisableSnapshotOpen bool
	Logger              *slog.Logger
}

// ErrNotCompiled is what New returns in a binary built without the driver.
var ErrNotCompiled = errors.New("the rbd driver is not compiled into this binary; build with -tags rbd and cgo, with librbd-dev installed (`make build` does so when librbd-dev is installed)")
