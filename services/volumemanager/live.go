package volumemanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/livefill"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/validate"
	"google.golang.org/protobuf/encoding/protojson"
)

// Defaults of the live restore settings of Config.
const (
	defaultLiveRetryFor      = 10 * time.Minute
	defaultLiveProgressEvery = 5 * time.Second
)

// liveFill is one volume's live restore in this process: the fill device
// over the driver's volume (the target) and the backup's export (the
// source), and the fill running in the background. Every export of the
// volume is served through it (one liveExport each) until the fill ends;
// it is closed when the fill has ended (or the volume is deleted, or the
// process stops) and no export uses it any more.
type liveFill struct {
	volumeID, backupID string
	statePath          string
	target             blockdev.Device
	source             *liveSource
	dev                *livefill.Device
	filled             atomic.Int64 // bytes filled, for the volume's view

	cancel context.CancelFunc
	done   chan struct{} // closed when the fill goroutine returns (or never ran)

	log       *slog.Logger
	closeOnce sync.Once

	// Guarded by Server.liveMu.
	refs  int  // exports served through it
	ended bool // the fill ended (or was stopped): no new export uses it
}

func (l *liveFill) close() {
	l.closeOnce.Do(func() {
		// The state is durable up to each acknowledged write whatever
		// Close says: an error here loses fill progress at most.
		if err := errors.Join(l.dev.Close(), l.source.Close(), l.target.Close()); err != nil {
			l.log.Warn("live restore: close", "volume_id", l.volumeID, "err", err)
		}
	})
}

// statePath is where the live restore of volume id keeps its state.
func (s *Server) statePath(id string) string { return filepath.Join(s.cfg.LiveDir, id+".state") }

// liveRefusal refuses what cannot be done to a volume a live restore fills
// (or failed to fill): what would read or copy the volume's data below the
// fill (snapshots, backups, clones, the backup service's attachments), or
// change its size. nil for an ordinary volume.
func liveRefusal(v *volumedb.Volume, what string) error {
	switch v.LiveStatus {
	case "":
		return nil
	case volumedb.LiveFailed:
		return rpcerr.Precondition("volume %s: its live restore from backup %s failed (%s); %s is refused: delete the volume and restore the backup again",
			v.ID, v.LiveBackupID, v.FailReason, what)
	}
	return rpcerr.Precondition("volume %s is being restored live from backup %s; %s is refused until the restore ends (the volume's live_restore shows its progress)",
		v.ID, v.LiveBackupID, what)
}

