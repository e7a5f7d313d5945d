package e2etest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestSnapshotBackupAndV2Path: a backup of an available snapshot needs no
// force, reads the snapshot (not the live volume), and the snapshot goes
// backing-up and back; the seed's /v2 path creates backups too.
func TestSnapshotBackupAndV2Path(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	vol, _, dev := attached(t, s, 32<<20)
	dev.WriteAt(bytes.Repeat([]byte{1}, blockSize), 0)
	dev.Flush()
	sr, err := s.Volumes.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: project, Snapshot: &volumev1.SnapshotInput{VolumeId: vol.GetId(), Force: true, Name: "before"}})
	if err != nil {
		t.Fatal(err)
	}
	dev.WriteAt(bytes.Repeat([]byte{2}, blockSize), 0)

	code, body := s.REST("POST", "/v2/"+project+"/backups", map[string]any{"backup": map[string]any{
		"volume_id": vol.GetId(), "snapshot_id": sr.GetSnapshot().GetId(), "display_name": "from-v2"}})
	if code != 202 {
		t.Fatalf("v2 create: %d %v", code, body)
	}
	id := body["backup"].(map[string]any)["id"].(string)
	b := waitBackup(t, s, id, testenv.Patience)
	if b.GetStatus() != "available" || b.GetStrategy() != "snapshot" || b.GetName() != "from-v2" || b.GetSnapshotId() != sr.GetSnapshot().GetId() {
		t.Fatalf("snapshot backup: %v", b)
	}
	sn, _ := s.Volumes.GetSnapshot(ctx, &volumev1.GetSnapshotRequest{ProjectId: project, SnapshotId: sr.GetSnapshot().GetId()})
	if sn.GetSnapshot().GetStatus() != "available" {
		t.Fatalf("the snapshot is %s after its backup", sn.GetSnapshot().GetStatus())
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
		t.Fatalf("the volume is %s", v.GetStatus())
	}
	// The backup holds the snapshot's data (1), not the volume's (2).
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: id, Restore: &backupv1.RestoreInput{}})
	if err != nil {
		t.Fatal(err)
	}
	waitBackup(t, s, id, testenv.Patience)
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: rr.GetRestore().GetVolumeId(), Mode: "ro", Connector: &volumev1.Connector{Host: "checker"}}})
	if err != nil {
		t.Fatal(err)
	}
	rd := dialExport(t, ar.GetAttachment().GetConnectionInfo())
	buf := make([]byte, blockSize)
	rd.ReadAt(buf, 0)
	if !bytes.Equal(buf, bytes.Repeat([]byte{1}, blockSize)) {
		t.Fatal("the snapshot backup did not restore the snapshot's data")
	}
}

// TestForceDeleteCancelsARunningBackup: a plain delete of a creating backup
// is refused; the admin force-delete stops it, cleans up, and it never
// becomes available.
func TestForceDeleteCancelsARunningBackup(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	vol, _, dev := attached(t, s, 1<<30)
	fill(t, dev)
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	waitProgress(t, s, id, "backup")
	if code, body := s.REST("DELETE", "/v3/"+project+"/backups/"+id, nil); code != 400 {
		t.Fatalf("plain delete of a creating backup: %d %v", code, body)
	}
	if code, body := s.REST("POST", "/v3/"+project+"/backups/"+id+"/action", `{"os-force_delete": {}}`); code != 202 {
		t.Fatalf("force delete: %d %v", code, body)
	}
	deadline := time.Now().Add(testenv.Patience)
	for {
		code, body := s.REST("GET", "/v3/"+project+"/backups/"+id, nil)
		if code == 404 {
			break
		}
		if st := body["backup"].(map[string]any)["status"]; st == "available" {
			t.Fatal("a force-deleted backup became available")
		}
		if time.Now().After(deadline) {
			t.Fatal("the force-deleted backup is still there")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
		t.Fatalf("the volume is %s after the cancelled backup", v.GetStatus())
	}
	noLeftovers(t, s, 1)
}

// TestConcurrentBackupsAndIncremental: backups of several volumes run under
// the concurrency limit and all complete; an incremental backup of a
// volume stores only what changed and restores whole.
func TestConcurrentBackupsAndIncremental(t *testing.T) {
	s := Start(t, Options{BackupArgs: []string{"--max-concurrent", "2"}, NoGateway: true})
	ctx := context.Background()
	var ids []string
	var vols []string
	for i := 0; i < 5; i++ {
		vol, _, dev := attached(t, s, 64<<20)
		fill(t, dev)
		vols = append(vols, vol.GetId())
		cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, cr.GetBackup().GetId())
	}
	sawQueue := false
	deadline := time.Now().Add(testenv.Patience)
	for {
		running := s.Metric(s.BackupMetrics, "blockvault_jobs_running")
		if running > 2 {
			t.Fatalf("%v jobs running with a limit of 2", running)
		}
		if s.Metric(s.BackupMetrics, "blockvault_jobs_queued") > 0 {
			sawQueue = true
		}
		done := 0
		for _, id := range ids {
			r, _ := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
			if r.GetBackup().GetStatus() == "available" {
				done++
			} else if r.GetBackup().GetStatus() == "error" {
				t.Fatalf("backup %s failed: %s", id, r.GetBackup().GetFailReason())
			}
		}
		if done == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backups did not all finish")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("queue seen: %v", sawQueue)
	if got := s.Metric(s.BackupMetrics, `blockvault_jobs_total{operation="backup",result="ok"}`); got != 5 {
		t.Fatalf("jobs_total ok = %v, want 5", got)
	}

	// Incremental: change one 1 MiB block, back up again.
	full, _ := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: ids[0]})
	lr, _ := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: vols[0]})
	dev := dialExport(t, mustAttachment(t, s, lr.GetVolume()))
	dev.WriteAt(bytes.Repeat([]byte{9}, blockSize), 5*blockSize)
	dev.Flush()
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vols[0], Force: true, Incremental: true}})
	if err != nil {
		t.Fatal(err)
	}
	inc := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	if inc.GetStatus() != "available" || !inc.GetIsIncremental() || inc.GetParentId() != ids[0] {
		t.Fatalf("incremental: %v", inc)
	}
	if inc.GetObjectCount() != 1 || full.GetBackup().GetObjectCount() < 16 {
		t.Fatalf("the incremental stored %d chunks (the full %d); want 1", inc.GetObjectCount(), full.GetBackup().GetObjectCount())
	}
	parent, _ := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: ids[0]})
	if !parent.GetBackup().GetHasDependentBackups() {
		t.Fatal("the parent does not show its dependent backup")
	}

	// A full backup now reuses the chunks of the newest backup (the
	// incremental): it stores nothing, depends on nothing, and restores
	// the volume as it is.
	want := deviceHash(t, dev)
	cr, err = s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vols[0], Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	full2 := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	if full2.GetStatus() != "available" || full2.GetIsIncremental() || full2.GetParentId() != "" {
		t.Fatalf("second full backup: %v", full2)
	}
	if full2.GetObjectCount() != 0 {
		t.Fatalf("a full backup of an unchanged volume stored %d chunks; want 0 (reused)", full2.GetObjectCount())
	}
	if got := restoredHash(t, s, full2.GetId()); got != want {
		t.Fatal("the second full backup does not restore the volume")
	}
}

