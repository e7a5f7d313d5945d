// Package lifecycle holds the status machines of volumes, snapshots and
// backups as transition tables, checked in one place. Stores write every
// transition as a conditional update ("... WHERE status IN (allowed sources)"),
// so two requests racing on one resource cannot both win.
package lifecycle

import (
	"errors"
	"fmt"
	"slices"
)

// ErrInvalidTransition is returned (wrapped) for a move the table forbids.
var ErrInvalidTransition = errors.New("invalid status transition")

// Volume statuses (the Block Storage API's names).
const (
	VolumeCreating        = "creating"
	VolumeAvailable       = "available"
	VolumeInUse           = "in-use"
	VolumeBackingUp       = "backing-up"
	VolumeRestoringBackup = "restoring-backup"
	VolumeExtending       = "extending"
	VolumeDeleting        = "deleting"
	VolumeError           = "error"
	VolumeErrorDeleting   = "error_deleting"
	VolumeErrorRestoring  = "error_restoring"
	VolumeErrorExtending  = "error_extending"
)

// Snapshot statuses.
const (
	SnapshotCreating      = "creating"
	SnapshotAvailable     = "available"
	SnapshotBackingUp     = "backing-up"
	SnapshotDeleting      = "deleting"
	SnapshotError         = "error"
	SnapshotErrorDeleting = "error_deleting"
)

// Backup statuses.
const (
	BackupCreating      = "creating"
	BackupAvailable     = "available"
	BackupRestoring     = "restoring"
	BackupDeleting      = "deleting"
	BackupError         = "error"
	BackupErrorDeleting = "error_deleting"
)

// Machine is a transition table: for each target status, the statuses it
// may be entered from.
type Machine struct {
	Kind string
	// From[to] lists the allowed sources of to.
	From map[string][]string
}

// Sources returns the statuses from which to may be entered.
func (m Machine) Sources(to string) []string { return m.From[to] }

// Check returns nil when from -> to is allowed, else ErrInvalidTransition
// wrapped with a message naming both.
func (m Machine) Check(from, to string) error {
	if slices.Contains(m.From[to], from) {
		return nil
	}
	return fmt.Errorf("%w: %s cannot go from %q to %q", ErrInvalidTransition, m.Kind, from, to)
}

// Known reports whether status appears in the table.
func (m Machine) Known(status string) bool {
	if _, ok := m.From[status]; ok {
		return true
	}
	for _, srcs := range m.From {
		if slices.Contains(srcs, status) {
			return true
		}
	}
	return false
}

// Volumes is the volume status machine.
var Volumes = Machine{Kind: "volume", From: map[string][]string{
	VolumeAvailable:       {VolumeCreating, VolumeInUse, VolumeRestoringBackup, VolumeExtending},
	VolumeInUse:           {VolumeAvailable},
	VolumeBackingUp:       {VolumeAvailable, VolumeInUse},
	VolumeRestoringBackup: {VolumeAvailable, VolumeCreating},
	VolumeExtending:       {VolumeAvailable},
	VolumeDeleting:        {VolumeAvailable, VolumeError, VolumeErrorRestoring, VolumeErrorDeleting, VolumeErrorExtending},
	VolumeError:           {VolumeCreating},
	VolumeErrorDeleting:   {VolumeDeleting},
	VolumeErrorRestoring:  {VolumeRestoringBackup},
	VolumeErrorExtending:  {VolumeExtending},
}}

// Snapshots is the snapshot status machine.
var Snapshots = Machine{Kind: "snapshot", From: map[string][]string{
	SnapshotAvailable:     {SnapshotCreating, SnapshotBackingUp},
	SnapshotBackingUp:     {SnapshotAvailable},
	SnapshotDeleting:      {SnapshotAvailable, SnapshotError, SnapshotErrorDeleting},
	SnapshotError:         {SnapshotCreating},
	SnapshotErrorDeleting: {SnapshotDeleting},
}}

// Backups is the backup status machine.
var Backups = Machine{Kind: "backup", From: map[string][]string{
	BackupAvailable:     {BackupCreating, BackupRestoring},
	BackupRestoring:     {BackupAvailable},
	BackupDeleting:      {BackupAvailable, BackupError, BackupErrorDeleting},
	BackupError:         {BackupCreating},
	BackupErrorDeleting: {BackupDeleting},
}}
