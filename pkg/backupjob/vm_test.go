package backupjob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/livefill"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/file"
)

// testVM is a volume manager without gRPC and without a database: the real
// file driver (reflink mode, on a loop-mounted XFS) for the data, real NBD
// exports (pkg/nbd) for attachments that are not local, and maps for the
// statuses the real one keeps in its tables. Faults are injected per
// method (failNext); nothing else is faked.
type testVM struct {
	t    *testing.T
	d    *file.Driver
	node string
	caps Capabilities
	srv  *nbd.Server
	host string
	port int

	mu       sync.Mutex
	status   map[string]string // volume id -> status
	previous map[string]string // volume id -> status before backing-up
	snaps    map[string]string // snapshot id -> volume id
	exports  map[string]export // snapshot id or attachment id -> export
	atts     map[string]att    // attachment id -> attachment
	faults   map[string][]error
	calls    map[string]int
	// afterPointInTime runs once a temporary snapshot or volume is taken.
	afterPointInTime func(volumeID string)
	n                int
	lives            map[string]*live
}

type export struct {
	name string
	dev  blockdev.Device
}

type att struct {
	volumeID, serverID string
}

func newTestVM(t *testing.T, dir string) *testVM {
	d, err := file.New(file.Config{Dir: dir, Mode: "reflink"})
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.NewServer(nbd.ServerOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	c := d.Capabilities()
	vm := &testVM{t: t, d: d, node: "node-1", srv: srv, host: host, port: p,
		caps: Capabilities{Driver: "file", NodeID: "node-1", LocalPath: c.LocalPath, Snapshot: c.Snapshot,
			SnapshotExport: c.SnapshotExport, Clone: c.Clone, ChangedRanges: c.ChangedRanges},
		status: map[string]string{}, previous: map[string]string{}, snaps: map[string]string{},
		exports: map[string]export{}, atts: map[string]att{}, faults: map[string][]error{}, calls: map[string]int{}}
	t.Cleanup(func() {
		// What a failed test left open would keep the XFS image busy.
		srv.Shutdown(context.Background())
		for _, e := range vm.exports {
			e.dev.Close()
		}
		d.Close()
	})
	return vm
}

// failNext makes the next calls of method fail with errs, in order.
func (vm *testVM) failNext(method string, errs ...error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.faults[method] = append(vm.faults[method], errs...)
}

// enter counts a call of method and returns the fault injected for it.
func (vm *testVM) enter(method string) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.calls[method]++
	if f := vm.faults[method]; len(f) > 0 {
		vm.faults[method] = f[1:]
		return f[0]
	}
	return nil
}

// createVolume makes a volume of size bytes filled with random data and
// returns the data.
func (vm *testVM) createVolume(id string, size int64, status string) []byte {
	vm.t.Helper()
	ctx := context.Background()
	if err := vm.d.CreateVolume(ctx, id, size); err != nil {
		vm.t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data[:size/2]) // the second half stays a hole
	vm.write(id, 0, data[:size/2])
	vm.mu.Lock()
	vm.status[id] = status
	vm.mu.Unlock()
	return data
}

// write writes through the driver, as a user's attachment does.
func (vm *testVM) write(volumeID string, off int64, p []byte) {
	vm.t.Helper()
	dev, err := vm.d.OpenVolume(context.Background(), volumeID, false)
	if err != nil {
		vm.t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.WriteAt(p, off); err != nil {
		vm.t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		vm.t.Fatal(err)
	}
}

// read returns a volume's whole content.
func (vm *testVM) read(volumeID string) []byte {
	vm.t.Helper()
	dev, err := vm.d.OpenVolume(context.Background(), volumeID, true)
	if err != nil {
		vm.t.Fatal(err)
	}
	defer dev.Close()
	out := make([]byte, dev.Size())
	if _, err := dev.ReadAt(out, 0); err != nil {
		vm.t.Fatal(err)
	}
	return out
}

// setStatus sets a volume's status; backing-up records the previous one,
// as BeginBackup does.
func (vm *testVM) setStatus(id, status string) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if status == "backing-up" {
		vm.previous[id] = vm.status[id]
	}
	vm.status[id] = status
}