// StartLiveRestore implements VolumeManagerInternalService (see the proto).
func (s *Server) StartLiveRestore(ctx context.Context, req *volumev1.StartLiveRestoreRequest) (*volumev1.StartLiveRestoreResponse, error) {
	if err := s.checkVolumeRef(req.GetProjectId(), req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := validate.UUID("backup_id", req.GetBackupId()); err != nil {
		return nil, err
	}
	src, size := req.GetSource(), req.GetSizeBytes()
	if src.GetDriverVolumeType() != "nbd" || src.GetData().GetHost() == "" || src.GetData().GetPort() <= 0 || src.GetData().GetExportName() == "" {
		return nil, rpcerr.Invalid("source must be an NBD export of the backup (driver_volume_type nbd, with host, port and export_name)")
	}
	if size <= 0 {
		return nil, rpcerr.Invalid("size_bytes must be the backup's size in bytes")
	}
	if s.cfg.LiveDir == "" {
		return nil, rpcerr.Precondition("this volume manager has no directory for live restores (Config.LiveDir)")
	}
	// One start at a time: a start owns the volume's state file until its
	// status change is written.
	s.liveStartMu.Lock()
	defer s.liveStartMu.Unlock()
	v, err := s.db.GetVolume(ctx, req.GetProjectId(), req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	switch {
	case v.LiveStatus != "" && v.LiveBackupID == req.GetBackupId():
		if err := s.swapLiveSource(ctx, v, src, size); err != nil {
			return nil, err
		}
	case v.LiveStatus != "":
		return nil, rpcerr.Precondition("volume %s is being restored live from backup %s, not %s", v.ID, v.LiveBackupID, req.GetBackupId())
	case v.Status != lifecycle.VolumeRestoringBackup:
		return nil, rpcerr.Precondition("volume %s is %s; a live restore starts from a restoring-backup volume (BeginRestore)", v.ID, v.Status)
	case size > v.SizeBytes:
		return nil, rpcerr.Invalid("volume %s has %d bytes, smaller than the backup's %d", v.ID, v.SizeBytes, size)
	default:
		if err := s.startLive(ctx, v, req.GetBackupId(), src, size); err != nil {
			return nil, err
		}
	}
	out, err := s.volumeView(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return &volumev1.StartLiveRestoreResponse{Volume: out}, nil
}

func sourceUnavailable(err error) error {
	return rpcerr.Unavailable("live restore: %v", err)
}

// startLive begins the live restore of restoring-backup volume v: the fill
// device is opened (its state file made) and registered, so every export
// goes through it, before the volume becomes available.
func (s *Server) startLive(ctx context.Context, v *volumedb.Volume, backupID string, src *volumev1.ConnectionInfo, size int64) error {
	conn, err := dialSource(ctx, src, size, s.cfg.SourceTLS)
	if err != nil {
		return sourceUnavailable(err)
	}
	source := newLiveSource(size, s.cfg.SourceTLS, s.log)
	source.use(conn)
	if err := os.MkdirAll(s.cfg.LiveDir, 0o700); err != nil {
		source.Close()
		return fmt.Errorf("live restore: %w", err)
	}
	// A state file left here is of a start that did not reach its status
	// change: the volume was never served through it, so nothing written
	// depends on it.
	path := s.statePath(v.ID)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		source.Close()
		return fmt.Errorf("live restore: %w", err)
	}
	l, err := s.openLive(ctx, v.ID, backupID, source, true)
	if err != nil {
		return err
	}
	ci, err := protojson.Marshal(src)
	if err != nil {
		l.close()
		return err
	}
	s.liveMu.Lock()
	s.lives[v.ID] = l
	s.liveMu.Unlock()
	_, err = s.db.TransitionVolume(ctx, v.ID, lifecycle.LiveRestoreStarted, map[string]any{
		"live_backup_id": backupID, "live_source": string(ci), "live_status": volumedb.LiveFilling,
		"live_size": size, "live_filled": int64(0), "fail_reason": ""})
	if err != nil {
		s.liveMu.Lock()
		delete(s.lives, v.ID)
		s.liveMu.Unlock()
		l.close()
		os.Remove(path)
		if errors.Is(err, store.ErrConflict) {
			return rpcerr.Precondition("volume %s is no longer restoring-backup; the live restore did not start", v.ID)
		}
		return err
	}
	s.runFill(l)
	s.log.InfoContext(ctx, "live restore started", "volume_id", v.ID, "backup_id", backupID, "size_bytes", size)
	return nil
}

// swapLiveSource points the fill of live volume v at a new export of its
// backup (the backup service restarted); nothing else changes. A failed
// live restore stays failed.
func (s *Server) swapLiveSource(ctx context.Context, v *volumedb.Volume, src *volumev1.ConnectionInfo, size int64) error {
	if v.LiveStatus == volumedb.LiveFailed {
		return nil
	}
	if size != v.LiveSize {
		return rpcerr.Invalid("backup %s has %d bytes, not %d", v.LiveBackupID, v.LiveSize, size)
	}
	s.liveMu.Lock()
	l := s.lives[v.ID]
	s.liveMu.Unlock()
	if l == nil {
		return rpcerr.Precondition("volume %s: its live restore from backup %s could not be resumed here (see the volume manager's log)", v.ID, v.LiveBackupID)
	}
	conn, err := dialSource(ctx, src, size, s.cfg.SourceTLS)
	if err != nil {
		return sourceUnavailable(err)
	}
	ci, err := protojson.Marshal(src)
	if err != nil {
		conn.Close()
		return err
	}
	if err := s.db.UpdateVolume(ctx, v.ID, map[string]any{"live_source": string(ci)}); err != nil {
		conn.Close()
		return err
	}
	l.source.use(conn)
	s.log.InfoContext(ctx, "live restore: new source", "volume_id", v.ID, "backup_id", v.LiveBackupID,
		"host", src.GetData().GetHost(), "port", src.GetData().GetPort())
	return nil
}

// openLive opens the fill device of volume id over the driver's volume:
// a fresh fill (fresh), or the one its state file records.
func (s *Server) openLive(ctx context.Context, id, backupID string, source *liveSource, fresh bool) (*liveFill, error) {
	path := s.statePath(id)
	opts := livefill.Options{SourceID: backupID, RegionSize: s.cfg.LiveRegionSize, RetryFor: s.cfg.LiveRetryFor, Rate: s.cfg.LiveFillRate}
	if opts.RetryFor == 0 {
		opts.RetryFor = defaultLiveRetryFor
	}
	if !fresh {
		// A resumed fill must find its state: without it a new fill would
		// overwrite what was written to the volume.
		st, err := livefill.ReadState(path)
		if err != nil {
			source.Close()
			return nil, fmt.Errorf("live restore of volume %s cannot resume: %w", id, err)
		}
		opts.RegionSize = st.RegionSize
	}
	target, err := s.driver.OpenVolume(ctx, id, false)
	if err != nil {
		source.Close()
		return nil, fmt.Errorf("live restore: open volume %s: %w", id, err)
	}
	// The fill skips the backup's holes only on a target that reads zeros
	// (the new volume a restore makes); any other gets them written.
	opts.TargetZeroed = fresh && readsZeros(target)
	dev, err := livefill.Open(target, source, path, opts)
	if err != nil {
		target.Close()
		source.Close()
		return nil, fmt.Errorf("live restore of volume %s: %w", id, err)
	}
	l := &liveFill{volumeID: id, backupID: backupID, statePath: path, target: target, source: source, dev: dev, log: s.log,
		cancel: func() {}, done: make(chan struct{})}
	done, _ := dev.Progress()
	l.filled.Store(done)
	return l, nil
}

// readsZeros says whether dev is all holes or zeros.
func readsZeros(dev blockdev.Device) bool {
	xs, err := dev.Extents(0, dev.Size())
	if err != nil {
		return false
	}
	for _, x := range xs {
		if !x.Hole && !x.Zero {
			return false
		}
	}
	return true
}

// runFill runs l's fill in the background: its progress is kept in memory
// and written to the volume's row every LiveProgressEvery; when it ends the
// volume is ordinary again; when it fails for good it is marked failed.
func (s *Server) runFill(l *liveFill) {
	ctx, cancel := context.WithCancel(s.liveCtx)
	l.cancel = cancel
	every := s.cfg.LiveProgressEvery
	if every == 0 {
		every = defaultLiveProgressEvery
	}
	s.liveWG.Add(1)
	go func() {
		defer s.liveWG.Done()
		defer close(l.done)
		defer cancel()
		last := time.Now()
		err := l.dev.Fill(ctx, func(done, total int64) {
			l.filled.Store(done)
			if time.Since(last) >= every {
				last = time.Now()
				if err := s.db.UpdateVolume(ctx, l.volumeID, map[string]any{"live_filled": done}); err != nil && ctx.Err() == nil {
					s.log.Warn("live restore: record progress", "volume_id", l.volumeID, "err", err)
				}
			}
		})
		switch {
		case err == nil:
			s.endLive(l)
		case ctx.Err() != nil || errors.Is(err, livefill.ErrClosed):
			// Stopped: the process stops, or the volume is deleted.
		default:
			s.failLive(l, err)
		}
	}()
}

// endLive makes l's volume ordinary: its live columns cleared, then its
// state file removed (in that order: a crash between the two leaves a
// state file that the next start removes, never live columns without a
// state). The exports open keep the fill device, which now passes
// everything to the volume; new ones open the driver's volume.
func (s *Server) endLive(l *liveFill) {
	ctx := context.WithoutCancel(s.liveCtx)
	if err := s.db.EndLive(ctx, l.volumeID); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			// Still marked: the next start finds the fill complete and
			// ends it then. Meanwhile the exports pass through.
			s.log.Error("live restore: the fill ended but the volume stays marked", "volume_id", l.volumeID, "err", err)
			return
		}
	}
	if err := os.Remove(l.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("live restore: remove the state file", "path", l.statePath, "err", err)
	}
	s.liveMu.Lock()
	if s.lives[l.volumeID] == l {
		delete(s.lives, l.volumeID)
	}
	l.ended = true
	unused := l.refs == 0
	s.liveMu.Unlock()
	if unused {
		l.close()
	}
	s.log.Info("live restore done", "volume_id", l.volumeID, "backup_id", l.backupID)
}

