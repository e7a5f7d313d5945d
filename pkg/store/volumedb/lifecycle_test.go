package volumedb_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/google/uuid"
)

// TestEventFromWrongStatusWritesNothing runs every event of the volume and
// snapshot tables from every status it does not start from: the store
// answers ErrConflict with the current status, and the row, extra columns
// and previous_status included, is as it was. An event the table lacks, or
// extra columns that name the status, are refused before the database.
func TestEventFromWrongStatusWritesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		extra := map[string]any{"fail_reason": "written"}
		for _, r := range lifecycle.Volumes.Rules {
			for _, from := range lifecycle.Volumes.Statuses {
				if r.Allows(from) {
					continue
				}
				v := &volumedb.Volume{ID: uuid.NewString(), ProjectID: "p", SizeBytes: 1, Status: from, PreviousStatus: lifecycle.VolumeInUse}
				if err := s.CreateVolume(ctx, v); err != nil {
					t.Fatal(err)
				}
				before, _ := s.GetVolume(ctx, "", v.ID)
				cur, err := s.TransitionVolume(ctx, v.ID, r.Event, extra)
				if !errors.Is(err, store.ErrConflict) || cur != from {
					t.Errorf("volume %s from %s: %q, %v; want %q and ErrConflict", r.Event, from, cur, err, from)
				}
				if after, _ := s.GetVolume(ctx, "", v.ID); !reflect.DeepEqual(after, before) {
					t.Errorf("volume %s from %s wrote:\n%+v\nwas\n%+v", r.Event, from, after, before)
				}
			}
		}
		v := newVolume(t, s, "p", lifecycle.VolumeAvailable)
		sn := &volumedb.Snapshot{ID: uuid.NewString(), ProjectID: "p", VolumeID: v.ID, SizeBytes: 1}
		for _, r := range lifecycle.Snapshots.Rules {
			for _, from := range lifecycle.Snapshots.Statuses {
				if r.Allows(from) {
					continue
				}
				sn.ID, sn.Status, sn.PreviousStatus = uuid.NewString(), from, lifecycle.SnapshotAvailable
				if err := s.CreateSnapshot(ctx, sn); err != nil {
					t.Fatal(err)
				}
				before, _ := s.GetSnapshot(ctx, "", sn.ID)
				cur, err := s.TransitionSnapshot(ctx, sn.ID, r.Event, extra)
				if !errors.Is(err, store.ErrConflict) || cur != from {
					t.Errorf("snapshot %s from %s: %q, %v; want %q and ErrConflict", r.Event, from, cur, err, from)
				}
				if after, _ := s.GetSnapshot(ctx, "", sn.ID); !reflect.DeepEqual(after, before) {
					t.Errorf("snapshot %s from %s wrote:\n%+v\nwas\n%+v", r.Event, from, after, before)
				}
			}
		}

		// Moves the table lacks never reach the database.
		before, _ := s.GetVolume(ctx, "", v.ID)
		for _, tc := range []struct {
			ev    lifecycle.Event
			extra map[string]any
		}{
			{lifecycle.ForceDelete, extra},                        // not a volume event
			{lifecycle.ResetStatus("bogus"), extra},               // not a volume status
			{lifecycle.Attach, map[string]any{"status": "error"}}, // the status is the table's
			{lifecycle.Attach, map[string]any{"previous_status": "in-use"}},
		} {
			if _, err := s.TransitionVolume(ctx, v.ID, tc.ev, tc.extra); !errors.Is(err, lifecycle.ErrInvalidTransition) {
				t.Errorf("volume %s with %v: %v, want ErrInvalidTransition", tc.ev, tc.extra, err)
			}
		}
		if err := s.UpdateVolume(ctx, v.ID, map[string]any{"status": lifecycle.VolumeInUse}); !errors.Is(err, lifecycle.ErrInvalidTransition) {
			t.Errorf("UpdateVolume of the status: %v, want ErrInvalidTransition", err)
		}
		if after, _ := s.GetVolume(ctx, "", v.ID); !reflect.DeepEqual(after, before) {
			t.Errorf("a refused move wrote:\n%+v\nwas\n%+v", after, before)
		}
		if _, err := s.TransitionVolume(ctx, uuid.NewString(), lifecycle.Attach, nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("attach of a missing volume: %v, want ErrNotFound", err)
		}
	})
}

