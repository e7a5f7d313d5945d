package e2etest

// Reliability end to end: a backup that said available survives a crash of
// the backup service; fifty backups requested at once all complete under
// the concurrency limit while the API stays responsive; a PostgreSQL
// restart during a backup never leaves it stuck; a repository that stalls
// and recovers does not either.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestReliabilityBackupSurvivesCrashAtAvailable: the moment GetBackup says
// available the backup service is SIGKILLed (a power-cut-like crash of the
// process) and started again. The backup must still be available (the
// restart recovery must not touch it), verify clean, restore byte for byte
// (the half of the volume nobody wrote during the backup) and as a point in
// time (the half a writer kept writing), and serve as the parent of an
// incremental backup; the volume is in-use with nothing left behind.
func TestReliabilityBackupSurvivesCrashAtAvailable(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	relLogOnFailure(t, s)
	ctx := context.Background()
	vol, _, dev := attached(t, s, 256<<20)
	// Blocks 128..255: random data, recorded. Blocks 0..127: the writer's
	// rounds, going on during the backup.
	static := relFill(t, dev, blocks*blockSize, 128<<20)
	w := startWriter(dev)
	w.waitRounds(t, 1)

	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true, Name: "before-the-crash"}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	// Ask as fast as the service answers; kill it the moment it says available.
	var b *backupv1.Backup
	deadline := time.Now().Add(testenv.Patience)
	polls := 0
	for {
		if b, err = relGetBackup(s, id); err != nil {
			t.Fatalf("get backup: %v", err)
		}
		polls++
		if b.GetStatus() != "creating" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backup did not finish in 2 minutes")
		}
	}
	s.Backup.Kill()
	w.halt()
	if b.GetStatus() != "available" {
		t.Fatalf("the backup ended %s: %q", b.GetStatus(), b.GetFailReason())
	}
	t.Logf("killed the backup service after %d polls, as the backup turned available (%d objects, updated_at %s)", polls, b.GetObjectCount(), b.GetUpdatedAt())
	if w.errs.Load() != 0 || w.rounds.Load() < 1 {
		t.Fatalf("the writer saw %d errors in %d rounds", w.errs.Load(), w.rounds.Load())
	}

	s.Backup.Start()
	s.WaitHealthy(s.Backup)
	after, err := relGetBackup(s, id)
	if err != nil {
		t.Fatal(err)
	}
	if after.GetStatus() != "available" || after.GetFailReason() != "" || after.GetObjectCount() != b.GetObjectCount() || after.GetObjectCount() <= 0 {
		t.Fatalf("after the crash and restart the backup is %s (%q) with %d objects; before the crash: available with %d",
			after.GetStatus(), after.GetFailReason(), after.GetObjectCount(), b.GetObjectCount())
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" || v.GetPreviousStatus() != "" || len(v.GetAttachments()) != 1 {
		t.Fatalf("after the restart the volume is %s (previous %q) with %d attachments", v.GetStatus(), v.GetPreviousStatus(), len(v.GetAttachments()))
	}
	noLeftovers(t, s, 1)
	n := relVerify(t, s, id)
	t.Logf("verify after the restart: ok, %d chunks checked", n)

	rd, done := relRestored(t, s, id)
	if err := pointInTime(rd); err != nil {
		t.Fatalf("the written-during-backup half of the restore is not a point in time: %v", err)
	}
	if err := relSameContent(rd, blocks*blockSize, static); err != nil {
		t.Fatalf("the restore differs from what was written: %v", err)
	}
	done()

	// The service goes on: an incremental backup on top of the one that
	// survived the crash.
	cr, err = s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true, Incremental: true}})
	if err != nil {
		t.Fatalf("incremental after the crash: %v", err)
	}
	inc := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	if inc.GetStatus() != "available" || !inc.GetIsIncremental() || inc.GetParentId() != id {
		t.Fatalf("incremental after the crash: %s %q incremental=%v parent %q (want %s)", inc.GetStatus(), inc.GetFailReason(), inc.GetIsIncremental(), inc.GetParentId(), id)
	}
	relVerify(t, s, inc.GetId())
	noLeftovers(t, s, 1)
}

