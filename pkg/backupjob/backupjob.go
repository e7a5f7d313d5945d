// Package backupjob runs the backup service's jobs in the background:
// backups (choose the source, take and attach a temporary snapshot or
// volume, stream it into the repository, give everything back), restores
// and deletes; it finishes what a crash interrupted (Recover), and shares
// the jobs of several backup-service nodes through leases in the database
// (RunLeases). It knows the volume manager only through the VolumeManager
// interface, in plain Go types, and the repository only through the
// backup engine, so it is tested without gRPC.
package backupjob

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// Strategies: how the source of a backup is read.
const (
	// StrategyVolume reads an available volume itself, attached read-only.
	StrategyVolume = "volume"
	// StrategySnapshot reads a user's snapshot (a snapshot backup).
	StrategySnapshot = "snapshot"
	// StrategyLocalSnapshot reads a temporary snapshot through its local
	// path (the blueprint's step 1: same node).
	StrategyLocalSnapshot = "local-snapshot"
	// StrategyAttachedSnapshot reads a temporary snapshot attached over NBD
	// (steps 2 and 3).
	StrategyAttachedSnapshot = "attached-snapshot"
	// StrategyTemporaryVolume reads a temporary clone of the volume (the
	// fallback for backends that cannot attach snapshots).
	StrategyTemporaryVolume = "temporary-volume"
)

// ValidateStrategy checks a Config.Strategy value.
func ValidateStrategy(s string) error {
	switch s {
	case "", StrategyLocalSnapshot, StrategyAttachedSnapshot, StrategyTemporaryVolume:
		return nil
	}
	return fmt.Errorf("strategy %q: want empty (auto), %s, %s or %s", s, StrategyLocalSnapshot, StrategyAttachedSnapshot, StrategyTemporaryVolume)
}

// MsgResetOnRestart is the fail_reason of a backup a restart found unfinished.
const MsgResetOnRestart = "incomplete backup reset on restart"

// Engine is what the jobs need of the backup engine (*engine.Engine).
type Engine interface {
	Backup(ctx context.Context, container string, src blockdev.Device, spec engine.BackupSpec) (*engine.Manifest, error)
	Restore(ctx context.Context, container, backupID string, dst blockdev.Device, progress func(engine.Progress)) error
	// Delete removes a backup's manifest and the chunks no other backup
	// uses; engine.ErrNoBackup when there is none.
	Delete(ctx context.Context, container, backupID string) error
}

// Imported restores the backups another system wrote and blockvault
// imported (backupdb.Backup.Origin not empty), such as Cinder's.
type Imported interface {
	Restore(ctx context.Context, b *backupdb.Backup, dst blockdev.Device, progress func(engine.Progress)) error
}

// Config is how the jobs run, and where.
type Config struct {
	// NodeID names this node: the same as the volume manager's makes a
	// local-path read possible (the blueprint's step 1).
	NodeID string
	// LocalReads allows reading through local paths when on the volume
	// manager's node.
	LocalReads bool
	// Strategy forces how in-use volumes are read: "" (choose from the
	// backend's capabilities), local-snapshot, attached-snapshot or
	// temporary-volume.
	Strategy string
	// MaxConcurrent caps the backups, restores and deletes running at
	// once; more wait (default 4). Live restores do not count: their data
	// moves at the volume manager's pace and their users are waiting.
	MaxConcurrent int
	// CleanupTimeout bounds the retries of cleanup steps while the volume
	// manager or the database is unreachable (default 2 minutes).
	CleanupTimeout time.Duration
	// LeaseDuration is how long a node's claim on its running jobs lasts
	// without a heartbeat; after that another node takes them over
	// (default 30 s).
	LeaseDuration time.Duration
	// ChangedBlockTracking keeps the snapshot each backup of an in-use
	// volume was read from, so that the next incremental backup of the
	// volume reads only the ranges the volume manager reports changed
	// since (drivers with the changed-ranges capability).
	ChangedBlockTracking bool
	// NBDTLS is the client TLS configuration for NBD exports that require
	// TLS; nil: such exports cannot be read.
	NBDTLS *tls.Config
}

func (c Config) leaseDuration() time.Duration {
	if c.LeaseDuration <= 0 {
		return 30 * time.Second
	}
	return c.LeaseDuration
}

func (c Config) cleanupTimeout() time.Duration {
	if c.CleanupTimeout <= 0 {
		return 2 * time.Minute
	}
	return c.CleanupTimeout
}

// Runner runs jobs, at most Config.MaxConcurrent at once.
type Runner struct {
	cfg      Config
	db       *backupdb.Store
	vm       VolumeManager
	engine   Engine
	imported Imported
	exporter Exporter
	log      *slog.Logger

	baseCtx context.Context
	stop    context.CancelFunc
	slots   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	jobs    map[string]context.CancelFunc
}

