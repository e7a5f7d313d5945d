package lifecycle

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

var machines = []Machine{Volumes, Snapshots, Backups}

func TestTransitions(t *testing.T) {
	tests := []struct {
		m    Machine
		from string
		ev   Event
		ok   bool
	}{
		{Volumes, VolumeAvailable, BeginBackup, true},
		{Volumes, VolumeInUse, BeginBackup, false},
		{Volumes, VolumeInUse, BeginBackupInUse, true},
		{Volumes, VolumeBackingUp, BeginBackupInUse, false},
		{Volumes, VolumeError, BeginBackupInUse, false},
		{Volumes, VolumeInUse, Delete, false},
		{Volumes, VolumeInUse, BeginRestore, false},
		{Volumes, VolumeRestoringBackup, RestoreFailed, true},
		{Volumes, VolumeRestoringBackup, LiveRestoreStarted, true},
		{Volumes, VolumeAvailable, LiveRestoreStarted, false},
		{Volumes, VolumeDeleting, ResetStatus(VolumeAvailable), true},
		{Volumes, "bogus", ResetStatus(VolumeError), true},
		{Snapshots, SnapshotAvailable, BeginBackup, true},
		{Snapshots, SnapshotCreating, BeginBackup, false},
		{Backups, BackupCreating, CreateDone, true},
		{Backups, BackupCreating, Delete, false},
		{Backups, BackupRestoring, Delete, false},
		{Backups, BackupError, Delete, true},
		{Backups, BackupCreating, ForceDelete, true},
		{Backups, BackupRestoring, ResetStatus(BackupError), true},
		// Moves the tables lack: events a machine does not have, and
		// reset targets it does not allow.
		{Snapshots, SnapshotAvailable, Attach, false},
		{Snapshots, SnapshotError, ResetStatus(SnapshotAvailable), false},
		{Snapshots, SnapshotAvailable, ForceDelete, false},
		{Volumes, VolumeAvailable, ForceDelete, false},
		{Volumes, VolumeAvailable, ResetStatus("bogus"), false},
		{Backups, BackupError, ResetStatus(BackupDeleting), false},
		{Backups, BackupError, ResetStatus(BackupCreating), false},
		{Backups, BackupAvailable, Event("teleport"), false},
	}
	for _, tt := range tests {
		err := tt.m.Check(tt.from, tt.ev)
		if tt.ok && err != nil {
			t.Errorf("%s %s from %s: unexpected %v", tt.m.Kind, tt.ev, tt.from, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("%s %s from %s: got %v, want ErrInvalidTransition", tt.m.Kind, tt.ev, tt.from, err)
		}
	}
	if !Volumes.Known(VolumeInUse) || Volumes.Known("bogus") {
		t.Error("Known misreports")
	}
}

// TestTables enumerates the tables as they are meant to be: a change to a
// table changes this listing too, on purpose.
func TestTables(t *testing.T) {
	want := map[string][]string{
		"volume": {
			"create-done: creating -> available",
			"create-failed: creating -> error",
			"attach: available -> in-use",
			"detach: in-use -> available",
			"begin-backup: available -> backing-up (keeps previous)",
			"begin-backup-in-use: available, in-use -> backing-up (keeps previous)",
			"end-backup: backing-up -> previous in-use, available, else available",
			"begin-restore: available -> restoring-backup",
			"restore-done: restoring-backup -> available",
			"restore-failed: restoring-backup -> error_restoring",
			"live-restore-started: restoring-backup -> available",
			"begin-extend: available -> extending",
			"end-extend: extending -> available",
			"extend-failed: extending -> error_extending",
			"delete: available, error, error_restoring, error_deleting, error_extending -> deleting",
			"delete-failed: deleting -> error_deleting",
			"reset-status to creating: any -> creating (admin)",
			"reset-status to available: any -> available (admin)",
			"reset-status to in-use: any -> in-use (admin)",
			"reset-status to backing-up: any -> backing-up (admin)",
			"reset-status to restoring-backup: any -> restoring-backup (admin)",
			"reset-status to extending: any -> extending (admin)",
			"reset-status to deleting: any -> deleting (admin)",
			"reset-status to error: any -> error (admin)",
			"reset-status to error_deleting: any -> error_deleting (admin)",
			"reset-status to error_restoring: any -> error_restoring (admin)",
			"reset-status to error_extending: any -> error_extending (admin)",
		},
		"snapshot": {
			"create-done: creating -> available",
			"create-failed: creating -> error",
			"begin-backup: available -> backing-up (keeps previous)",
			"end-backup: backing-up -> previous available, else available",
			"delete: available, error, error_deleting -> deleting",
			"delete-failed: deleting -> error_deleting",
		},
		"backup": {
			"create-done: creating -> available",
			"create-failed: creating -> error",
			"begin-restore: available -> restoring",
			"end-restore: restoring -> available",
			"delete: available, error, error_deleting -> deleting",
			"delete-failed: deleting -> error_deleting",
			"force-delete: any -> deleting (admin)",
			"reset-status to available: any -> available (admin)",
			"reset-status to error: any -> error (admin)",
		},
	}
	for _, m := range machines {
		var got []string
		for _, r := range m.Rules {
			got = append(got, describe(r))
		}
		if !slices.Equal(got, want[m.Kind]) {
			t.Errorf("%s table:\n%s\nwant:\n%s", m.Kind, strings.Join(got, "\n"), strings.Join(want[m.Kind], "\n"))
		}
	}
}

func describe(r Rule) string {
	src := strings.Join(r.From, ", ")
	if r.AnySource {
		src = "any"
	}
	dst := r.To
	if len(r.ToPrevious) > 0 {
		dst = fmt.Sprintf("previous %s, else %s", strings.Join(r.ToPrevious, ", "), r.To)
	}
	s := fmt.Sprintf("%s: %s -> %s", r.Event, src, dst)
	if r.KeepPrevious {
		s += " (keeps previous)"
	}
	if r.Admin {
		s += " (admin)"
	}
	return s
}

// TestTablesAreSound checks every row against its machine's statuses: each
// event once, sources and targets known, any source only for an admin's
// event, every status reachable from a new resource's status by the events
// the services use (not counting the admin's repairs), and a way out of
// every status.
func TestTablesAreSound(t *testing.T) {
	for _, m := range machines {
		t.Run(m.Kind, func(t *testing.T) {
			if len(m.Statuses) == 0 {
				t.Fatal("no statuses")
			}
			seen := map[string]bool{}
			for _, s := range m.Statuses {
				if seen[s] {
					t.Errorf("status %q listed twice", s)
				}
				seen[s] = true
			}
			events := map[Event]bool{}
			for _, r := range m.Rules {
				if events[r.Event] {
					t.Errorf("event %s listed twice", r.Event)
				}
				events[r.Event] = true
				if r.AnySource != (len(r.From) == 0) {
					t.Errorf("%s: AnySource %v with sources %v", r.Event, r.AnySource, r.From)
				}
				if r.AnySource && !r.Admin {
					t.Errorf("%s starts from any status but is not an admin's event", r.Event)
				}
				for _, s := range append(slices.Clone(r.From), r.Targets()...) {
					if !m.Known(s) {
						t.Errorf("%s names %q, not a %s status", r.Event, s, m.Kind)
					}
				}
				if slices.Contains(r.From, r.To) && len(r.ToPrevious) == 0 {
					t.Errorf("%s goes from %s to itself", r.Event, r.To)
				}
				// Every listed source passes Check; every other status fails
				// it with ErrInvalidTransition.
				for _, s := range append(slices.Clone(m.Statuses), "bogus") {
					err := m.Check(s, r.Event)
					if want := r.AnySource || slices.Contains(r.From, s); want != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidTransition)) {
						t.Errorf("%s from %s: %v", r.Event, s, err)
					}
				}
			}
			reached := map[string]bool{m.Statuses[0]: true}
			for grew := true; grew; {
				grew = false
				for _, r := range m.Rules {
					if r.Admin || !slices.ContainsFunc(r.From, func(s string) bool { return reached[s] }) {
						continue
					}
					for _, to := range r.Targets() {
						if !reached[to] {
							reached[to], grew = true, true
						}
					}
				}
			}
			for _, s := range m.Statuses {
				if !reached[s] {
					t.Errorf("status %q cannot be reached from %q", s, m.Statuses[0])
				}
				if !slices.ContainsFunc(m.Rules, func(r Rule) bool { return !r.Admin && slices.Contains(r.From, s) }) {
					t.Errorf("no event leads out of status %q", s)
				}
			}
		})
	}
}
