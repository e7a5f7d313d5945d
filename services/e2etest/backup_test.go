package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	blocks    = 128
	blockSize = 1 << 20
)

func dialExport(t testing.TB, ci *volumev1.ConnectionInfo) *nbd.Client {
	t.Helper()
	return dialExportWith(t, ci, mtls.Files{})
}

// dialExportWith connects to an NBD export, with mutual TLS (certificate
// files f) when the export requires it.
func dialExportWith(t testing.TB, ci *volumev1.ConnectionInfo, f mtls.Files) *nbd.Client {
	t.Helper()
	d := ci.GetData()
	opts := nbd.DialOptions{ExportName: d.GetExportName()}
	if d.GetTls() {
		cfg, err := mtls.ClientConfig(f)
		if err != nil || cfg == nil {
			t.Fatalf("the export requires TLS: certificate files %v: %v", f, err)
		}
		cfg.ServerName = d.GetHost()
		opts.TLSConfig = cfg
	}
	c, err := nbd.Dial(context.Background(), "tcp", net.JoinHostPort(d.GetHost(), strconv.Itoa(int(d.GetPort()))), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// attached creates a volume of size bytes and attaches it read-write over NBD.
func attached(t testing.TB, s *Stack, size int64) (*volumev1.Volume, *volumev1.Attachment, *nbd.Client) {
	t.Helper()
	ctx := context.Background()
	cr, err := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: size, Name: "attached"}})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: cr.GetVolume().GetId(), InstanceUuid: "vm-1", Connector: &volumev1.Connector{Host: "compute-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	return cr.GetVolume(), ar.GetAttachment(), dialExportWith(t, ar.GetAttachment().GetConnectionInfo(), s.TLS)
}

// waitBackup waits until the backup leaves the transient statuses.
func waitBackup(t *testing.T, s *Stack, id string, timeout time.Duration) *backupv1.Backup {
	t.Helper()
	return waitBackupIn(t, s, project, id, timeout)
}