// TestEndBackupReturnsToPreviousStatus: end-backup goes back to in-use or
// available as begin-backup kept it, to available when what was kept is
// neither, and clears previous_status; an admin's reset goes from any status.
func TestEndBackupReturnsToPreviousStatus(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		for _, tc := range []struct{ previous, want string }{
			{lifecycle.VolumeInUse, lifecycle.VolumeInUse},
			{lifecycle.VolumeAvailable, lifecycle.VolumeAvailable},
			{lifecycle.VolumeError, lifecycle.VolumeAvailable},
			{"", lifecycle.VolumeAvailable},
		} {
			v := &volumedb.Volume{ID: uuid.NewString(), ProjectID: "p", SizeBytes: 1, Status: lifecycle.VolumeBackingUp, PreviousStatus: tc.previous}
			if err := s.CreateVolume(ctx, v); err != nil {
				t.Fatal(err)
			}
			got, err := s.TransitionVolume(ctx, v.ID, lifecycle.EndBackup, nil)
			row, _ := s.GetVolume(ctx, "", v.ID)
			if err != nil || got != tc.want || row.Status != tc.want || row.PreviousStatus != "" {
				t.Errorf("end-backup with previous %q: %q %v, row %q/%q; want %q", tc.previous, got, err, row.Status, row.PreviousStatus, tc.want)
			}
		}
		// begin-backup-in-use keeps the status it left.
		v := newVolume(t, s, "p", lifecycle.VolumeInUse)
		if _, err := s.TransitionVolume(ctx, v.ID, lifecycle.BeginBackupInUse, nil); err != nil {
			t.Fatal(err)
		}
		// The last attachment goes during the backup: it ends available.
		if err := s.DetachedDuringBackup(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
		if end, err := s.EndBackup(ctx, v.ID); err != nil || end.Status != lifecycle.VolumeAvailable {
			t.Fatalf("end after detach: %+v %v", end, err)
		}
		if end, err := s.EndBackup(ctx, v.ID); !errors.Is(err, store.ErrConflict) || end == nil || end.Status != lifecycle.VolumeAvailable {
			t.Fatalf("second end: %+v %v, want the volume and ErrConflict", end, err)
		}
		// Reset: from any status, also one the table does not know.
		odd := newVolume(t, s, "p", "weird")
		for _, to := range lifecycle.Volumes.Statuses {
			if got, err := s.TransitionVolume(ctx, odd.ID, lifecycle.ResetStatus(to), nil); err != nil || got != to {
				t.Fatalf("reset to %s: %q %v", to, got, err)
			}
		}
	})
}

// TestLiveRestoreColumns: live-restore-started moves a restoring-backup
// volume to available with its live columns in the same update; the live
// volumes are listed; EndLive clears them all at once.
func TestLiveRestoreColumns(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		v := newVolume(t, s, "p", lifecycle.VolumeRestoringBackup)
		plain := newVolume(t, s, "p", lifecycle.VolumeAvailable)
		live := map[string]any{"live_backup_id": "b1", "live_source": `{"x":1}`, "live_status": volumedb.LiveFilling, "live_size": int64(4 << 20)}
		if got, err := s.TransitionVolume(ctx, v.ID, lifecycle.LiveRestoreStarted, live); err != nil || got != lifecycle.VolumeAvailable {
			t.Fatalf("live-restore-started: %q %v", got, err)
		}
		if _, err := s.TransitionVolume(ctx, plain.ID, lifecycle.LiveRestoreStarted, live); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("live-restore-started of an available volume: %v, want ErrConflict", err)
		}
		rows, err := s.ListLiveVolumes(ctx)
		if err != nil || len(rows) != 1 || rows[0].ID != v.ID || rows[0].LiveBackupID != "b1" || rows[0].LiveSize != 4<<20 || rows[0].LiveStatus != volumedb.LiveFilling {
			t.Fatalf("live volumes: %+v %v", rows, err)
		}
		if err := s.EndLive(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
		row, _ := s.GetVolume(ctx, "", v.ID)
		if row.LiveBackupID != "" || row.LiveSource != "" || row.LiveStatus != "" || row.LiveSize != 0 || row.LiveFilled != 0 || row.Status != lifecycle.VolumeAvailable {
			t.Fatalf("after EndLive: %+v", row)
		}
		if rows, err := s.ListLiveVolumes(ctx); err != nil || len(rows) != 0 {
			t.Fatalf("live volumes after EndLive: %+v %v", rows, err)
		}
	})
}