func (vm *testVM) statusOf(id string) string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.status[id]
}

// leftovers lists what a job left behind: snapshots, exports and
// attachments, and volumes other than keep.
func (vm *testVM) leftovers(keep ...string) []string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	var out []string
	for s := range vm.snaps {
		out = append(out, "snapshot "+s)
	}
	for e := range vm.exports {
		out = append(out, "export "+e)
	}
	for a, x := range vm.atts {
		out = append(out, "attachment "+a+" by "+x.serverID)
	}
	for v := range vm.status {
		kept := false
		for _, k := range keep {
			kept = kept || k == v
		}
		if !kept {
			out = append(out, "volume "+v)
		}
	}
	if names := vm.srv.Exports(); len(names) > 0 {
		out = append(out, fmt.Sprintf("nbd exports %v", names))
	}
	sort.Strings(out)
	return out
}

func notFound(what, id string) error { return fmt.Errorf("%s %s: %w", what, id, ErrNotFound) }

func (vm *testVM) Capabilities(ctx context.Context) (Capabilities, error) {
	if err := vm.enter("Capabilities"); err != nil {
		return Capabilities{}, err
	}
	return vm.caps, nil
}

func (vm *testVM) CreateTemporarySnapshot(ctx context.Context, project, id, volumeID, name, description string) error {
	if err := vm.enter("CreateTemporarySnapshot"); err != nil {
		return err
	}
	if err := vm.d.CreateSnapshot(ctx, volumeID, id); err != nil {
		return err
	}
	vm.mu.Lock()
	vm.snaps[id] = volumeID
	after := vm.afterPointInTime
	vm.mu.Unlock()
	if after != nil {
		after(volumeID)
	}
	return nil
}

func (vm *testVM) CreateTemporaryVolume(ctx context.Context, project, id, sourceVolumeID, name, description string) error {
	if err := vm.enter("CreateTemporaryVolume"); err != nil {
		return err
	}
	if err := vm.d.CloneVolume(ctx, sourceVolumeID, id); err != nil {
		return err
	}
	vm.mu.Lock()
	vm.status[id] = "available"
	after := vm.afterPointInTime
	vm.mu.Unlock()
	if after != nil {
		after(sourceVolumeID)
	}
	return nil
}

// serve exports dev over NBD under a fresh name.
func (vm *testVM) serve(key string, dev blockdev.Device, readOnly bool) (Connection, error) {
	vm.mu.Lock()
	vm.n++
	name := fmt.Sprintf("export-%d", vm.n)
	vm.exports[key] = export{name: name, dev: dev}
	vm.mu.Unlock()
	if err := vm.srv.AddExport(name, dev, readOnly); err != nil {
		return Connection{}, err
	}
	return Connection{Type: "nbd", Host: vm.host, Port: vm.port, ExportName: name}, nil
}

func (vm *testVM) unserve(key string) {
	vm.mu.Lock()
	e, ok := vm.exports[key]
	delete(vm.exports, key)
	vm.mu.Unlock()
	if ok {
		vm.srv.RemoveExport(e.name)
		e.dev.Close()
	}
}

func (vm *testVM) AttachSnapshot(ctx context.Context, project, snapshotID string, c Connector) (Connection, error) {
	if err := vm.enter("AttachSnapshot"); err != nil {
		return Connection{}, err
	}
	vm.mu.Lock()
	volID, ok := vm.snaps[snapshotID]
	vm.mu.Unlock()
	if !ok {
		return Connection{}, notFound("snapshot", snapshotID)
	}
	if c.Local && c.Host == vm.node {
		p, err := vm.d.LocalPath(ctx, volID, snapshotID)
		if err != nil {
			return Connection{}, err
		}
		return Connection{Type: "local", DevicePath: p}, nil
	}
	dev, err := vm.d.OpenSnapshot(ctx, volID, snapshotID)
	if err != nil {
		return Connection{}, err
	}
	return vm.serve(snapshotID, dev, true)
}

func (vm *testVM) DetachSnapshot(ctx context.Context, project, snapshotID string) error {
	if err := vm.enter("DetachSnapshot"); err != nil {
		return err
	}
	vm.unserve(snapshotID)
	return nil
}