// TestReliabilityFiftyBackupsAtOnce: 50 small volumes (half in-use, half
// available) with data; their 50 backups are requested at the same moment
// with --max-concurrent 4. Every request is accepted, every backup ends
// available, the queue is used and never more than 4 run, every volume is
// back in its previous status with nothing left behind, and a sample
// restores byte for byte. Meanwhile the latency of GetVolume and
// ListBackups is measured (logged; only a generous bound is asserted), and
// the backup service's peak RSS is logged.
func TestReliabilityFiftyBackupsAtOnce(t *testing.T) {
	const (
		n     = 50
		size  = 16 << 20
		limit = 4
	)
	s := Start(t, Options{NoGateway: true, BackupArgs: []string{"--max-concurrent", fmt.Sprint(limit)}})
	relLogOnFailure(t, s)
	ctx := context.Background()
	type vol struct {
		id, status string
		sums       [][32]byte
	}
	vols := make([]vol, n)
	setup := time.Now()
	for i := range vols {
		cr, err := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: size, Name: fmt.Sprintf("load-%02d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		id := cr.GetVolume().GetId()
		ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
			VolumeUuid: id, InstanceUuid: fmt.Sprintf("vm-%02d", i), Connector: &volumev1.Connector{Host: "compute-1"}}})
		if err != nil {
			t.Fatal(err)
		}
		dev := dialExport(t, ar.GetAttachment().GetConnectionInfo())
		vols[i] = vol{id: id, status: "in-use", sums: relFill(t, dev, 0, 4<<20)}
		if i%2 == 1 {
			dev.Close()
			if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: ar.GetAttachment().GetId()}); err != nil {
				t.Fatal(err)
			}
			vols[i].status = "available"
		}
	}
	for _, v := range vols {
		if got := volumeStatus(t, s, v.id).GetStatus(); got != v.status {
			t.Fatalf("volume %s is %s before the backups, want %s", v.id, got, v.status)
		}
	}
	t.Logf("%d volumes of %s with 4 MiB of data each set up in %v", n, relMiB(size), time.Since(setup).Round(time.Millisecond))
	baseRSS := relProcStatus(t, s.Backup, "VmRSS")
	peakReset := relResetPeakRSS(s.Backup)

	// Watch the job gauges for the whole run.
	var (
		mu                    sync.Mutex
		maxRunning, maxQueued float64
		samples, sampleErrs   int
	)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			r, err1 := relMetric(s.BackupMetrics, "blockvault_jobs_running")
			q, err2 := relMetric(s.BackupMetrics, "blockvault_jobs_queued")
			mu.Lock()
			if err1 != nil || err2 != nil {
				sampleErrs++
			} else {
				samples++
				maxRunning, maxQueued = max(maxRunning, r), max(maxQueued, q)
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// All 50 requests at the same moment.
	ids := make([]string, n)
	errs := make([]error, n)
	createLat := make(relLatencies, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			t0 := time.Now()
			r, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{
				VolumeId: vols[i].id, Force: true, Name: fmt.Sprintf("load-%02d", i)}})
			createLat[i] = time.Since(t0)
			ids[i], errs[i] = r.GetBackup().GetId(), err
		}()
	}
	started := time.Now()
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("CreateBackup of volume %d (%s): %v", i, vols[i].id, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("CreateBackup x%d in parallel: %v", n, createLat)

	// Latency of reads while the backups run.
	var getLat, listLat relLatencies
	during := 0
	for i := 0; i < 100; i++ {
		t0 := time.Now()
		_, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: vols[i%n].id})
		getLat = append(getLat, time.Since(t0))
		if err != nil {
			t.Errorf("GetVolume under load: %v", err)
		}
		t0 = time.Now()
		lr, err := s.Backups.ListBackups(ctx, &backupv1.ListBackupsRequest{ProjectId: project})
		listLat = append(listLat, time.Since(t0))
		if err != nil {
			t.Errorf("ListBackups under load: %v", err)
		} else if len(lr.GetBackups()) != n {
			t.Errorf("ListBackups under load lists %d backups, want %d", len(lr.GetBackups()), n)
		} else {
			for _, b := range lr.GetBackups() {
				if b.GetStatus() == "creating" {
					during++
					break
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("GetVolume under load:   %v", getLat)
	t.Logf("ListBackups under load: %v (%d of 100 lists still showed a backup creating)", listLat, during)
	if during == 0 {
		t.Errorf("no ListBackups call saw a backup still creating: the latencies were not measured under load")
	}

	// All end available.
	for i, id := range ids {
		b := waitBackup(t, s, id, 3*time.Minute)
		if b.GetStatus() != "available" || b.GetFailReason() != "" || b.GetObjectCount() <= 0 {
			t.Errorf("backup %d (%s) ended %s (%q) with %d objects", i, id, b.GetStatus(), b.GetFailReason(), b.GetObjectCount())
		}
	}
	elapsed := time.Since(started)
	// Responsive: a read waits for no job. One that queued behind the
	// backups would take a good part of the time they all took; the
	// figures themselves (2.4 s at most on a loaded 2-core machine, 21 ms
	// for GetVolume) are a speed, not a property, and are only logged.
	for name, l := range map[string]relLatencies{"GetVolume": getLat, "ListBackups": listLat} {
		if m := l.quantile(1); m > elapsed/4 {
			t.Errorf("%s took up to %v while the %d backups ran, over a quarter of the %v they took: it waited for the jobs", name, m, n, elapsed.Round(time.Millisecond))
		}
	}
	close(stopWatch)
	<-watchDone
	mu.Lock()
	t.Logf("all %d backups settled in %v; gauges sampled %d times (%d errors): max running %v, max queued %v", n, elapsed.Round(time.Millisecond), samples, sampleErrs, maxRunning, maxQueued)
	if maxRunning > limit {
		t.Errorf("blockvault_jobs_running reached %v with --max-concurrent %d", maxRunning, limit)
	}
	if maxRunning < 1 || maxQueued < 1 {
		t.Errorf("the gauges never showed the work: max running %v, max queued %v", maxRunning, maxQueued)
	}
	mu.Unlock()
	if got := s.Metric(s.BackupMetrics, `blockvault_jobs_total{operation="backup",result="ok"}`); got != n {
		t.Errorf("jobs_total ok = %v, want %d", got, n)
	}
	if q := s.Metric(s.BackupMetrics, "blockvault_jobs_queued"); q != 0 {
		t.Errorf("%v jobs still queued after all ended", q)
	}
	peak := relProcStatus(t, s.Backup, "VmHWM")
	vmPeak := relProcStatus(t, s.VolumeManager, "VmHWM")
	t.Logf("backup-service RSS: %s before the load, peak %s (peak reset before the load: %v); volume-manager peak RSS %s",
		relMiB(baseRSS), relMiB(peak), peakReset, relMiB(vmPeak))

	for _, v := range vols {
		if got := volumeStatus(t, s, v.id); got.GetStatus() != v.status || got.GetPreviousStatus() != "" {
			t.Errorf("volume %s is %s (previous %q) after its backup, want %s", v.id, got.GetStatus(), got.GetPreviousStatus(), v.status)
		}
	}
	noLeftovers(t, s, n/2)
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("backup id %s handed out twice", id)
		}
		seen[id] = true
	}
	if t.Failed() {
		t.FailNow()
	}
	// A sample restores byte for byte: the first in-use and the last
	// available volume.
	for _, i := range []int{0, n - 1} {
		relVerify(t, s, ids[i])
		rd, done := relRestored(t, s, ids[i])
		if err := relSameContent(rd, 0, vols[i].sums); err != nil {
			t.Errorf("restore of backup %d (volume %s): %v", i, vols[i].status, err)
		}
		done()
	}
}

