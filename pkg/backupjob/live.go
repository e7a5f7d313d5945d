package backupjob

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// livePoll is how often a live restore asks the volume manager how far its
// fill got.
const livePoll = 500 * time.Millisecond

// errVolumeGone ends a live restore whose volume was deleted.
var errVolumeGone = errors.New("the volume was deleted during its live restore")

// runLiveRestore serves the backup over NBD, hands the target volume to the
// volume manager, which makes it usable at once and fills it from that
// export in the background, and follows the fill to its end, recording its
// progress on the backup. Stopped (a shutdown, a lapsed lease), it leaves
// the backup restoring: the next start, or the node that takes the job
// over, resumes it by exporting the backup again and pointing the fill at
// the new export. The volume manager keeps serving what is filled, and
// keeps the fill's state, meanwhile.
func (r *Runner) runLiveRestore(ctx context.Context, backupID, volID string, ready chan<- error) {
	cleanupCtx := context.WithoutCancel(ctx)
	b, err := r.db.Get(ctx, "", backupID)
	if err != nil {
		r.log.Error("backup vanished before its live restore ran", "backup_id", backupID, "err", err)
		ready <- err
		return
	}
	log := r.log.With("backup_id", b.ID, "volume_id", volID, "request_id", requestid.From(ctx), "live", true)
	started := time.Now()
	defer func() { finished("restore", started, err) }()

	handedOver := false
	if r.exporter == nil {
		err = errors.New("this backup service cannot serve live restores")
	}
	var stop func()
	var conn Connection
	if err == nil {
		conn, stop, err = r.exporter.Export(ctx, b.Container, b.ID)
	}
	if err == nil {
		defer stop()
		// Resumed after a restart, the fill may have ended meanwhile (or
		// the volume gone): then there is nothing to start.
		var st LiveRestore
		err = r.persist(ctx, func(ctx context.Context) (err error) {
			st, err = r.vm.LiveRestore(ctx, b.ProjectID, volID)
			return err
		})
		switch {
		case errors.Is(err, ErrNotFound):
			err = errVolumeGone
		case err == nil && !st.Done:
			err = r.persist(ctx, func(ctx context.Context) error {
				return r.vm.StartLiveRestore(ctx, b.ProjectID, volID, b.ID, conn, b.SizeBytes)
			})
		}
		handedOver = err == nil
	}
	ready <- err
	if err == nil {
		log.Info("live restore: the volume is usable; following its fill", "export", conn.ExportName)
		err = r.followFill(ctx, b, volID)
	}
	if ctx.Err() != nil && !errors.Is(err, errVolumeGone) {
		log.Info("live restore stopped here; the next start (or the node that takes the job over) resumes it", "err", err)
		return
	}
	reason := ""
	if err != nil {
		reason = failReason("live restore of backup "+b.ID, err)
		log.Warn("live restore failed", "err", err)
	} else {
		log.Info("live restore finished: the volume is an ordinary one")
	}
	if err != nil && !handedOver && !errors.Is(err, errVolumeGone) {
		// The volume never became usable: it ends like a failed restore.
		if eerr := r.persist(cleanupCtx, func(ctx context.Context) error {
			return r.vm.EndRestore(ctx, b.ProjectID, volID, false, reason)
		}); eerr != nil && !errors.Is(eerr, ErrNotFound) {
			log.Error("end restore", "err", eerr)
		}
	}
	cols := map[string]any{"restore_volume_id": "", "restore_live": false, "fail_reason": reason}
	if err := r.settle(cleanupCtx, b.ID, lifecycle.EndRestore, cols); err != nil {
		log.Error("the live restore ended but the backup's status could not be recorded; the next start of the backup service ends it", "err", err)
	}
}

// followFill polls the volume manager until the fill of volID ends,
// recording its progress on b: nil when the volume is an ordinary one,
// an error when the fill failed or the volume is gone, ctx's error when
// stopped. A volume manager out of reach is waited for.
func (r *Runner) followFill(ctx context.Context, b *backupdb.Backup, volID string) error {
	progress := r.progressRecorder(b.ID, "restore")
	var unreachableSince time.Time
	for {
		st, err := r.vm.LiveRestore(ctx, b.ProjectID, volID)
		switch {
		case errors.Is(err, ErrNotFound):
			return errVolumeGone
		case err != nil:
			if unreachableSince.IsZero() {
				unreachableSince = time.Now()
				r.log.Warn("live restore: cannot ask the volume manager how far the fill got; waiting for it", "backup_id", b.ID, "err", err)
			}
		case st.Done:
			total := max(st.Total, b.SizeBytes)
			progress(engine.Progress{Done: total, Total: total, Read: total})
			return nil
		case st.Failed:
			return fmt.Errorf("the volume manager's fill stopped: %s", st.Reason)
		default:
			if !unreachableSince.IsZero() {
				r.log.Info("live restore: the volume manager answers again", "backup_id", b.ID, "after", time.Since(unreachableSince).Round(time.Second))
				unreachableSince = time.Time{}
			}
			progress(engine.Progress{Done: st.Filled, Total: st.Total, Read: st.Filled})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(livePoll):
		}
	}
}