func (vm *testVM) DeleteSnapshot(ctx context.Context, project, snapshotID string) error {
	if err := vm.enter("DeleteSnapshot"); err != nil {
		return err
	}
	vm.mu.Lock()
	volID, ok := vm.snaps[snapshotID]
	_, exported := vm.exports[snapshotID]
	vm.mu.Unlock()
	if !ok {
		return notFound("snapshot", snapshotID)
	}
	if exported {
		return fmt.Errorf("snapshot %s is attached: %w", snapshotID, volume.ErrInUse)
	}
	if err := vm.d.DeleteSnapshot(ctx, volID, snapshotID); err != nil {
		return err
	}
	vm.mu.Lock()
	delete(vm.snaps, snapshotID)
	vm.mu.Unlock()
	return nil
}

func (vm *testVM) AttachVolume(ctx context.Context, project, volumeID, serverID string, c Connector) (Attachment, error) {
	if err := vm.enter("AttachVolume"); err != nil {
		return Attachment{}, err
	}
	vm.mu.Lock()
	_, ok := vm.status[volumeID]
	vm.n++
	id := fmt.Sprintf("attachment-%d", vm.n)
	vm.mu.Unlock()
	if !ok {
		return Attachment{}, notFound("volume", volumeID)
	}
	a := Attachment{ID: id, ServerID: serverID}
	if c.Local && c.Host == vm.node {
		p, err := vm.d.LocalPath(ctx, volumeID, "")
		if err != nil {
			return Attachment{}, err
		}
		a.Connection = Connection{Type: "local", DevicePath: p}
	} else {
		dev, err := vm.d.OpenVolume(ctx, volumeID, c.ReadOnly)
		if err != nil {
			return Attachment{}, err
		}
		if a.Connection, err = vm.serve(id, dev, c.ReadOnly); err != nil {
			return Attachment{}, err
		}
	}
	vm.mu.Lock()
	vm.atts[id] = att{volumeID: volumeID, serverID: serverID}
	vm.mu.Unlock()
	return a, nil
}

func (vm *testVM) DetachVolume(ctx context.Context, project, attachmentID string) error {
	if err := vm.enter("DetachVolume"); err != nil {
		return err
	}
	vm.mu.Lock()
	_, ok := vm.atts[attachmentID]
	delete(vm.atts, attachmentID)
	vm.mu.Unlock()
	if !ok {
		return notFound("attachment", attachmentID)
	}
	vm.unserve(attachmentID)
	return nil
}

func (vm *testVM) Attachments(ctx context.Context, project, volumeID string) ([]Attachment, error) {
	if err := vm.enter("Attachments"); err != nil {
		return nil, err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if _, ok := vm.status[volumeID]; !ok {
		return nil, notFound("volume", volumeID)
	}
	var out []Attachment
	for id, a := range vm.atts {
		if a.volumeID == volumeID {
			out = append(out, Attachment{ID: id, ServerID: a.serverID})
		}
	}
	return out, nil
}

func (vm *testVM) DeleteVolume(ctx context.Context, project, volumeID string) error {
	if err := vm.enter("DeleteVolume"); err != nil {
		return err
	}
	vm.mu.Lock()
	_, ok := vm.status[volumeID]
	vm.mu.Unlock()
	if !ok {
		return notFound("volume", volumeID)
	}
	if err := vm.d.DeleteVolume(ctx, volumeID); err != nil {
		return err
	}
	vm.mu.Lock()
	delete(vm.status, volumeID)
	vm.mu.Unlock()
	return nil
}

func (vm *testVM) ChangedRanges(ctx context.Context, project, volumeID, fromSnapshotID, toSnapshotID string) ([]engine.Range, error) {
	if err := vm.enter("ChangedRanges"); err != nil {
		return nil, err
	}
	rs, err := vm.d.ChangedRanges(ctx, volumeID, fromSnapshotID, toSnapshotID)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Range, len(rs))
	for i, r := range rs {
		out[i] = engine.Range{Offset: r.Offset, Length: r.Length}
	}
	return out, nil
}

