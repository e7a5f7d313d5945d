package backupjob

import (
	"context"
	"errors"
	"time"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
)

// settle applies event ev to backup id, retrying while the database is
// unreachable (for up to Config.CleanupTimeout). A conflict (the backup
// left from meanwhile: force-deleted) returns at once.
func (r *Runner) settle(ctx context.Context, id string, ev lifecycle.Event, extra map[string]any) error {
	return r.retry("the database is unreachable; retrying the backup's final status", func() error {
		_, err := r.db.Transition(ctx, id, ev, extra)
		return err
	}, "backup_id", id)
}

// persist runs a cleanup step, retrying while the volume manager (or the
// database) is unreachable (for up to Config.CleanupTimeout), so a volume
// manager that restarts during a backup still gets its temporary resources
// removed and its volume's status restored.
func (r *Runner) persist(ctx context.Context, step func(ctx context.Context) error) error {
	return r.retry("the volume manager is unreachable; retrying the cleanup", func() error { return step(ctx) })
}

// retry calls op until it succeeds, fails for good, or CleanupTimeout
// passes, backing off from 200 ms to 5 s.
func (r *Runner) retry(msg string, op func() error, logArgs ...any) error {
	deadline := time.Now().Add(r.cfg.cleanupTimeout())
	delay := 200 * time.Millisecond
	for {
		err := op()
		if err == nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		r.log.Warn(msg, append(logArgs, "err", err, "in", delay)...)
		time.Sleep(delay)
		delay = min(delay*2, 5*time.Second)
	}
}

// transient reports whether err is worth retrying: the volume manager or
// the database is down or slow. Of errors joined together, one is enough.
func transient(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, store.ErrUnavailable)
}
