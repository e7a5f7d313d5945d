package backupdb_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/google/uuid"
	"gorm.io/gorm"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func TestBackupsTable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db, s := openStore(t, url)
		for _, col := range []string{"temp_volume_id", "temp_snapshot_id", "parent_id", "fail_reason", "bytes_done", "project_id"} {
			if !db.Migrator().HasColumn("backups", col) {
				t.Errorf("backups has no column %s", col)
			}
		}
		b := &backupdb.Backup{ID: uuid.NewString(), ProjectID: "p", VolumeID: uuid.NewString(), Status: lifecycle.BackupCreating}
		if err := s.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		// A creating backup cannot be deleted; it can fail, then be deleted.
		if _, err := s.Transition(ctx, b.ID, lifecycle.Delete, nil); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("creating -> deleting: %v", err)
		}
		if _, err := s.Transition(ctx, b.ID, lifecycle.CreateFailed, map[string]any{"fail_reason": "boom"}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "p", b.ID)
		if err != nil || got.Status != lifecycle.BackupError || got.FailReason != "boom" {
			t.Fatalf("%+v %v", got, err)
		}
		if _, err := s.Get(ctx, "q", b.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("other project: %v", err)
		}
	})
}

// TestEventFromWrongStatusWritesNothing runs every event of the backup table
// from every status it does not start from: ErrConflict, and the row as it
// was. The admin's events start from any status; a reset to a status the
// table does not allow is refused.
func TestEventFromWrongStatusWritesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		_, s := openStore(t, url)
		create := func(status string) *backupdb.Backup {
			b := &backupdb.Backup{ID: uuid.NewString(), ProjectID: "p", VolumeID: uuid.NewString(), Status: status}
			if err := s.Create(ctx, b); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, "", b.ID)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		for _, r := range lifecycle.Backups.Rules {
			for _, from := range lifecycle.Backups.Statuses {
				b := create(from)
				cur, err := s.Transition(ctx, b.ID, r.Event, map[string]any{"fail_reason": "written"})
				after, _ := s.Get(ctx, "", b.ID)
				if r.Allows(from) {
					if err != nil || cur != r.To || after.Status != r.To || after.FailReason != "written" {
						t.Errorf("%s from %s: %q %v, row %q", r.Event, from, cur, err, after.Status)
					}
					continue
				}
				if !errors.Is(err, store.ErrConflict) || cur != from {
					t.Errorf("%s from %s: %q, %v; want %q and ErrConflict", r.Event, from, cur, err, from)
				}
				if !reflect.DeepEqual(after, b) {
					t.Errorf("%s from %s wrote:\n%+v\nwas\n%+v", r.Event, from, after, b)
				}
			}
		}
		b := create(lifecycle.BackupError)
		for _, ev := range []lifecycle.Event{lifecycle.ResetStatus(lifecycle.BackupDeleting), lifecycle.Attach} {
			if _, err := s.Transition(ctx, b.ID, ev, nil); !errors.Is(err, lifecycle.ErrInvalidTransition) {
				t.Errorf("%s: %v, want ErrInvalidTransition", ev, err)
			}
		}
		if err := s.Update(ctx, b.ID, map[string]any{"status": lifecycle.BackupAvailable}); !errors.Is(err, lifecycle.ErrInvalidTransition) {
			t.Errorf("Update of the status: %v, want ErrInvalidTransition", err)
		}
		if after, _ := s.Get(ctx, "", b.ID); !reflect.DeepEqual(after, b) {
			t.Errorf("a refused move wrote:\n%+v\nwas\n%+v", after, b)
		}
	})
}

// openStore opens the backups' store on a fresh database (closed at the
// test's end) and returns the database too.
func openStore(t *testing.T, url string) (*gorm.DB, *backupdb.Store) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(db) })
	s, err := backupdb.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return db, s
}

// TestLatestAvailablePassesOverImports: a backup imported from Cinder, even
// the newest of a volume, is never the parent of a blockvault incremental
// (its data is in Cinder's format); the newest blockvault backup is.
func TestLatestAvailablePassesOverImports(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db, s := openStore(t, url)
		for _, col := range []string{"origin", "source_url", "source_prefix"} {
			if !db.Migrator().HasColumn("backups", col) {
				t.Fatalf("no column %s", col)
			}
		}
		vol := uuid.NewString()
		if _, err := s.LatestAvailable(ctx, "p", vol); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("no backups yet: %v", err)
		}
		own := &backupdb.Backup{ID: uuid.NewString(), ProjectID: "p", VolumeID: vol, Status: lifecycle.BackupAvailable}
		if err := s.Create(ctx, own); err != nil {
			t.Fatal(err)
		}
		imported := &backupdb.Backup{ID: uuid.NewString(), ProjectID: "p", VolumeID: vol, Status: lifecycle.BackupAvailable,
			Origin: "cinder-posix", SourceURL: "/srv/cinder", SourcePrefix: "volume_x_backup_y", CreatedAt: own.CreatedAt.Add(time.Hour)}
		if err := s.Create(ctx, imported); err != nil {
			t.Fatal(err)
		}
		got, err := s.LatestAvailable(ctx, "p", vol)
		if err != nil || got.ID != own.ID {
			t.Fatalf("latest available: %v %v, want %s (not the import %s)", got, err, own.ID, imported.ID)
		}
		back, err := s.Get(ctx, "", imported.ID)
		if err != nil || back.Origin != "cinder-posix" || back.SourceURL != "/srv/cinder" || back.SourcePrefix != "volume_x_backup_y" {
			t.Fatalf("the import reads back as %+v, %v", back, err)
		}
	})
}