// waitBackupIn is waitBackup for a backup of another project.
func waitBackupIn(t *testing.T, s *Stack, projectID, id string, timeout time.Duration) *backupv1.Backup {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := s.Backups.GetBackup(context.Background(), &backupv1.GetBackupRequest{ProjectId: projectID, BackupId: id})
		if err != nil {
			t.Fatalf("get backup: %v", err)
		}
		switch r.GetBackup().GetStatus() {
		case "creating", "restoring", "deleting":
		default:
			return r.GetBackup()
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup %s still %s after %v", id, r.GetBackup().GetStatus(), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func volumeStatus(t *testing.T, s *Stack, id string) *volumev1.Volume {
	t.Helper()
	r, err := s.Volumes.GetVolume(context.Background(), &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetVolume()
}

// noLeftovers asserts no temporary snapshot, temporary volume or backup
// export exists (only the user's own attachments may stay).
func noLeftovers(t *testing.T, s *Stack, userExports int) {
	t.Helper()
	ctx := context.Background()
	sn, err := s.Volumes.ListSnapshots(ctx, &volumev1.ListSnapshotsRequest{ProjectId: project, IncludeTemporary: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range sn.GetSnapshots() {
		if x.GetTemporary() {
			t.Errorf("temporary snapshot %s left (%s)", x.GetId(), x.GetStatus())
		}
	}
	vl, err := s.Volumes.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: project, IncludeTemporary: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range vl.GetVolumes() {
		if x.GetTemporary() {
			t.Errorf("temporary volume %s left (%s)", x.GetId(), x.GetStatus())
		}
	}
	if n := s.Metric(s.MetricsAddr, "blockvault_exports"); int(n) != userExports {
		t.Errorf("%v NBD exports served, want %d (the user's own)", n, userExports)
	}
	if s.Ceph != nil {
		rbdLeftovers(t, s)
	}
	entries, _ := os.ReadDir(s.PoolDir + "/snapshots")
	for _, e := range entries {
		files, _ := os.ReadDir(s.PoolDir + "/snapshots/" + e.Name())
		if len(files) > 0 {
			t.Errorf("snapshot files left in the pool: %s/%v", e.Name(), len(files))
		}
	}
}

// writer writes rounds over the first blocks of a device: round r writes
// byte r into every block, in order.
type writer struct {
	stop   atomic.Bool
	rounds atomic.Int64
	errs   atomic.Int64
	wg     sync.WaitGroup
}

func startWriter(dev *nbd.Client) *writer {
	w := &writer{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		buf := make([]byte, blockSize)
		for r := 1; !w.stop.Load(); r++ {
			for i := range buf {
				buf[i] = byte(r)
			}
			for b := 0; b < blocks && !w.stop.Load(); b++ {
				if _, err := dev.WriteAt(buf, int64(b)*blockSize); err != nil {
					w.errs.Add(1)
				}
			}
			w.rounds.Store(int64(r))
		}
	}()
	return w
}

func (w *writer) halt() { w.stop.Store(true); w.wg.Wait() }

// waitRounds waits until the writer has written every block n times (the
// backup under test then starts with the writer in full swing, on a slow
// machine as on a fast one).
func (w *writer) waitRounds(t testing.TB, n int64) {
	t.Helper()
	for start := time.Now(); w.rounds.Load() < n; time.Sleep(10 * time.Millisecond) {
		if w.errs.Load() > 0 {
			t.Fatalf("the writer saw %d errors before round %d", w.errs.Load(), n)
		}
		if time.Since(start) > testenv.Patience {
			t.Fatalf("the writer did not finish round %d within %v (%d rounds done)", n, testenv.Patience, w.rounds.Load())
		}
	}
}

// pointInTime checks the rounds property on a device.
func pointInTime(dev *nbd.Client) error {
	buf := make([]byte, blockSize)
	var first byte
	boundary := -1
	for b := 0; b < blocks; b++ {
		if _, err := dev.ReadAt(buf, int64(b)*blockSize); err != nil {
			return err
		}
		v := buf[0]
		if !bytes.Equal(buf, bytes.Repeat([]byte{v}, blockSize)) {
			return fmt.Errorf("block %d is torn", b)
		}
		switch {
		case b == 0:
			first = v
		case v == first && boundary < 0:
		case v == first-1 && first != 0:
			if boundary < 0 {
				boundary = b
			}
		default:
			return fmt.Errorf("block %d holds round %d after round %d at block 0 (boundary %d)", b, v, first, boundary)
		}
	}
	return nil
}

func restoreAndCheck(t *testing.T, s *Stack, backupID string) {
	t.Helper()
	dev, done := relRestored(t, s, backupID)
	defer done()
	if err := pointInTime(dev); err != nil {
		t.Fatalf("the restored volume is not a point in time: %v", err)
	}
}

// TestNonDisruptiveBackup: a writer keeps writing through NBD during a forced
// backup of its volume, never errs, and the restore is a point in time; each
// strategy is taken when it should be and leaves nothing behind.
func TestNonDisruptiveBackup(t *testing.T) {
	cases := []struct {
		name     string
		opts     func(t *testing.T) Options
		strategy string
	}{
		{"attached-snapshot/copy-before-write", func(t *testing.T) Options { return Options{} }, backupjob.StrategyAttachedSnapshot},
		{"temporary-volume", func(t *testing.T) Options {
			return Options{VolumeManagerArgs: []string{"--disable-snapshot-export"}}
		}, backupjob.StrategyTemporaryVolume},
		{"local-snapshot/reflink", func(t *testing.T) Options {
			return Options{SameNode: true, VolumeManagerDir: testenv.XFSDir(t, 4<<30)}
		}, backupjob.StrategyLocalSnapshot},
		{"attached-snapshot/reflink", func(t *testing.T) Options {
			return Options{VolumeManagerDir: testenv.XFSDir(t, 4<<30)}
		}, backupjob.StrategyAttachedSnapshot},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { nonDisruptiveBackup(t, Start(t, tc.opts(t)), tc.strategy) })
	}
}

// nonDisruptiveBackup is TestNonDisruptiveBackup on one stack: a forced
// backup of a volume attached and written through NBD, taken with strategy,
// restored as a point in time, leaving no temporary resource behind.
func nonDisruptiveBackup(t *testing.T, s *Stack, strategy string) {
	ctx := context.Background()
	vol, _, dev := attached(t, s, 256<<20)
	w := startWriter(dev)
	w.waitRounds(t, 1)

	// Without force an in-use volume is refused and nothing changes.
	_, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId()}})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "Backing up an in-use volume must use the force flag." {
		t.Fatalf("backup without force: %v", err)
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
		t.Fatalf("a refused backup changed the volume to %s", v.GetStatus())
	}

	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true, Name: "nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	if cr.GetBackup().GetStatus() != "creating" {
		t.Fatalf("a new backup is %s", cr.GetBackup().GetStatus())
	}
	// A second backup of the same volume while one runs is refused.
	if _, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a concurrent backup of one volume: %v", err)
	}
	b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	w.halt()
	if b.GetStatus() != "available" {
		t.Fatalf("backup ended %s: %s", b.GetStatus(), b.GetFailReason())
	}
	if b.GetStrategy() != strategy {
		t.Fatalf("strategy %q, want %q", b.GetStrategy(), strategy)
	}
	if w.errs.Load() != 0 || w.rounds.Load() < 1 {
		t.Fatalf("the writer saw %d errors in %d rounds", w.errs.Load(), w.rounds.Load())
	}
	if b.GetTempSnapshotId() != "" || b.GetTempVolumeId() != "" {
		t.Fatalf("temporary ids not cleared: %v", b)
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" || len(v.GetAttachments()) != 1 {
		t.Fatalf("after the backup the volume is %s with %d attachments", v.GetStatus(), len(v.GetAttachments()))
	}
	noLeftovers(t, s, 1)
	restoreAndCheck(t, s, b.GetId())
	noLeftovers(t, s, 1)
}