// TestReliabilityPostgresRestartDuringBackup: both daemons on PostgreSQL;
// the cluster crashes (pg_ctl stop -m immediate) in the middle of a forced
// backup of a filled 1 GiB volume and comes back 2 s later. The backup must
// settle, available (then it verifies and restores byte for byte) or error
// with a reason, never stay creating; the API answers again; the volume
// returns in-use; nothing is left behind; and a new backup then succeeds.
func TestReliabilityPostgresRestartDuringBackup(t *testing.T) {
	pg := storetest.NewCluster(t)
	s := Start(t, Options{NoGateway: true, DatabaseURL: pg.URL("postgres")})
	relLogOnFailure(t, s)
	ctx := context.Background()
	vol, _, dev := attached(t, s, 1<<30)
	sums := relFill(t, dev, 0, 1<<30)
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	waitProgress(t, s, id, "backup")
	before, _ := relGetBackup(s, id)
	pg.Stop(t, "immediate")
	down := time.Now()
	running, _ := relMetric(s.BackupMetrics, "blockvault_jobs_running")
	t.Logf("PostgreSQL crashed at %s of %s backed up; jobs running: %v",
		relMiB(before.GetProgress().GetBytesDone()), relMiB(before.GetProgress().GetBytesTotal()), running)
	if b, err := relGetBackup(s, id); err == nil {
		t.Logf("GetBackup with the database down: %s", b.GetStatus())
	} else {
		t.Logf("GetBackup with the database down: %v", err)
	}
	time.Sleep(2 * time.Second)
	pg.Start(t)
	running, _ = relMetric(s.BackupMetrics, "blockvault_jobs_running")
	t.Logf("PostgreSQL back after %v; jobs running: %v", time.Since(down).Round(time.Millisecond), running)

	b, errs := relSettle(t, s, id, 3*time.Minute)
	if len(errs) > 0 {
		t.Logf("GetBackup failed %d times after PostgreSQL came back; first: %v", len(errs), errs[0])
	}
	if len(errs) > 5 {
		t.Errorf("GetBackup kept failing after PostgreSQL came back (%d failures)", len(errs))
	}
	switch b.GetStatus() {
	case "available":
		t.Logf("the backup ended available (%d objects, fail_reason %q)", b.GetObjectCount(), b.GetFailReason())
		if b.GetFailReason() != "" {
			t.Errorf("available with a fail_reason: %q", b.GetFailReason())
		}
		relVerify(t, s, id)
		rd, done := relRestored(t, s, id)
		if err := relSameContent(rd, 0, sums); err != nil {
			t.Fatalf("the restore differs from what was written: %v", err)
		}
		done()
	case "error":
		t.Logf("the backup ended error: %q", b.GetFailReason())
		if b.GetFailReason() == "" {
			t.Errorf("the backup ended error without a fail_reason")
		}
	default:
		t.Fatalf("the backup is still %s 3 minutes after PostgreSQL came back", b.GetStatus())
	}
	if v := relWaitVolume(t, s, vol.GetId(), "in-use", testenv.Patience); v.GetStatus() != "in-use" || len(v.GetAttachments()) != 1 {
		t.Fatalf("the volume is %s with %d attachments after the backup", v.GetStatus(), len(v.GetAttachments()))
	}
	noLeftovers(t, s, 1)

	// Both daemons work on the restarted database: a new backup succeeds.
	cr, err = s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatalf("a backup after the PostgreSQL restart: %v", err)
	}
	if b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("a backup after the PostgreSQL restart ended %s: %q", b.GetStatus(), b.GetFailReason())
	}
	noLeftovers(t, s, 1)
}