// New returns a Runner. Call Recover before taking new work, and Close to
// stop the running jobs.
func New(cfg Config, db *backupdb.Store, vm VolumeManager, eng Engine, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 4
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, db: db, vm: vm, engine: eng, log: log, baseCtx: ctx, stop: stop,
		slots: make(chan struct{}, cfg.MaxConcurrent), jobs: map[string]context.CancelFunc{}}
}

// RestoreImportedWith makes imported restore the backups that have an
// Origin; without it their restores fail, saying so. Call it before any job
// starts.
func (r *Runner) RestoreImportedWith(imported Imported) { r.imported = imported }

// ServeLiveRestoresWith makes live restores export their backups with e;
// without it they fail, saying so. Call it before any job starts.
func (r *Runner) ServeLiveRestoresWith(e Exporter) { r.exporter = e }

// Close cancels the running jobs and waits for their cleanup.
func (r *Runner) Close() {
	r.stop()
	r.wg.Wait()
}

// Lease is the end of a claim on a job made now.
func (r *Runner) Lease() time.Time { return time.Now().UTC().Add(r.cfg.leaseDuration()) }

// Backup starts backup id, whose volume was previousStatus before it went
// backing-up, in the background. The job's calls and logs carry the
// request id of reqCtx.
func (r *Runner) Backup(reqCtx context.Context, id, previousStatus string) {
	r.start(reqCtx, id, true, func(ctx context.Context) { r.runBackup(ctx, id, previousStatus) })
}

// Restore starts the restore of backup backupID into volume volumeID (both
// already restoring) in the background.
func (r *Runner) Restore(reqCtx context.Context, backupID, volumeID string) {
	r.start(reqCtx, backupID, true, func(ctx context.Context) { r.runRestore(ctx, backupID, volumeID) })
}

// LiveRestore starts the live restore of backup backupID into the new
// volume volumeID (both already restoring) in the background: the volume
// is usable once the volume manager took it over, and the job follows its
// fill to the end.
// The channel returned gets nil once the volume is usable, or the error
// that ended the restore before.
func (r *Runner) LiveRestore(reqCtx context.Context, backupID, volumeID string) <-chan error {
	ready := make(chan error, 1)
	// Not queued behind MaxConcurrent: the volume is in use and its user
	// waits; the data moves at the volume manager's pace, and the job
	// itself only follows the fill.
	r.start(reqCtx, backupID, false, func(ctx context.Context) { r.runLiveRestore(ctx, backupID, volumeID, ready) })
	return ready
}

// Delete starts the delete of backup b (already deleting) in the background.
func (r *Runner) Delete(reqCtx context.Context, b *backupdb.Backup) {
	r.start(reqCtx, b.ID, true, func(ctx context.Context) { r.runDelete(ctx, b) })
}

// start runs job in the background, a queued one at most MaxConcurrent at
// once; the job can be cancelled through Cancel(id).
func (r *Runner) start(reqCtx context.Context, id string, queued bool, job func(ctx context.Context)) {
	rid := requestid.From(reqCtx)
	if rid == "" {
		rid = requestid.New()
	}
	ctx, cancel := context.WithCancel(requestid.With(r.baseCtx, rid))
	r.mu.Lock()
	r.jobs[id] = cancel
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.jobs, id)
			r.mu.Unlock()
			cancel()
		}()
		if !queued {
			metrics.Running.Inc()
			defer metrics.Running.Dec()
			job(ctx)
			return
		}
		metrics.Queued.Inc()
		select {
		case r.slots <- struct{}{}:
			metrics.Queued.Dec()
			defer func() { <-r.slots }()
		case <-ctx.Done():
			metrics.Queued.Dec()
			job(ctx) // the job sees the cancellation and cleans up
			return
		}
		metrics.Running.Inc()
		defer metrics.Running.Dec()
		job(ctx)
	}()
}

// Cancel stops the job of backup id, if one runs here, and reports whether
// one did.
func (r *Runner) Cancel(id string) bool {
	r.mu.Lock()
	c, ok := r.jobs[id]
	r.mu.Unlock()
	if ok {
		c()
	}
	return ok
}

// CancelAndWait cancels the job of backup id and waits up to d for it to
// release its resources.
func (r *Runner) CancelAndWait(id string, d time.Duration) {
	if !r.Cancel(id) {
		return
	}
	deadline := time.Now().Add(d)
	for r.running(id) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Runner) running(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.jobs[id]
	return ok
}

// cancelAll cancels every job running here and returns how many.
func (r *Runner) cancelAll() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cancel := range r.jobs {
		cancel()
	}
	return len(r.jobs)
}

func failReason(op string, err error) string {
	msg := fmt.Sprintf("%s failed: %v", op, err)
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	return msg
}

// finished records a finished job in the metrics.
func finished(op string, started time.Time, err error) {
	result := "ok"
	switch {
	case errors.Is(err, context.Canceled):
		result = "cancelled"
	case err != nil:
		result = "error"
	}
	metrics.Jobs.WithLabelValues(op, result).Inc()
	metrics.JobSeconds.WithLabelValues(op).Observe(time.Since(started).Seconds())
	metrics.Throughput.WithLabelValues(op).Set(0)
}
