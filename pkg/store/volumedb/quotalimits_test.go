package volumedb_test

import (
	"context"
	"testing"

	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
)

// TestQuotaLimitsUpsert: limits set twice keep the last value, per
// project and resource, on every database.
func TestQuotaLimitsUpsert(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := open(t, url)
		ctx := context.Background()
		for _, l := range []map[string]int64{{"volumes": 5, "gigabytes": 100}, {"volumes": -1}} {
			if err := store.SetQuotaLimits(ctx, s.DB(), volumedb.QuotaLimitsTable, "p1", l); err != nil {
				t.Fatal(err)
			}
		}
		if err := store.SetQuotaLimits(ctx, s.DB(), volumedb.QuotaLimitsTable, "p2", map[string]int64{"volumes": 7}); err != nil {
			t.Fatal(err)
		}
		rows, err := store.QuotaLimits(ctx, s.DB(), volumedb.QuotaLimitsTable)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, r := range rows {
			got[r.ProjectID+"/"+r.Resource] = r.LimitValue
		}
		want := map[string]int64{"p1/volumes": -1, "p1/gigabytes": 100, "p2/volumes": 7}
		if len(got) != len(want) {
			t.Fatalf("limits %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("limits %v, want %v", got, want)
			}
		}
	})
}