// failLive marks l's volume failed for good: fail_reason says why, and
// reads of what is not filled fail from now on; what is filled and what
// was written stay readable.
func (s *Server) failLive(l *liveFill, cause error) {
	l.source.fail(fmt.Errorf("the live restore from backup %s failed: %w", l.backupID, cause))
	reason := fmt.Sprintf("live restore from backup %s failed: %v", l.backupID, cause)
	if err := s.db.UpdateVolume(context.WithoutCancel(s.liveCtx), l.volumeID, map[string]any{
		"live_status": volumedb.LiveFailed, "fail_reason": truncate(reason)}); err != nil {
		s.log.Error("live restore: mark failed", "volume_id", l.volumeID, "err", err)
	}
	s.log.Error("live restore failed", "volume_id", l.volumeID, "backup_id", l.backupID, "err", cause)
}

// truncate fits a reason into fail_reason.
func truncate(reason string) string {
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	return strings.ToValidUTF8(reason, "?")
}

// dropLive stops the live restore of volume id (being deleted): the fill
// stops, the device closes, the state file goes.
func (s *Server) dropLive(id string) {
	s.liveMu.Lock()
	l := s.lives[id]
	delete(s.lives, id)
	delete(s.broken, id)
	if l != nil {
		l.ended = true
	}
	s.liveMu.Unlock()
	if l != nil {
		l.cancel()
		<-l.done
		l.close()
		s.log.Info("live restore stopped: the volume is deleted", "volume_id", id, "backup_id", l.backupID)
	}
	if s.cfg.LiveDir != "" {
		os.Remove(s.statePath(id))
	}
}

