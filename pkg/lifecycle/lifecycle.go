// Package lifecycle holds the status machines of volumes, snapshots and
// backups as transition tables, and is the only door through which a status
// changes: a caller names a machine and an event, the table says from which
// statuses the event may start and to which status it leads, and the store
// writes that move as one conditional update ("... WHERE status IN (the
// event's sources)"), so two requests racing on one resource cannot both
// win. A move the table lacks is ErrInvalidTransition and is never written.
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

// Event names a status change. Each machine lists the events it has.
type Event string

// The events of the machines. Which machine has which, from where and to
// where, is in the tables below.
const (
	CreateDone       Event = "create-done"
	CreateFailed     Event = "create-failed"
	Attach           Event = "attach"
	Detach           Event = "detach"
	BeginBackup      Event = "begin-backup"
	BeginBackupInUse Event = "begin-backup-in-use"
	EndBackup        Event = "end-backup"
	BeginRestore     Event = "begin-restore"
	RestoreDone      Event = "restore-done"
	RestoreFailed    Event = "restore-failed"
	EndRestore       Event = "end-restore"
	// LiveRestoreStarted: a restoring-backup volume is usable at once while
	// a background fill copies the backup (a live restore; the volume's
	// live_* columns say so until the fill ends).
	LiveRestoreStarted Event = "live-restore-started"
	BeginExtend        Event = "begin-extend"
	EndExtend          Event = "end-extend"
	ExtendFailed       Event = "extend-failed"
	Delete             Event = "delete"
	DeleteFailed       Event = "delete-failed"
	ForceDelete        Event = "force-delete"
)

// ResetStatus is an operator's os-reset_status to status to. Each target a
// machine allows is an event of its own in the table, so a target the table
// does not name is refused like any other missing move.
func ResetStatus(to string) Event { return Event("reset-status to " + to) }

// Rule is one row of a table: an event, the statuses it starts from and the
// status it leads to.
type Rule struct {
	Event Event
	// From lists the statuses the event may start from.
	From []string
	// AnySource: the event starts from every status, also one the table
	// does not know (an operator's repair). From is then empty.
	AnySource bool
	// To is the status the event leads to (with ToPrevious: the fallback).
	To string
	// KeepPrevious: the status left is recorded in previous_status, in
	// the same update.
	KeepPrevious bool
	// ToPrevious, when set: the event leads back to the status recorded in
	// previous_status if it is one of these, else to To; previous_status
	// is cleared in the same update.
	ToPrevious []string
	// Admin: an operator's action; its handler checks the caller is an
	// admin.
	Admin bool
}

