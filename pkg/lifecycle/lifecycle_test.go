package lifecycle

import (
	"errors"
	"testing"
)

func TestTransitions(t *testing.T) {
	tests := []struct {
		m        Machine
		from, to string
		ok       bool
	}{
		{Volumes, VolumeAvailable, VolumeBackingUp, true},
		{Volumes, VolumeInUse, VolumeBackingUp, true},
		{Volumes, VolumeBackingUp, VolumeBackingUp, false},
		{Volumes, VolumeError, VolumeBackingUp, false},
		{Volumes, VolumeInUse, VolumeDeleting, false},
		{Volumes, VolumeInUse, VolumeRestoringBackup, false},
		{Volumes, VolumeRestoringBackup, VolumeErrorRestoring, true},
		{Snapshots, SnapshotAvailable, SnapshotBackingUp, true},
		{Snapshots, SnapshotCreating, SnapshotBackingUp, false},
		{Backups, BackupCreating, BackupAvailable, true},
		{Backups, BackupCreating, BackupDeleting, false},
		{Backups, BackupRestoring, BackupDeleting, false},
		{Backups, BackupError, BackupDeleting, true},
	}
	for _, tt := range tests {
		err := tt.m.Check(tt.from, tt.to)
		if tt.ok && err != nil {
			t.Errorf("%s %s->%s: unexpected %v", tt.m.Kind, tt.from, tt.to, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("%s %s->%s: got %v, want ErrInvalidTransition", tt.m.Kind, tt.from, tt.to, err)
		}
	}
	if !Volumes.Known(VolumeInUse) || Volumes.Known("bogus") {
		t.Error("Known misreports")
	}
}