// TestAvailableVolumeBackupAndRestoreChecks: an available volume needs no
// force; restore into a too-small or in-use volume is refused with 400.
func TestAvailableVolumeBackupAndRestoreChecks(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	cr, _ := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: 64 << 20}})
	vol := cr.GetVolume()
	code, body := s.REST("POST", "/v3/"+project+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol.GetId(), "name": "b1"}})
	if code != 202 {
		t.Fatalf("REST create backup: %d %v", code, body)
	}
	id := body["backup"].(map[string]any)["id"].(string)
	if b := waitBackup(t, s, id, testenv.Patience); b.GetStatus() != "available" || b.GetStrategy() != backupjob.StrategyVolume {
		t.Fatalf("backup of an available volume: %v", b)
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "available" {
		t.Fatalf("volume is %s after the backup", v.GetStatus())
	}
	small, _ := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: 16 << 20}})
	code, body = s.REST("POST", "/v3/"+project+"/backups/"+id+"/restore", map[string]any{"restore": map[string]any{"volume_id": small.GetVolume().GetId()}})
	if code != 400 || body["badRequest"] == nil {
		t.Fatalf("restore into a too-small volume: %d %v", code, body)
	}
	big, _ := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: 128 << 20}})
	s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{VolumeUuid: big.GetVolume().GetId()}})
	code, body = s.REST("POST", "/v3/"+project+"/backups/"+id+"/restore", map[string]any{"restore": map[string]any{"volume_id": big.GetVolume().GetId()}})
	if code != 400 || body["badRequest"] == nil {
		t.Fatalf("restore into an in-use volume: %d %v", code, body)
	}
	if b := waitBackup(t, s, id, testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("refused restores changed the backup to %s", b.GetStatus())
	}
	// Delete only from available or error; then it is gone.
	if code, body = s.REST("DELETE", "/v3/"+project+"/backups/"+id, nil); code != 202 {
		t.Fatalf("delete: %d %v", code, body)
	}
	deadline := time.Now().Add(testenv.Patience)
	for {
		if code, _ = s.REST("GET", "/v3/"+project+"/backups/"+id, nil); code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted backup is still there")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fill writes random data over a device so backups take a while.
func fill(t *testing.T, dev *nbd.Client) {
	t.Helper()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < dev.Size(); off += int64(len(buf)) {
		rand.Read(buf)
		if _, err := dev.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
}

func waitProgress(t *testing.T, s *Stack, id, op string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for time.Now().Before(deadline) {
		r, err := s.Backups.GetBackup(context.Background(), &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
		if err == nil && r.GetBackup().GetProgress().GetOperation() == op && r.GetBackup().GetProgress().GetBytesDone() > 0 &&
			r.GetBackup().GetProgress().GetBytesDone() < r.GetBackup().GetProgress().GetBytesTotal() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s progress seen", op)
}

// TestBackupServiceKilledMidBackup: SIGKILL mid-backup and restart leaves
// the backup error, the volume in-use and no temporary resource; the same
// mid-restore leaves the backup available and the target error_restoring.
func TestBackupServiceKilledMidBackup(t *testing.T) {
	backupServiceKilledMidBackup(t, Start(t, Options{}))
}

// backupServiceKilledMidBackup is TestBackupServiceKilledMidBackup on one
// stack.
func backupServiceKilledMidBackup(t *testing.T, s *Stack) {
	ctx := context.Background()
	vol, _, dev := attached(t, s, 1<<30)
	fill(t, dev)
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	waitProgress(t, s, cr.GetBackup().GetId(), "backup")
	s.Backup.Kill()
	s.Backup.Start()
	s.WaitHealthy(s.Backup)
	b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	if b.GetStatus() != "error" || b.GetFailReason() != backupjob.MsgResetOnRestart {
		t.Fatalf("after the restart the backup is %s: %q", b.GetStatus(), b.GetFailReason())
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" || v.GetPreviousStatus() != "" {
		t.Fatalf("after the restart the volume is %s (previous %q)", v.GetStatus(), v.GetPreviousStatus())
	}
	noLeftovers(t, s, 1)

	// A good backup, then a restore killed half way.
	cr, err = s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	if b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("second backup: %s %s", b.GetStatus(), b.GetFailReason())
	}
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: cr.GetBackup().GetId(), Restore: &backupv1.RestoreInput{}})
	if err != nil {
		t.Fatal(err)
	}
	waitProgress(t, s, cr.GetBackup().GetId(), "restore")
	s.Backup.Kill()
	s.Backup.Start()
	s.WaitHealthy(s.Backup)
	if b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("after a killed restore the backup is %s", b.GetStatus())
	}
	if v := volumeStatus(t, s, rr.GetRestore().GetVolumeId()); v.GetStatus() != "error_restoring" || len(v.GetAttachments()) != 0 {
		t.Fatalf("after a killed restore the target is %s with %d attachments", v.GetStatus(), len(v.GetAttachments()))
	}
	noLeftovers(t, s, 1)
}