func (vm *testVM) EndBackup(ctx context.Context, project, volumeID, snapshotID string) error {
	if err := vm.enter("EndBackup"); err != nil {
		return err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.status[volumeID] != "backing-up" {
		return fmt.Errorf("volume %s is %s, not backing-up: %w", volumeID, vm.status[volumeID], volume.ErrInUse)
	}
	vm.status[volumeID] = vm.previous[volumeID]
	return nil
}

func (vm *testVM) EndRestore(ctx context.Context, project, volumeID string, success bool, failReason string) error {
	if err := vm.enter("EndRestore"); err != nil {
		return err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.status[volumeID] != "restoring-backup" {
		return fmt.Errorf("volume %s is %s, not restoring-backup: %w", volumeID, vm.status[volumeID], volume.ErrInUse)
	}
	vm.status[volumeID] = "available"
	if !success {
		vm.status[volumeID] = "error_restoring"
	}
	return nil
}

// live is a live restore the test volume manager runs: the real livefill
// device over the driver's volume, filled from the backup's NBD export.
type live struct {
	dev           *livefill.Device
	target        blockdev.Device
	source        blockdev.Device
	done          chan struct{}
	err           error
	backupID      string
	filled, total atomic.Int64
}

func (vm *testVM) StartLiveRestore(ctx context.Context, project, volumeID, backupID string, source Connection, size int64) error {
	if err := vm.enter("StartLiveRestore"); err != nil {
		return err
	}
	vm.mu.Lock()
	st := vm.status[volumeID]
	vm.mu.Unlock()
	if st != "restoring-backup" {
		return fmt.Errorf("volume %s is %s, not restoring-backup: %w", volumeID, st, volume.ErrInUse)
	}
	src, err := nbd.DialReconnecting(ctx, "tcp", net.JoinHostPort(source.Host, strconv.Itoa(source.Port)), nbd.DialOptions{ExportName: source.ExportName}, time.Minute)
	if err != nil {
		return err
	}
	target, err := vm.d.OpenVolume(ctx, volumeID, false)
	if err != nil {
		return err
	}
	dev, err := livefill.Open(target, src, filepath.Join(vm.t.TempDir(), volumeID+".state"), livefill.Options{SourceID: backupID, TargetZeroed: true})
	if err != nil {
		return err
	}
	l := &live{dev: dev, target: target, source: src, done: make(chan struct{}), backupID: backupID}
	vm.mu.Lock()
	vm.status[volumeID] = "available"
	if vm.lives == nil {
		vm.lives = map[string]*live{}
	}
	vm.lives[volumeID] = l
	vm.mu.Unlock()
	go func() {
		defer close(l.done)
		l.err = dev.Fill(context.Background(), func(done, total int64) { l.filled.Store(done); l.total.Store(total) })
		dev.Close()
		target.Close()
		src.Close()
	}()
	return nil
}

func (vm *testVM) LiveRestore(ctx context.Context, project, volumeID string) (LiveRestore, error) {
	if err := vm.enter("LiveRestore"); err != nil {
		return LiveRestore{}, err
	}
	vm.mu.Lock()
	l, ok := vm.lives[volumeID]
	_, exists := vm.status[volumeID]
	vm.mu.Unlock()
	if !exists {
		return LiveRestore{}, notFound("volume", volumeID)
	}
	if !ok {
		if vm.statusOf(volumeID) == "restoring-backup" {
			return LiveRestore{Pending: true}, nil
		}
		return LiveRestore{Done: true}, nil
	}
	select {
	case <-l.done:
		if l.err != nil {
			return LiveRestore{Failed: true, Reason: l.err.Error()}, nil
		}
		return LiveRestore{Done: true, Filled: l.total.Load(), Total: l.total.Load()}, nil
	default:
		return LiveRestore{Filled: l.filled.Load(), Total: l.total.Load()}, nil
	}
}

var _ VolumeManager = (*testVM)(nil)

// sameBytes reports where two volumes' contents first differ.
func sameBytes(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d bytes, want %d", len(got), len(want))
	}
	if bytes.Equal(got, want) {
		return nil
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("first difference at byte %d", i)
		}
	}
	return errors.New("unreachable")
}
