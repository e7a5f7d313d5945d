//go:build rbd && cgo

package rbd_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestStressBackupCycle repeats what the volume manager does for a volume
// backed up with changed-block tracking, the way the e2e test does, many
// times: a writer on the volume, snapshots kept and replaced, snapshots
// opened and read, changed ranges, then the device closed and the volume
// deleted right after, with space queries meanwhile.
func TestStressBackupCycle(t *testing.T) {
	if os.Getenv("BLOCKVAULT_RBD_STRESS") == "" {
		t.Skip("BLOCKVAULT_RBD_STRESS=1 runs it")
	}
	c := testenv.StartCeph(t)
	d := newDriver(t, c, "")
	ctx := context.Background()
	for round := 0; round < 40; round++ {
		id := fmt.Sprintf("v%d", round)
		if err := d.CreateVolume(ctx, id, 64*mib); err != nil {
			t.Fatal(err)
		}
		dev, err := d.OpenVolume(ctx, id, false)
		if err != nil {
			t.Fatal(err)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1*mib)
			for i := 0; !stop.Load(); i++ {
				dev.WriteAt(buf, int64(i%64)*mib)
				if i%16 == 0 {
					dev.Flush()
				}
			}
		}()
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d.Space(ctx)
				dev.Extents(0, 64*mib)
			}
		}()
		prev := ""
		for s := 0; s < 3; s++ {
			sid := fmt.Sprintf("s%d-%d", round, s)
			if err := d.CreateSnapshot(ctx, id, sid); err != nil {
				t.Fatal(err)
			}
			sd, err := d.OpenSnapshot(ctx, id, sid)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4*mib)
			for off := int64(0); off < 64*mib; off += 4 * mib {
				if _, err := sd.ReadAt(buf, off); err != nil {
					t.Fatal(err)
				}
			}
			sd.Close()
			if prev != "" {
				if _, err := d.ChangedRanges(ctx, id, prev, sid); err != nil {
					t.Fatal(err)
				}
				if err := d.DeleteSnapshot(ctx, id, prev); err != nil {
					t.Fatal(err)
				}
			}
			prev = sid
		}
		stop.Store(true)
		wg.Wait()
		dev.Close()
		if err := d.DeleteSnapshot(ctx, id, prev); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteVolume(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}