// TestReliabilityPostgresDownWhenBackupEnds: PostgreSQL stops mid-backup
// and comes back only after the backup job has finished reading and
// writing the repository, so the job's end (release of the source, the
// volume's status, the backup's final status) meets a database that is
// down. Once the database is back the backup must not be left creating,
// the volume must return to its previous status, nothing may be left, and
// an available backup must verify. Two layouts: both daemons on the
// cluster with an in-use volume (temporary snapshot), and the backup
// service alone on it (the volume manager on SQLite) with an available
// volume (read directly, no temporary resource).
func TestReliabilityPostgresDownWhenBackupEnds(t *testing.T) {
	t.Run("both daemons, in-use volume", func(t *testing.T) {
		pg := storetest.NewCluster(t)
		s := Start(t, Options{NoGateway: true, DatabaseURL: pg.URL("postgres")})
		relLogOnFailure(t, s)
		vol, _, dev := attached(t, s, 1<<30)
		relFill(t, dev, 0, 1<<30)
		relOutageAtTheEnd(t, s, pg, vol.GetId(), "in-use", 1)
	})
	t.Run("backup service alone, available volume", func(t *testing.T) {
		pg := storetest.NewCluster(t)
		s := Start(t, Options{NoGateway: true, BackupArgs: []string{"--database-url", pg.URL("postgres")}})
		relLogOnFailure(t, s)
		vol, att, dev := attached(t, s, 1<<30)
		relFill(t, dev, 0, 1<<30)
		dev.Close()
		if _, err := s.Volumes.DetachVolume(context.Background(), &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: att.GetId()}); err != nil {
			t.Fatal(err)
		}
		relOutageAtTheEnd(t, s, pg, vol.GetId(), "available", 0)
	})
}

// relOutageAtTheEnd backs up volID and stops PostgreSQL from mid-backup
// until the job has ended, then checks the outcome.
func relOutageAtTheEnd(t *testing.T, s *Stack, pg *storetest.Cluster, volID, volStatus string, userExports int) {
	t.Helper()
	ctx := context.Background()
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: volID, Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	waitProgress(t, s, id, "backup")
	pg.Stop(t, "fast")
	down := time.Now()
	// The database stays down while the rest of the volume is read and the
	// job reaches its end (the final status, the cleanup calls): the job
	// must wait for it rather than give up or drop the data.
	time.Sleep(8 * time.Second)
	pg.Start(t)
	t.Logf("PostgreSQL was down %v", time.Since(down).Round(time.Millisecond))

	b, errs := relSettle(t, s, id, 90*time.Second)
	if len(errs) > 0 {
		t.Logf("GetBackup failed %d times after PostgreSQL came back; first: %v", len(errs), errs[0])
	}
	switch b.GetStatus() {
	case "available":
		relVerify(t, s, id)
	case "error":
		if b.GetFailReason() == "" {
			t.Errorf("the backup ended error without a fail_reason")
		}
		t.Logf("the backup ended error: %q", b.GetFailReason())
	default:
		t.Errorf("the backup is still %s 90 s after PostgreSQL came back (fail_reason %q, temp snapshot %q)", b.GetStatus(), b.GetFailReason(), b.GetTempSnapshotId())
	}
	if v := relWaitVolume(t, s, volID, volStatus, testenv.Patience); v.GetStatus() != volStatus {
		t.Errorf("the volume is %s (previous %q) after the backup, want %s", v.GetStatus(), v.GetPreviousStatus(), volStatus)
	}
	noLeftovers(t, s, userExports)
}