// TestFaults: the volume manager killed mid-backup and back two seconds
// later (the backup reconnects and completes), the source's export removed
// mid-read and a full repository (each ends the backup in error with a
// useful reason): the volume back in its previous status, nothing leaked.
func TestFaults(t *testing.T) {
	t.Run("volume manager unreachable", func(t *testing.T) {
		volumeManagerKilledMidBackup(t, Start(t, Options{NoGateway: true}))
	})
	t.Run("source read failing", func(t *testing.T) {
		// The temporary snapshot's export is pulled from under the reading
		// backup service (the volume manager stays up): reads fail.
		s := Start(t, Options{NoGateway: true, BackupArgs: []string{"--strategy", "attached-snapshot"}})
		ctx := context.Background()
		vol, _, dev := attached(t, s, 1<<30)
		fill(t, dev)
		cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
		if err != nil {
			t.Fatal(err)
		}
		id := cr.GetBackup().GetId()
		waitProgress(t, s, id, "backup")
		gb, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
		if err != nil || gb.GetBackup().GetTempSnapshotId() == "" {
			t.Fatalf("no temporary snapshot recorded: %v %v", err, gb)
		}
		if _, err := volumev1.NewVolumeManagerInternalServiceClient(s.dial(s.VolumeManager.Addr)).DetachSnapshot(ctx, &volumev1.DetachSnapshotRequest{ProjectId: project, SnapshotId: gb.GetBackup().GetTempSnapshotId()}); err != nil {
			t.Fatal(err)
		}
		b := waitBackup(t, s, id, testenv.Patience)
		if b.GetStatus() != "error" || !strings.Contains(b.GetFailReason(), "read") {
			t.Fatalf("backup whose source fails: %s %q", b.GetStatus(), b.GetFailReason())
		}
		t.Logf("fail_reason: %s", b.GetFailReason())
		if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
			t.Fatalf("the volume is %s", v.GetStatus())
		}
		noLeftovers(t, s, 1)
		// The volume is still usable: the user's writes go on.
		if _, err := dev.WriteAt(make([]byte, 4096), 0); err != nil {
			t.Fatalf("the user's export after the failed backup: %v", err)
		}
	})
	t.Run("repository full", func(t *testing.T) {
		testenv.RequireRoot(t)
		repo := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", repo).CombinedOutput(); err != nil {
			testenv.Missing(t, "tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", repo).Run() })
		s := Start(t, Options{NoGateway: true, RepositoryDir: repo})
		ctx := context.Background()
		vol, _, dev := attached(t, s, 64<<20)
		fill(t, dev)
		cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
		if err != nil {
			t.Fatal(err)
		}
		b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
		if b.GetStatus() != "error" || !strings.Contains(b.GetFailReason(), "no space") {
			t.Fatalf("backup into a full repository: %s %q", b.GetStatus(), b.GetFailReason())
		}
		if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
			t.Fatalf("the volume is %s", v.GetStatus())
		}
		noLeftovers(t, s, 1)
	})
}

