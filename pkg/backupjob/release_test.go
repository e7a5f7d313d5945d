package backupjob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/store"
)

// TestReleaseRetriesWhatAFailureForNowCaused: the detach of a temporary
// snapshot fails for now (the volume manager cannot reach its database), so
// its delete fails for good ("is attached"); once the database is back, the
// next pass detaches and deletes it: nothing is left behind.
func TestReleaseRetriesWhatAFailureForNowCaused(t *testing.T) {
	s := &Runner{cfg: Config{CleanupTimeout: 10 * time.Second}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	attached, deleted := true, false
	detachCalls := 0
	src := &source{}
	src.defer_(func(context.Context) error { // registered first, undone last
		if attached {
			return errors.New("delete temporary snapshot s: snapshot s is attached")
		}
		deleted = true
		return nil
	})
	src.defer_(func(context.Context) error {
		detachCalls++
		if detachCalls == 1 {
			return fmt.Errorf("detach snapshot s: %w", ErrUnavailable)
		}
		attached = false
		return nil
	})
	if err := s.persist(context.Background(), src.release); err != nil {
		t.Fatalf("release: %v", err)
	}
	if attached || !deleted || len(src.undo) != 0 {
		t.Fatalf("after release: attached %v, deleted %v, %d steps left", attached, deleted, len(src.undo))
	}

	// A step that fails for good on its own is reported, not retried.
	src = &source{}
	calls := 0
	no := errors.New("no")
	src.defer_(func(context.Context) error {
		calls++
		return no
	})
	if err := s.persist(context.Background(), src.release); !errors.Is(err, no) || calls != 1 {
		t.Fatalf("a failure for good: %v after %d calls, want it after 1", err, calls)
	}
}

// TestTransientJoined: of joined errors, one transient is enough, in
// whatever order, also wrapped.
func TestTransientJoined(t *testing.T) {
	down := fmt.Errorf("detach: %w", ErrUnavailable)
	no := fmt.Errorf("delete: %w", ErrNotFound)
	for _, c := range []struct {
		err  error
		want bool
	}{
		{down, true},
		{no, false},
		{fmt.Errorf("x: %w", down), true},
		{errors.Join(no, down), true},
		{errors.Join(down, no), true},
		{fmt.Errorf("x: %w", errors.Join(no, down)), true},
		{errors.Join(no, no), false},
		{fmt.Errorf("update: %w", store.ErrUnavailable), true},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