// Targets lists the statuses the event may lead to.
func (r Rule) Targets() []string {
	out := []string{r.To}
	for _, s := range r.ToPrevious {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Allows reports whether the event may start from status from.
func (r Rule) Allows(from string) bool { return r.AnySource || slices.Contains(r.From, from) }

// Machine is a transition table: the statuses of one kind of resource (the
// first is the status a new one starts in) and its events.
type Machine struct {
	Kind     string
	Statuses []string
	Rules    []Rule
}

// Rule returns the row of event ev, or ErrInvalidTransition (wrapped) when
// the machine has no such event.
func (m Machine) Rule(ev Event) (Rule, error) {
	for _, r := range m.Rules {
		if r.Event == ev {
			return r, nil
		}
	}
	return Rule{}, fmt.Errorf("%w: a %s has no event %q", ErrInvalidTransition, m.Kind, ev)
}

// Has reports whether the machine has event ev.
func (m Machine) Has(ev Event) bool {
	_, err := m.Rule(ev)
	return err == nil
}

// Check returns nil when event ev may start from status from, else
// ErrInvalidTransition wrapped with a message naming both.
func (m Machine) Check(from string, ev Event) error {
	r, err := m.Rule(ev)
	if err != nil {
		return err
	}
	if !r.Allows(from) {
		return fmt.Errorf("%w: a %s cannot %s from %q", ErrInvalidTransition, m.Kind, ev, from)
	}
	return nil
}

// Known reports whether status is one of the machine's statuses.
func (m Machine) Known(status string) bool { return slices.Contains(m.Statuses, status) }

// resets are the events of an operator's os-reset_status: from any status
// to each of targets.
func resets(targets ...string) []Rule {
	out := make([]Rule, 0, len(targets))
	for _, to := range targets {
		out = append(out, Rule{Event: ResetStatus(to), AnySource: true, To: to, Admin: true})
	}
	return out
}

func from(statuses ...string) []string { return statuses }

var volumeStatuses = []string{VolumeCreating, VolumeAvailable, VolumeInUse, VolumeBackingUp, VolumeRestoringBackup,
	VolumeExtending, VolumeDeleting, VolumeError, VolumeErrorDeleting, VolumeErrorRestoring, VolumeErrorExtending}

// Volumes is the volume status machine.
var Volumes = Machine{Kind: "volume", Statuses: volumeStatuses, Rules: append([]Rule{
	{Event: CreateDone, From: from(VolumeCreating), To: VolumeAvailable},
	// No caller today: a failed create removes its row.
	{Event: CreateFailed, From: from(VolumeCreating), To: VolumeError},
	{Event: Attach, From: from(VolumeAvailable), To: VolumeInUse},
	// The last attachment went (or an attach was undone).
	{Event: Detach, From: from(VolumeInUse), To: VolumeAvailable},
	// The blueprint's status swap: backing-up, the old status kept.
	{Event: BeginBackup, From: from(VolumeAvailable), To: VolumeBackingUp, KeepPrevious: true},
	// A backup with force also takes an in-use volume.
	{Event: BeginBackupInUse, From: from(VolumeAvailable, VolumeInUse), To: VolumeBackingUp, KeepPrevious: true},
	// Back to the status kept by begin-backup: in-use or available, and
	// available when what was kept is neither.
	{Event: EndBackup, From: from(VolumeBackingUp), To: VolumeAvailable, ToPrevious: from(VolumeInUse, VolumeAvailable)},
	{Event: BeginRestore, From: from(VolumeAvailable), To: VolumeRestoringBackup},
	{Event: RestoreDone, From: from(VolumeRestoringBackup), To: VolumeAvailable},
	{Event: RestoreFailed, From: from(VolumeRestoringBackup), To: VolumeErrorRestoring},
	// A live restore: available at once, the fill goes on behind it.
	{Event: LiveRestoreStarted, From: from(VolumeRestoringBackup), To: VolumeAvailable},
	{Event: BeginExtend, From: from(VolumeAvailable), To: VolumeExtending},
	// Extended, or the driver failed and the data is as it was.
	{Event: EndExtend, From: from(VolumeExtending), To: VolumeAvailable},
	// No caller today: a failed extend leaves the data as it was (end-extend).
	{Event: ExtendFailed, From: from(VolumeExtending), To: VolumeErrorExtending},
	{Event: Delete, From: from(VolumeAvailable, VolumeError, VolumeErrorRestoring, VolumeErrorDeleting, VolumeErrorExtending), To: VolumeDeleting},
	{Event: DeleteFailed, From: from(VolumeDeleting), To: VolumeErrorDeleting},
},
	// An operator may set any volume status, from any status.
	resets(volumeStatuses...)...)}

// Snapshots is the snapshot status machine.
var Snapshots = Machine{Kind: "snapshot", Statuses: []string{SnapshotCreating, SnapshotAvailable, SnapshotBackingUp,
	SnapshotDeleting, SnapshotError, SnapshotErrorDeleting}, Rules: []Rule{
	{Event: CreateDone, From: from(SnapshotCreating), To: SnapshotAvailable},
	// No caller today: a failed create removes its row.
	{Event: CreateFailed, From: from(SnapshotCreating), To: SnapshotError},
	{Event: BeginBackup, From: from(SnapshotAvailable), To: SnapshotBackingUp, KeepPrevious: true},
	{Event: EndBackup, From: from(SnapshotBackingUp), To: SnapshotAvailable, ToPrevious: from(SnapshotAvailable)},
	{Event: Delete, From: from(SnapshotAvailable, SnapshotError, SnapshotErrorDeleting), To: SnapshotDeleting},
	{Event: DeleteFailed, From: from(SnapshotDeleting), To: SnapshotErrorDeleting},
}}

// Backups is the backup status machine.
var Backups = Machine{Kind: "backup", Statuses: []string{BackupCreating, BackupAvailable, BackupRestoring,
	BackupDeleting, BackupError, BackupErrorDeleting}, Rules: append([]Rule{
	{Event: CreateDone, From: from(BackupCreating), To: BackupAvailable},
	{Event: CreateFailed, From: from(BackupCreating), To: BackupError},
	{Event: BeginRestore, From: from(BackupAvailable), To: BackupRestoring},
	// The restore ended, well or not: the backup itself is unchanged.
	{Event: EndRestore, From: from(BackupRestoring), To: BackupAvailable},
	{Event: Delete, From: from(BackupAvailable, BackupError, BackupErrorDeleting), To: BackupDeleting},
	{Event: DeleteFailed, From: from(BackupDeleting), To: BackupErrorDeleting},
	// os-force_delete: from any status; a job under way is stopped.
	{Event: ForceDelete, AnySource: true, To: BackupDeleting, Admin: true},
},
	// os-reset_status: from any status, to available or error.
	resets(BackupAvailable, BackupError)...)}
