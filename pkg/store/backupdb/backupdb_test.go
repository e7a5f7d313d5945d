package backupdb_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/google/uuid"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func TestBackupsTable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db, err := store.Open(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close(db)
		s, err := backupdb.New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
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
		if _, err := s.Transition(ctx, b.ID, nil, lifecycle.BackupDeleting, nil); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("creating -> deleting: %v", err)
		}
		if _, err := s.Transition(ctx, b.ID, nil, lifecycle.BackupError, map[string]any{"fail_reason": "boom"}); err != nil {
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