// mustAttachment attaches a second, read-write connection to an in-use
// multi-attach-less volume by reusing the first attachment's export.
func mustAttachment(t *testing.T, s *Stack, v *volumev1.Volume) *volumev1.ConnectionInfo {
	t.Helper()
	// The export name is handed out only at attach time; re-attach is not
	// allowed on an in-use volume, so detach and attach again.
	ctx := context.Background()
	for _, a := range v.GetAttachments() {
		s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: a.GetId()})
	}
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: v.GetId(), Connector: &volumev1.Connector{Host: "compute-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	return ar.GetAttachment().GetConnectionInfo()
}

// TestS3Repository: the backup service stores backups in a real S3 server
// (versitygw) and restores from it.
func TestS3Repository(t *testing.T) {
	srv := s3test.Start(t)
	c := srv.Config
	t.Setenv("BLOCKVAULT_S3_SECRET_KEY", c.SecretKey)
	s := Start(t, Options{NoGateway: true, BackupArgs: []string{
		"--repository", "s3://" + c.Endpoint + "/" + c.Bucket + "/blockvault", "--s3-access-key", c.AccessKey, "--s3-region", c.Region}})
	ctx := context.Background()
	vol, _, dev := attached(t, s, 256<<20)
	w := startWriter(dev)
	w.waitRounds(t, 1)
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	w.halt()
	if b.GetStatus() != "available" {
		t.Fatalf("backup to S3: %s %s", b.GetStatus(), b.GetFailReason())
	}
	restoreAndCheck(t, s, b.GetId())
	noLeftovers(t, s, 1)
}

// TestRequestIDFollowsABackup: the request id a client sends to the gateway
// appears in the gateway's, the backup service's and the volume manager's
// logs, including the volume manager calls the background job makes.
func TestRequestIDFollowsABackup(t *testing.T) {
	s := Start(t, Options{})
	vol, _, _ := attached(t, s, 64<<20)
	const rid = "trace-4f1c2b"
	body := `{"backup": {"volume_id": "` + vol.GetId() + `", "force": true}}`
	req, _ := http.NewRequest("POST", "http://"+s.Gateway.Addr+"/v3/"+project+"/backups", strings.NewReader(body))
	req.Header.Set("X-Request-Id", rid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Backup struct {
			ID string `json:"id"`
		} `json:"backup"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("X-Request-Id") != rid {
		t.Fatalf("HTTP %d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	if b := waitBackup(t, s, out.Backup.ID, testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("backup %s: %q", b.GetStatus(), b.GetFailReason())
	}
	for _, c := range []struct {
		d    *Daemon
		want string
	}{
		{s.Gateway, "path=/v3/" + project + "/backups"},
		{s.Backup, "CreateBackup"},
		{s.VolumeManager, "BeginBackup"},
		{s.VolumeManager, "CreateTemporarySnapshot"},
		{s.VolumeManager, "DeleteSnapshot"},
	} {
		found := false
		for _, line := range strings.Split(c.d.Logs(), "\n") {
			if strings.Contains(line, "request_id="+rid) && strings.Contains(line, c.want) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s log has no %q line with request_id=%s", c.d.Name, c.want, rid)
		}
	}
}
