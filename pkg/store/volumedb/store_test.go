package volumedb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/google/uuid"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func open(t *testing.T, url string) *volumedb.Store {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(db) })
	s, err := volumedb.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchemaHasBlueprintColumns(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := open(t, url)
		m := s.DB().Migrator()
		for _, c := range []struct{ table, column string }{
			{"volumes", "previous_status"}, {"volumes", "project_id"},
			{"snapshots", "provider_id"}, {"snapshots", "provider_location"}, {"snapshots", "provider_auth"},
			{"attachments", "volume_id"}, {"exports", "name"},
		} {
			if !m.HasColumn(c.table, c.column) {
				t.Errorf("table %s has no column %s", c.table, c.column)
			}
		}
		// Migrating again is a no-op.
		if v, err := store.Migrate(context.Background(), s.DB(), volumedb.Owner, volumedb.Migrations); err != nil || v != len(volumedb.Migrations) {
			t.Fatalf("re-migrate: version %d, %v", v, err)
		}
	})
}

func newVolume(t *testing.T, s *volumedb.Store, project, status string) *volumedb.Volume {
	t.Helper()
	v := &volumedb.Volume{ID: uuid.NewString(), ProjectID: project, SizeBytes: 1 << 20, Status: status}
	if err := s.CreateVolume(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBeginBackupIsOneConditionalUpdate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		v := newVolume(t, s, "p1", lifecycle.VolumeInUse)

		// Without force an in-use volume does not start.
		if cur, err := s.BeginBackup(ctx, v.ID, false); !errors.Is(err, store.ErrConflict) || cur != lifecycle.VolumeInUse {
			t.Fatalf("begin without force: %q, %v", cur, err)
		}
		// Ten racing requests: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.BeginBackup(ctx, v.ID, true); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, store.ErrConflict) {
					t.Errorf("begin: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d concurrent begins won, want 1", wins)
		}
		got, _ := s.GetVolume(ctx, "p1", v.ID)
		if got.Status != lifecycle.VolumeBackingUp || got.PreviousStatus != lifecycle.VolumeInUse {
			t.Fatalf("after begin: status %q previous %q", got.Status, got.PreviousStatus)
		}
		end, err := s.EndBackup(ctx, v.ID)
		if err != nil || end.Status != lifecycle.VolumeInUse || end.PreviousStatus != "" {
			t.Fatalf("after end: %+v, %v", end, err)
		}
		if _, err := s.GetVolume(ctx, "other-project", v.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("other project sees the volume: %v", err)
		}
	})
}

func TestListNewestFirstWithMarker(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		var ids []string
		for i := range 5 {
			v := &volumedb.Volume{ID: uuid.NewString(), ProjectID: "p", Name: fmt.Sprint("v", i), SizeBytes: 1, Status: "available",
				CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
			if err := s.CreateVolume(ctx, v); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, v.ID)
		}
		newVolume(t, s, "q", "available")
		page1, err := s.ListVolumes(ctx, volumedb.VolumeFilter{Project: "p", Page: store.Page{Limit: 2}})
		if err != nil || len(page1) != 2 || page1[0].ID != ids[4] || page1[1].ID != ids[3] {
			t.Fatalf("page 1: %v %v", page1, err)
		}
		page2, err := s.ListVolumes(ctx, volumedb.VolumeFilter{Project: "p", Page: store.Page{Limit: 10, Marker: page1[1].ID}})
		if err != nil || len(page2) != 3 || page2[0].ID != ids[2] || page2[2].ID != ids[0] {
			t.Fatalf("page 2: %v %v", page2, err)
		}
		if _, err := s.ListVolumes(ctx, volumedb.VolumeFilter{Project: "p", Page: store.Page{Marker: uuid.NewString()}}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown marker: %v", err)
		}
	})
}
