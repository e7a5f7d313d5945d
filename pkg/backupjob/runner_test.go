package backupjob

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/google/uuid"
)

const (
	mib     = int64(1) << 20
	volSize = 16 * mib
)

// env is a runner with everything real below it but gRPC: a SQLite
// database, the engine on a posix repository, and testVM.
type env struct {
	t   *testing.T
	vm  *testVM
	db  *backupdb.Store
	eng *engine.Engine
	r   *Runner
}

func newEnv(t *testing.T, cfg Config, eng func(*engine.Engine) Engine) *env {
	t.Helper()
	dir := testenv.XFSDir(t, 1<<30)
	ctx := context.Background()
	gdb, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "backups.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(gdb) })
	db, err := backupdb.New(ctx, gdb)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := posix.New(filepath.Join(t.TempDir(), "repository"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(repo, engine.Options{ChunkSize: int(mib)})
	if err != nil {
		t.Fatal(err)
	}
	vm := newTestVM(t, filepath.Join(dir, "pool"))
	if cfg.NodeID == "" {
		cfg.NodeID = "node-1"
	}
	if cfg.CleanupTimeout == 0 {
		cfg.CleanupTimeout = 20 * time.Second
	}
	var je Engine = e
	if eng != nil {
		je = eng(e)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	r := New(cfg, db, vm, je, log)
	t.Cleanup(r.Close)
	return &env{t: t, vm: vm, db: db, eng: e, r: r}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// backup starts a backup of volumeID as the service's handler does: the
// volume goes backing-up, a creating row, then the job.
func (e *env) backup(volumeID, parentID string) string {
	e.t.Helper()
	prev := e.vm.statusOf(volumeID)
	e.vm.setStatus(volumeID, "backing-up")
	now := time.Now().UTC()
	b := &backupdb.Backup{ID: uuid.NewString(), ProjectID: "p", VolumeID: volumeID, Container: "backups",
		Status: lifecycle.BackupCreating, SizeBytes: volSize, ParentID: parentID, IsIncremental: parentID != "",
		OwnerNode: e.r.cfg.NodeID, LeaseExpiresAt: &now, StartedAt: &now}
	if err := e.db.Create(context.Background(), b); err != nil {
		e.t.Fatal(err)
	}
	e.r.Backup(context.Background(), b.ID, prev)
	return b.ID
}

// wait waits for the job of backup id to end and returns its row.
func (e *env) wait(id string) *backupdb.Backup {
	e.t.Helper()
	e.waitJob(id)
	b, err := e.db.Get(context.Background(), "", id)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// waitJob waits for the job of backup id to end.
func (e *env) waitJob(id string) {
	e.t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for e.r.running(id) {
		if time.Now().After(deadline) {
			e.t.Fatalf("the job of backup %s still runs after %v", id, testenv.Patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restore restores backup id into a new volume and returns its content.
func (e *env) restore(id string) []byte {
	e.t.Helper()
	volID := uuid.NewString()
	e.vm.createVolume(volID, volSize, "available")
	e.vm.setStatus(volID, "restoring-backup")
	if _, err := e.db.Transition(context.Background(), id, lifecycle.BeginRestore, map[string]any{"restore_volume_id": volID}); err != nil {
		e.t.Fatal(err)
	}
	e.r.Restore(context.Background(), id, volID)
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable || b.FailReason != "" || b.RestoreVolumeID != "" {
		e.t.Fatalf("after the restore the backup is %s (%q), restore volume %q", b.Status, b.FailReason, b.RestoreVolumeID)
	}
	if st := e.vm.statusOf(volID); st != "available" {
		e.t.Fatalf("the restored volume is %s", st)
	}
	data := e.vm.read(volID)
	if err := e.vm.DeleteVolume(context.Background(), "p", volID); err != nil {
		e.t.Fatal(err)
	}
	return data
}

func (e *env) checkNothingLeft(keep ...string) {
	e.t.Helper()
	if left := e.vm.leftovers(keep...); len(left) > 0 {
		e.t.Fatalf("left behind: %v", left)
	}
}

// TestBackupStrategies backs up a volume each way the runner can read it,
// and for an in-use volume overwrites it right after the point in time was
// taken: the restore must give the data of that moment, byte for byte, the
// volume must be back in its status, and nothing temporary may be left.
func TestBackupStrategies(t *testing.T) {
	for _, c := range []struct {
		name     string
		cfg      Config
		caps     func(*Capabilities)
		status   string
		strategy string
	}{
		{"available volume", Config{LocalReads: true}, nil, "available", StrategyVolume},
		{"in-use, local snapshot", Config{LocalReads: true}, nil, "in-use", StrategyLocalSnapshot},
		{"in-use, snapshot attached over NBD", Config{}, nil, "in-use", StrategyAttachedSnapshot},
		{"in-use, temporary volume over NBD", Config{}, func(c *Capabilities) { c.SnapshotExport = false }, "in-use", StrategyTemporaryVolume},
		{"in-use, strategy forced", Config{LocalReads: true, Strategy: StrategyTemporaryVolume}, nil, "in-use", StrategyTemporaryVolume},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.cfg, nil)
			if c.caps != nil {
				c.caps(&e.vm.caps)
			}
			vol := uuid.NewString()
			want := e.vm.createVolume(vol, volSize, c.status)
			if c.status == "in-use" {
				e.vm.afterPointInTime = func(volumeID string) {
					later := make([]byte, volSize)
					rand.Read(later)
					e.vm.write(volumeID, 0, later)
				}
			}
			id := e.backup(vol, "")
			b := e.wait(id)
			if b.Status != lifecycle.BackupAvailable || b.Strategy != c.strategy {
				t.Fatalf("backup %s by %q (%s), want available by %q", b.Status, b.Strategy, b.FailReason, c.strategy)
			}
			if b.BytesDone != volSize || b.BytesTotal != volSize || b.TempSnapshotID != "" || b.TempVolumeID != "" {
				t.Fatalf("progress %d/%d, temporary snapshot %q, volume %q", b.BytesDone, b.BytesTotal, b.TempSnapshotID, b.TempVolumeID)
			}
			if st := e.vm.statusOf(vol); st != c.status {
				t.Fatalf("the volume is %s after the backup, want %s", st, c.status)
			}
			e.checkNothingLeft(vol)
			if err := sameBytes(e.restore(id), want); err != nil {
				t.Fatalf("the restore differs from the volume at the backup's point in time: %v", err)
			}
			e.checkNothingLeft(vol)
		})
	}
}

// TestBackupFaults: a step of the volume manager fails, for good or for a
// while; the backup ends available (a cleanup step retried) or error with
// the reason, the volume is back in its status, and nothing is left.
func TestBackupFaults(t *testing.T) {
	down := fmt.Errorf("connection refused: %w", ErrUnavailable)
	for _, c := range []struct {
		name   string
		method string
		errs   []error
		status string // of the backup
		reason string // in its fail_reason
	}{
		{"the snapshot cannot be taken", "CreateTemporarySnapshot", []error{errors.New("the pool is full")}, "error",
			"take the temporary snapshot: the pool is full"},
		{"the snapshot cannot be attached", "AttachSnapshot", []error{errors.New("no export slot")}, "error", "no export slot"},
		{"the clone cannot be made", "CreateTemporaryVolume", []error{errors.New("quota")}, "error", "clone the temporary volume: quota"},
		{"the capabilities are unknown", "Capabilities", []error{down}, "error", "ask the volume manager for its capabilities"},
		{"the detach fails for a while", "DetachSnapshot", []error{down, down}, "available", ""},
		{"the delete of the snapshot fails for a while", "DeleteSnapshot", []error{down}, "available", ""},
		{"the end of the backup fails for a while", "EndBackup", []error{down, down}, "available", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Config{}, nil)
			if c.method == "CreateTemporaryVolume" {
				e.vm.caps.SnapshotExport = false
			}
			vol := uuid.NewString()
			want := e.vm.createVolume(vol, volSize, "in-use")
			e.vm.failNext(c.method, c.errs...)
			id := e.backup(vol, "")
			b := e.wait(id)
			if b.Status != c.status || !strings.Contains(b.FailReason, c.reason) {
				t.Fatalf("backup %s (%q), want %s with %q", b.Status, b.FailReason, c.status, c.reason)
			}
			if e.vm.calls[c.method] < len(c.errs) {
				t.Fatalf("%s called %d times, want at least %d", c.method, e.vm.calls[c.method], len(c.errs))
			}
			if st := e.vm.statusOf(vol); st != "in-use" {
				t.Fatalf("the volume is %s after the backup", st)
			}
			e.checkNothingLeft(vol)
			if b.Status == lifecycle.BackupAvailable {
				if err := sameBytes(e.restore(id), want); err != nil {
					t.Fatal(err)
				}
			} else if _, err := e.eng.LoadManifest(context.Background(), "backups", id); !errors.Is(err, engine.ErrNoBackup) {
				t.Fatalf("a failed backup left a manifest: %v", err)
			}
		})
	}
}

// blockingEngine holds a backup until its context ends (a fault: a backup
// that is still reading when it is cancelled).
type blockingEngine struct {
	*engine.Engine
	started chan struct{}
}

func (b blockingEngine) Backup(ctx context.Context, container string, src blockdev.Device, spec engine.BackupSpec) (*engine.Manifest, error) {
	close(b.started)
	<-ctx.Done()
	return b.Engine.Backup(ctx, container, src, spec)
}

// TestCancelBackup: a backup cancelled while it reads (a force-delete, a
// shutdown) ends error "backup cancelled", writes no manifest, and gives
// everything back.
func TestCancelBackup(t *testing.T) {
	started := make(chan struct{})
	e := newEnv(t, Config{}, func(e *engine.Engine) Engine { return blockingEngine{e, started} })
	vol := uuid.NewString()
	e.vm.createVolume(vol, volSize, "in-use")
	id := e.backup(vol, "")
	<-started
	if !e.r.Cancel(id) {
		t.Fatal("Cancel found no job")
	}
	b := e.wait(id)
	if b.Status != lifecycle.BackupError || b.FailReason != "backup cancelled" {
		t.Fatalf("backup %s (%q), want error (backup cancelled)", b.Status, b.FailReason)
	}
	if _, err := e.eng.LoadManifest(context.Background(), "backups", id); !errors.Is(err, engine.ErrNoBackup) {
		t.Fatalf("a cancelled backup left a manifest: %v", err)
	}
	if st := e.vm.statusOf(vol); st != "in-use" {
		t.Fatalf("the volume is %s", st)
	}
	e.checkNothingLeft(vol)
}

// TestIncrementalFromChangedRanges: with changed-block tracking the full
// backup keeps its snapshot; the incremental one reads only what the
// volume manager reports changed since, keeps its own snapshot instead,
// and restores byte for byte; deleting the backups deletes the snapshot.
func TestIncrementalFromChangedRanges(t *testing.T) {
	e := newEnv(t, Config{LocalReads: true, ChangedBlockTracking: true}, nil)
	vol := uuid.NewString()
	data := e.vm.createVolume(vol, volSize, "in-use")
	full := e.backup(vol, "")
	fb := e.wait(full)
	if fb.Status != lifecycle.BackupAvailable || fb.TrackingSnapshotID == "" {
		t.Fatalf("full backup %s (%q), tracking snapshot %q", fb.Status, fb.FailReason, fb.TrackingSnapshotID)
	}
	if left := e.vm.leftovers(vol); !slices.Equal(left, []string{"snapshot " + fb.TrackingSnapshotID}) {
		t.Fatalf("left: %v, want only the full backup's tracking snapshot", left)
	}

	change := make([]byte, mib)
	rand.Read(change)
	copy(data[5*mib:], change)
	e.vm.write(vol, 5*mib, change)
	inc := e.backup(vol, full)
	ib := e.wait(inc)
	if ib.Status != lifecycle.BackupAvailable || ib.TrackingSnapshotID == "" {
		t.Fatalf("incremental backup %s (%q)", ib.Status, ib.FailReason)
	}
	if ib.BytesRead > 2*mib {
		t.Fatalf("the incremental backup read %d bytes for 1 MiB changed", ib.BytesRead)
	}
	if fb, _ = e.db.Get(context.Background(), "", full); fb.TrackingSnapshotID != "" {
		t.Fatalf("the full backup still keeps snapshot %s", fb.TrackingSnapshotID)
	}
	if left := e.vm.leftovers(vol); !slices.Equal(left, []string{"snapshot " + ib.TrackingSnapshotID}) {
		t.Fatalf("left: %v, want only the incremental's tracking snapshot", left)
	}
	if err := sameBytes(e.restore(inc), data); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{inc, full} {
		b := e.wait(id)
		if _, err := e.db.Transition(context.Background(), id, lifecycle.Delete, nil); err != nil {
			t.Fatal(err)
		}
		e.r.Delete(context.Background(), b)
		e.waitJob(id)
		if _, err := e.db.Get(context.Background(), "", id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("backup %s after its delete: %v", id, err)
		}
	}
	e.checkNothingLeft(vol)
}

// crashedBackup leaves what a backup service killed in the middle of a
// backup of an in-use volume leaves: the volume backing-up, a temporary
// snapshot (or clone, temporaryVolume) recorded on a creating row and
// attached, owned by node.
func (e *env) crashedBackup(vol, node string, lease time.Time, temporaryVolume bool) string {
	e.t.Helper()
	ctx := context.Background()
	e.vm.setStatus(vol, "backing-up")
	b := &backupdb.Backup{ID: uuid.NewString(), ProjectID: "p", VolumeID: vol, Container: "backups",
		Status: lifecycle.BackupCreating, SizeBytes: volSize, OwnerNode: node, LeaseExpiresAt: &lease}
	tmp := uuid.NewString()
	if temporaryVolume {
		b.TempVolumeID = tmp
	} else {
		b.TempSnapshotID = tmp
	}
	if err := e.db.Create(ctx, b); err != nil {
		e.t.Fatal(err)
	}
	var err error
	if temporaryVolume {
		if err = e.vm.CreateTemporaryVolume(ctx, "p", tmp, vol, "", ""); err == nil {
			_, err = e.vm.AttachVolume(ctx, "p", tmp, "backup-"+b.ID, Connector{Host: "node-2", ReadOnly: true})
		}
	} else if err = e.vm.CreateTemporarySnapshot(ctx, "p", tmp, vol, "", ""); err == nil {
		_, err = e.vm.AttachSnapshot(ctx, "p", tmp, Connector{Host: "node-2", ReadOnly: true})
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return b.ID
}

// TestRecover: after a crash, Recover ends each job this node left: an
// interrupted backup becomes error with its temporary snapshot or clone
// detached and deleted and its volume back in-use; an interrupted restore
// gives the backup back and leaves its target error_restoring, detached;
// an interrupted delete is finished. Another node's jobs are not touched.
func TestRecover(t *testing.T) {
	e := newEnv(t, Config{LocalReads: true}, nil)
	ctx := context.Background()
	now := time.Now().UTC()
	vol := uuid.NewString()
	e.vm.createVolume(vol, volSize, "in-use")
	done := e.backup(vol, "")
	if b := e.wait(done); b.Status != lifecycle.BackupAvailable {
		t.Fatalf("backup %s (%q)", b.Status, b.FailReason)
	}
	bySnapshot := e.crashedBackup(vol, "node-1", now, false)

	vol2 := uuid.NewString()
	e.vm.createVolume(vol2, volSize, "in-use")
	byClone := e.crashedBackup(vol2, "node-1", now, true)

	vol3 := uuid.NewString()
	e.vm.createVolume(vol3, volSize, "in-use")
	othersJob := e.crashedBackup(vol3, "node-2", now.Add(time.Hour), false)

	target := uuid.NewString()
	e.vm.createVolume(target, volSize, "restoring-backup")
	if _, err := e.vm.AttachVolume(ctx, "p", target, "restore-"+done, Connector{Host: "node-2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Transition(ctx, done, lifecycle.BeginRestore, map[string]any{"restore_volume_id": target}); err != nil {
		t.Fatal(err)
	}

	if err := e.r.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{bySnapshot, byClone} {
		b := e.wait(id)
		if b.Status != lifecycle.BackupError || b.FailReason != MsgResetOnRestart || b.TempSnapshotID != "" || b.TempVolumeID != "" {
			t.Fatalf("interrupted backup %s (%q), temporary snapshot %q, volume %q", b.Status, b.FailReason, b.TempSnapshotID, b.TempVolumeID)
		}
	}
	if st, st2 := e.vm.statusOf(vol), e.vm.statusOf(vol2); st != "in-use" || st2 != "in-use" {
		t.Fatalf("the volumes of the interrupted backups are %s and %s, want in-use", st, st2)
	}
	if b := e.wait(done); b.Status != lifecycle.BackupAvailable || b.RestoreVolumeID != "" {
		t.Fatalf("the backup of the interrupted restore is %s, restore volume %q", b.Status, b.RestoreVolumeID)
	}
	if st := e.vm.statusOf(target); st != "error_restoring" {
		t.Fatalf("the target of the interrupted restore is %s, want error_restoring", st)
	}
	if b := e.wait(othersJob); b.Status != lifecycle.BackupCreating {
		t.Fatalf("another node's backup became %s", b.Status)
	}
	// Left: only the other node's snapshot and its export.
	if left := e.vm.leftovers(vol, vol2, vol3, target); len(left) != 3 || !strings.HasPrefix(left[2], "snapshot ") {
		t.Fatalf("left: %v, want the other node's snapshot and export only", left)
	}

	// An interrupted delete is resumed.
	if _, err := e.db.Transition(ctx, done, lifecycle.Delete, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitJob(done)
	if _, err := e.db.Get(ctx, "", done); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the backup whose delete was interrupted: %v", err)
	}
	if _, err := e.eng.LoadManifest(ctx, "backups", done); !errors.Is(err, engine.ErrNoBackup) {
		t.Fatalf("its manifest: %v", err)
	}
}

// TestTakeOverLapsedLease: the node that ran a backup died (its lease
// lapsed); this node's lease loop claims the job and cleans it up as a
// restart would, naming the dead node.
func TestTakeOverLapsedLease(t *testing.T) {
	e := newEnv(t, Config{LeaseDuration: 300 * time.Millisecond}, nil)
	vol := uuid.NewString()
	e.vm.createVolume(vol, volSize, "in-use")
	id := e.crashedBackup(vol, "node-dead", time.Now().UTC().Add(-time.Second), false)
	ctx, cancel := context.WithCancel(context.Background())
	loop := make(chan error, 1)
	go func() { loop <- e.r.RunLeases(ctx) }()
	defer func() {
		cancel()
		<-loop
	}()
	deadline := time.Now().Add(testenv.Patience)
	for {
		b := e.wait(id)
		if b.Status == lifecycle.BackupError {
			if !strings.Contains(b.FailReason, "node node-dead stopped") || b.OwnerNode != "node-1" {
				t.Fatalf("taken over with %q by %q", b.FailReason, b.OwnerNode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backup of the dead node is still %s", b.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := e.vm.statusOf(vol); st != "in-use" {
		t.Fatalf("the volume is %s", st)
	}
	e.checkNothingLeft(vol)
}

// serveLive gives the runner a real NBD server to export backups from.
func (e *env) serveLive() *nbd.Server {
	e.t.Helper()
	srv := nbd.NewServer(nbd.ServerOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go srv.Serve(ln)
	e.t.Cleanup(func() { srv.Shutdown(context.Background()) })
	addr := ln.Addr().(*net.TCPAddr)
	e.r.ServeLiveRestoresWith(&NBDExporter{Engine: e.eng, Server: srv, Host: "127.0.0.1", Port: addr.Port})
	return srv
}

// liveTarget makes a fresh volume restoring from backup id, live, as the
// service's handler does.
func (e *env) liveTarget(id string) string {
	e.t.Helper()
	vol := uuid.NewString()
	if err := e.vm.d.CreateVolume(context.Background(), vol, volSize); err != nil {
		e.t.Fatal(err)
	}
	e.vm.setStatus(vol, "restoring-backup")
	if _, err := e.db.Transition(context.Background(), id, lifecycle.BeginRestore,
		map[string]any{"restore_volume_id": vol, "restore_live": true}); err != nil {
		e.t.Fatal(err)
	}
	return vol
}

// TestLiveRestore: a live restore exports the backup over real NBD, the
// volume manager fills the volume from it (livefill), and the job follows
// the fill (through a volume manager out of reach for a while) to its end:
// the backup available again, its progress whole, the volume available
// with the backup's bytes, the export gone. A restore a crash interrupted
// before the volume manager took the volume over is resumed by Recover.
func TestLiveRestore(t *testing.T) {
	e := newEnv(t, Config{LocalReads: true}, nil)
	srv := e.serveLive()
	vol := uuid.NewString()
	want := e.vm.createVolume(vol, volSize, "available")
	id := e.backup(vol, "")
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable {
		t.Fatalf("backup %s (%q)", b.Status, b.FailReason)
	}

	target := e.liveTarget(id)
	down := fmt.Errorf("connection refused: %w", ErrUnavailable)
	e.vm.failNext("LiveRestore", down, down, down)
	e.r.LiveRestore(context.Background(), id, target)
	b := e.wait(id)
	if b.Status != lifecycle.BackupAvailable || b.FailReason != "" || b.RestoreLive || b.RestoreVolumeID != "" || b.BytesDone != volSize {
		t.Fatalf("after the live restore: %s (%q), live %v, target %q, %d bytes done", b.Status, b.FailReason, b.RestoreLive, b.RestoreVolumeID, b.BytesDone)
	}
	if st := e.vm.statusOf(target); st != "available" {
		t.Fatalf("the volume is %s", st)
	}
	if err := sameBytes(e.vm.read(target), want); err != nil {
		t.Fatalf("the live-restored volume: %v", err)
	}
	if x := srv.Exports(); len(x) != 0 {
		t.Fatalf("exports left: %v", x)
	}

	// A crash between the handler and the volume manager's take-over.
	second := e.liveTarget(id)
	if err := e.r.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable || b.FailReason != "" {
		t.Fatalf("the resumed live restore: %s (%q)", b.Status, b.FailReason)
	}
	if err := sameBytes(e.vm.read(second), want); err != nil {
		t.Fatalf("the resumed live restore: %v", err)
	}

	// The fill ended while the backup service was down: the resumed job
	// finds the volume ordinary and ends the restore, starting nothing.
	fourth := e.liveTarget(id)
	e.vm.setStatus(fourth, "in-use")
	starts := e.vm.calls["StartLiveRestore"]
	if err := e.r.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable || b.FailReason != "" || b.RestoreLive {
		t.Fatalf("a live restore whose fill ended meanwhile: %s (%q)", b.Status, b.FailReason)
	}
	if e.vm.calls["StartLiveRestore"] != starts || e.vm.statusOf(fourth) != "in-use" {
		t.Fatalf("the resumed job started the fill again (%d starts) or touched the volume (%s)", e.vm.calls["StartLiveRestore"]-starts, e.vm.statusOf(fourth))
	}

	// A live restore the volume manager refuses ends, saying why, and the
	// volume, never usable, is error_restoring.
	third := e.liveTarget(id)
	e.vm.failNext("StartLiveRestore", errors.New("the volume manager refuses"))
	e.r.LiveRestore(context.Background(), id, third)
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable || !strings.Contains(b.FailReason, "the volume manager refuses") {
		t.Fatalf("a refused live restore: %s (%q)", b.Status, b.FailReason)
	}
	if st := e.vm.statusOf(third); st != "error_restoring" {
		t.Fatalf("the target of a refused live restore is %s, want error_restoring", st)
	}
}

// heldEngine holds backups while hold is set, until their context ends (a
// fault: a backup that keeps its job slot).
type heldEngine struct {
	*engine.Engine
	hold    atomic.Bool
	started chan struct{}
}

func (h *heldEngine) Backup(ctx context.Context, container string, src blockdev.Device, spec engine.BackupSpec) (*engine.Manifest, error) {
	if h.hold.Load() {
		close(h.started)
		<-ctx.Done()
	}
	return h.Engine.Backup(ctx, container, src, spec)
}

// TestLiveRestoreIsNotQueued: with the only job slot taken by a backup, a
// live restore still makes its volume usable and runs to its end: its
// user is waiting, and its data moves at the volume manager's pace.
func TestLiveRestoreIsNotQueued(t *testing.T) {
	held := &heldEngine{started: make(chan struct{})}
	e := newEnv(t, Config{LocalReads: true, MaxConcurrent: 1}, func(eng *engine.Engine) Engine { held.Engine = eng; return held })
	e.serveLive()
	vol := uuid.NewString()
	want := e.vm.createVolume(vol, volSize, "available")
	id := e.backup(vol, "")
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable {
		t.Fatalf("backup %s (%q)", b.Status, b.FailReason)
	}
	held.hold.Store(true)
	other := uuid.NewString()
	e.vm.createVolume(other, volSize, "available")
	blocking := e.backup(other, "")
	<-held.started

	target := e.liveTarget(id)
	select {
	case err := <-e.r.LiveRestore(context.Background(), id, target):
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testenv.Patience):
		t.Fatalf("the live restore waited %v behind the backup holding the only job slot", testenv.Patience)
	}
	if b := e.wait(id); b.Status != lifecycle.BackupAvailable || b.FailReason != "" {
		t.Fatalf("the live restore: %s (%q)", b.Status, b.FailReason)
	}
	if err := sameBytes(e.vm.read(target), want); err != nil {
		t.Fatal(err)
	}
	e.r.Cancel(blocking)
	if b := e.wait(blocking); b.Status != lifecycle.BackupError {
		t.Fatalf("the held backup: %s", b.Status)
	}
}