// volumeManagerKilledMidBackup is TestFaults' "volume manager unreachable"
// on one stack: the volume manager SIGKILLed during a backup of an
// attached volume and started again; the backup completes and verifies.
func volumeManagerKilledMidBackup(t *testing.T, s *Stack) {
	ctx := context.Background()
	vol, att, dev := attached(t, s, 1<<30)
	fill(t, dev)
	dev.Close()
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	waitProgress(t, s, cr.GetBackup().GetId(), "backup")
	s.VolumeManager.Kill()
	time.Sleep(2 * time.Second)
	s.VolumeManager.Start()
	s.WaitHealthy(s.VolumeManager)
	// The NBD connection is dialed again once the volume manager is
	// back (its exports return under the same names): the backup goes
	// on and completes, and it is whole.
	b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	if b.GetStatus() != "available" {
		t.Fatalf("backup through a volume manager crash: %s %q", b.GetStatus(), b.GetFailReason())
	}
	if v, err := s.Backups.VerifyBackup(ctx, &backupv1.VerifyBackupRequest{ProjectId: project, BackupId: b.GetId()}); err != nil || !v.GetOk() || v.GetChunksChecked() == 0 {
		t.Fatalf("verify the backup made through a crash: %v %v", err, v)
	}
	deadline := time.Now().Add(testenv.Patience)
	for volumeStatus(t, s, vol.GetId()).GetStatus() != "in-use" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
		t.Fatalf("the volume is %s", v.GetStatus())
	}
	noLeftovers(t, s, 1)
	// The user's export is back too, and takes writes (on rbd: the new
	// process takes the image's exclusive lock from the dead one).
	dev = dialExportWith(t, att.GetConnectionInfo(), s.TLS)
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if _, err := dev.WriteAt(data, 1<<20); err != nil {
		t.Fatalf("write to the user's export after the restart: %v", err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatalf("flush the user's export after the restart: %v", err)
	}
	got := make([]byte, len(data))
	if _, err := dev.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back from the user's export after the restart: %v", err)
	}
}