// resumeLive, at start-up, reopens the live restore of every volume that
// has one from its state file and its recorded source (dialed in the
// background: the backup service may be away, or gone for good and call
// StartLiveRestore with a new export), and restarts the fills. It also
// removes the state files no volume has any more.
func (s *Server) resumeLive(ctx context.Context) error {
	if s.cfg.LiveDir == "" {
		return nil
	}
	rows, err := s.db.ListLiveVolumes(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for i := range rows {
		v := &rows[i]
		keep[v.ID+".state"] = true
		var src volumev1.ConnectionInfo
		if err := protojson.Unmarshal([]byte(v.LiveSource), &src); err != nil {
			s.log.Error("live restore cannot resume: bad source", "volume_id", v.ID, "err", err)
			continue
		}
		source := newLiveSource(v.LiveSize, s.cfg.SourceTLS, s.log)
		if v.LiveStatus == volumedb.LiveFailed {
			source.fail(fmt.Errorf("the live restore from backup %s failed: %s", v.LiveBackupID, v.FailReason))
		} else {
			source.connectLater(&src)
		}
		l, err := s.openLive(ctx, v.ID, v.LiveBackupID, source, false)
		if err != nil {
			// Its exports are not served (Restore drops them) rather than
			// served without the fill.
			s.log.Error("live restore cannot resume", "volume_id", v.ID, "err", err)
			s.liveMu.Lock()
			s.broken[v.ID] = err
			s.liveMu.Unlock()
			if v.LiveStatus == volumedb.LiveFilling {
				reason := fmt.Sprintf("live restore from backup %s cannot resume: %v", v.LiveBackupID, err)
				if err := s.db.UpdateVolume(ctx, v.ID, map[string]any{"live_status": volumedb.LiveFailed, "fail_reason": truncate(reason)}); err != nil {
					return err
				}
			}
			continue
		}
		s.liveMu.Lock()
		s.lives[v.ID] = l
		s.liveMu.Unlock()
		if v.LiveStatus == volumedb.LiveFilling {
			s.runFill(l)
		} else {
			close(l.done)
		}
		done, total := l.dev.Progress()
		s.log.Info("live restore resumed", "volume_id", v.ID, "backup_id", v.LiveBackupID, "status", v.LiveStatus, "bytes_filled", done, "bytes_total", total)
	}
	ents, err := os.ReadDir(s.cfg.LiveDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".state") && !keep[e.Name()] {
			os.Remove(filepath.Join(s.cfg.LiveDir, e.Name()))
		}
	}
	return nil
}