// TestReliabilityRepositoryStallsThenRecovers: the backups go to an S3
// repository (versitygw) through a TCP path the test controls. In the
// middle of a forced backup the path stalls for 10 s (connections open, no
// byte moves), then recovers. During the stall the API stays responsive;
// afterwards the backup ends available and restores byte for byte (or, if
// the service gave up, error with a reason), never stays creating; the
// volume is in-use again and nothing is left behind.
func TestReliabilityRepositoryStallsThenRecovers(t *testing.T) {
	srv := s3test.Start(t)
	c := srv.Config
	px := testenv.StartProxy(t, c.Endpoint)
	t.Setenv("BLOCKVAULT_S3_SECRET_KEY", c.SecretKey)
	s := Start(t, Options{NoGateway: true, BackupArgs: []string{
		"--repository", "s3://" + px.Addr() + "/" + c.Bucket + "/blockvault", "--s3-access-key", c.AccessKey, "--s3-region", c.Region}})
	relLogOnFailure(t, s)
	ctx := context.Background()
	vol, _, dev := attached(t, s, 256<<20)
	sums := relFill(t, dev, 0, 256<<20)
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	waitProgress(t, s, id, "backup")

	px.Stall(true)
	stalled := time.Now()
	movedAtStall := px.BytesMoved()
	time.Sleep(time.Second) // what was in flight settles
	first, err := relGetBackup(s, id)
	if err != nil {
		t.Fatal(err)
	}
	var getLat, listLat relLatencies
	for time.Since(stalled) < 10*time.Second {
		t0 := time.Now()
		_, err := relGetBackup(s, id)
		getLat = append(getLat, time.Since(t0))
		if err != nil {
			t.Errorf("GetBackup during the stall: %v", err)
		}
		t0 = time.Now()
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = s.Backups.ListBackups(lctx, &backupv1.ListBackupsRequest{ProjectId: project})
		cancel()
		listLat = append(listLat, time.Since(t0))
		if err != nil {
			t.Errorf("ListBackups during the stall: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	last, err := relGetBackup(s, id)
	if err != nil {
		t.Fatal(err)
	}
	if moved := px.BytesMoved(); moved != movedAtStall {
		t.Fatalf("the proxy moved %d bytes while stalled", moved-movedAtStall)
	}
	px.Stall(false)
	t.Logf("stalled %v: the backup went %s -> %s, bytes done %s -> %s of %s",
		time.Since(stalled).Round(time.Millisecond), first.GetStatus(), last.GetStatus(),
		relMiB(first.GetProgress().GetBytesDone()), relMiB(last.GetProgress().GetBytesDone()), relMiB(last.GetProgress().GetBytesTotal()))
	t.Logf("GetBackup during the stall:   %v", getLat)
	t.Logf("ListBackups during the stall: %v", listLat)
	// Every call above was answered while the repository was still
	// stalled (the stall ends only after the loop): one that waited on it
	// would have run into its 10 s deadline and failed. The latencies are a
	// speed, logged above, not a property.

	recovered := time.Now()
	b := waitBackup(t, s, id, 3*time.Minute)
	t.Logf("the backup ended %s %v after the repository recovered (fail_reason %q)", b.GetStatus(), time.Since(recovered).Round(time.Millisecond), b.GetFailReason())
	switch b.GetStatus() {
	case "available":
		relVerify(t, s, id)
		rd, done := relRestored(t, s, id)
		if err := relSameContent(rd, 0, sums); err != nil {
			t.Fatalf("the restore differs from what was written: %v", err)
		}
		done()
	case "error":
		if b.GetFailReason() == "" {
			t.Errorf("the backup ended error without a fail_reason")
		}
	default:
		t.Fatalf("the backup ended %s", b.GetStatus())
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" || len(v.GetAttachments()) != 1 {
		t.Fatalf("the volume is %s with %d attachments after the backup", v.GetStatus(), len(v.GetAttachments()))
	}
	noLeftovers(t, s, 1)
}