// stopLive stops every fill and closes the devices (the process stops;
// the state files stay, for the next start).
func (s *Server) stopLive() {
	s.liveStop()
	s.liveWG.Wait()
	s.liveMu.Lock()
	lives := s.lives
	s.lives = map[string]*liveFill{}
	for _, l := range lives {
		l.ended = true
	}
	s.liveMu.Unlock()
	for _, l := range lives {
		l.close()
	}
}

// liveExportOf returns an export's view of volume id's live restore, or
// nil when the volume has none here. A volume whose live restore could not
// be resumed is refused.
func (s *Server) liveExportOf(id string, readOnly bool) (blockdev.Device, error) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if err := s.broken[id]; err != nil {
		return nil, err
	}
	l := s.lives[id]
	if l == nil || l.ended {
		return nil, nil
	}
	l.refs++
	return &liveExport{s: s, l: l, readOnly: readOnly}, nil
}

func (s *Server) releaseLive(l *liveFill) {
	s.liveMu.Lock()
	l.refs--
	unused := l.ended && l.refs == 0
	s.liveMu.Unlock()
	if unused {
		l.close()
	}
}

// liveProgress is the bytes filled of volume id's live restore here
// (ok false when it has none here).
func (s *Server) liveProgress(id string) (int64, bool) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	l := s.lives[id]
	if l == nil {
		return 0, false
	}
	return l.filled.Load(), true
}

// liveExport is one export's handle on a shared fill device: closing it
// releases the device (closed once unused and the fill ended), and a
// read-only one refuses changes.
type liveExport struct {
	s        *Server
	l        *liveFill
	readOnly bool
	once     sync.Once
}

var _ blockdev.Device = (*liveExport)(nil)

func (e *liveExport) ReadAt(p []byte, off int64) (int, error) { return e.l.dev.ReadAt(p, off) }

func (e *liveExport) WriteAt(p []byte, off int64) (int, error) {
	if e.readOnly {
		return 0, blockdev.ErrReadOnly
	}
	return e.l.dev.WriteAt(p, off)
}

func (e *liveExport) Zero(off, length int64) error {
	if e.readOnly {
		return blockdev.ErrReadOnly
	}
	return e.l.dev.Zero(off, length)
}

func (e *liveExport) Trim(off, length int64) error {
	if e.readOnly {
		return blockdev.ErrReadOnly
	}
	return e.l.dev.Trim(off, length)
}

func (e *liveExport) Flush() error { return e.l.dev.Flush() }

func (e *liveExport) Extents(off, length int64) ([]blockdev.Extent, error) {
	return e.l.dev.Extents(off, length)
}

func (e *liveExport) Size() int64    { return e.l.dev.Size() }
func (e *liveExport) ReadOnly() bool { return e.readOnly }

func (e *liveExport) Close() error {
	e.once.Do(func() { e.s.releaseLive(e.l) })
	return nil
}

// liveView is the volume's live_restore: the row's, with the progress of
// the fill running here.
func (s *Server) liveView(v *volumedb.Volume) *volumev1.LiveRestore {
	if v.LiveStatus == "" {
		return nil
	}
	filled := v.LiveFilled
	if n, ok := s.liveProgress(v.ID); ok {
		filled = n
	}
	return &volumev1.LiveRestore{BackupId: v.LiveBackupID, Status: v.LiveStatus, BytesFilled: filled, BytesTotal: v.LiveSize}
}
