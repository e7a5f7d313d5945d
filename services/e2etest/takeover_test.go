package e2etest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestTwoBackupServicesTakeOver: two backup-service processes (nodes A and
// B) share one PostgreSQL database and one repository. While A runs a
// backup and renews its lease, B leaves the job alone; A is then killed
// and never restarted, and once A's lease lapses B claims the job and
// finishes it as a restart would: the backup error with a reason naming
// A, the volume in-use again, no temporary snapshot or export left. A
// restore of a backup A ran is recovered the same way.
func TestTwoBackupServicesTakeOver(t *testing.T) {
	url := storetest.PostgresURL(t)
	repo := filepath.Join(t.TempDir(), "repository")
	lease := []string{"--lease-duration", "3s", "--node-id", "node-a"}
	s := Start(t, Options{NoGateway: true, DatabaseURL: url, RepositoryDir: repo, BackupArgs: lease})
	bAddr := FreeAddr(t)
	nodeB := &Daemon{Name: "backup-service", Addr: bAddr, Log: filepath.Join(s.Dir, "backup-service-b.log"), t: t,
		Args: []string{"--listen", bAddr, "--volume-manager", s.VolumeManager.Addr, "--data-dir", filepath.Join(s.Dir, "bs-b"),
			"--node-id", "node-b", "--database-url", url, "--repository", repo, "--http-listen", FreeAddr(t),
			"--auth", "noauth", "--lease-duration", "3s", "--quota-backups", "-1", "--quota-backup-gigabytes", "-1"}}
	nodeB.Start()
	t.Cleanup(nodeB.Stop)
	s.WaitHealthy(nodeB)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- node B log ----\n%s", tail(nodeB.Logs(), 40))
		}
	})
	ctx := context.Background()
	db, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close(db)
	rows, err := backupdb.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	owner := func(id string) string {
		b, err := rows.Get(ctx, "", id)
		if err != nil {
			t.Fatal(err)
		}
		return b.OwnerNode
	}

	// A restore on A, to be interrupted too: a backup of a second volume first.
	vol2, _, dev2 := attached(t, s, 1<<30)
	fill(t, dev2)
	cr2, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol2.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	if b := waitBackup(t, s, cr2.GetBackup().GetId(), testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("backup for the restore: %s %q", b.GetStatus(), b.GetFailReason())
	}

	// Node A is restarted with failpoints armed so that the backup and
	// the restore below stop half way, as long as the test needs: no
	// race between the job's speed and the kill.
	fp := t.TempDir()
	s.Backup.Stop()
	s.Backup.Env = []string{"BLOCKVAULT_FAILPOINT=backup-half-done,restore-half-done:" + fp}
	s.Backup.Start()
	s.WaitHealthy(s.Backup)

	// A backs up an attached volume and stops half way.
	vol, _, dev := attached(t, s, 1<<30)
	fillText(t, dev)
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.GetBackup().GetId()
	waitFile(t, filepath.Join(fp, "backup-half-done.reached"))
	// Two lease lengths while A lives: B does not touch A's jobs.
	time.Sleep(6 * time.Second)
	gb, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
	if err != nil {
		t.Fatal(err)
	}
	if st := gb.GetBackup().GetStatus(); st != "creating" || owner(id) != "node-a" {
		t.Fatalf("while node A lives: backup %s owned by %s, want creating, owned by node-a", st, owner(id))
	}
	// And a restore, stopped half way too.
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: cr2.GetBackup().GetId(), Restore: &backupv1.RestoreInput{}})
	if err != nil {
		t.Fatal(err)
	}
	target := rr.GetRestore().GetVolumeId()
	waitFile(t, filepath.Join(fp, "restore-half-done.reached"))

	s.Backup.Kill() // for good
	killed := time.Now()

	// Node B takes over once the 3 s lease has lapsed.
	bBackups := backupv1.NewBackupServiceClient(s.dial(bAddr))
	deadline := time.Now().Add(testenv.Patience)
	var got *backupv1.Backup
	for {
		r, err := bBackups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
		if err == nil && r.GetBackup().GetStatus() != "creating" {
			got = r.GetBackup()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node B did not take the backup over within a minute: %v %v", r.GetBackup().GetStatus(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("taken over %v after the kill: %s %q", time.Since(killed).Round(100*time.Millisecond), got.GetStatus(), got.GetFailReason())
	if got.GetStatus() != "error" || !strings.Contains(got.GetFailReason(), "node-a") || owner(id) != "node-b" {
		t.Fatalf("after the takeover: %s %q owned by %s", got.GetStatus(), got.GetFailReason(), owner(id))
	}
	if time.Since(killed) < 1500*time.Millisecond {
		t.Fatalf("taken over %v after the kill, before the 3 s lease could lapse", time.Since(killed))
	}
	deadline = time.Now().Add(testenv.Patience)
	for volumeStatus(t, s, vol.GetId()).GetStatus() != "in-use" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if v := volumeStatus(t, s, vol.GetId()); v.GetStatus() != "in-use" {
		t.Fatalf("the volume is %s after the takeover", v.GetStatus())
	}
	// The restore: the backup available again, the target error_restoring.
	deadline = time.Now().Add(testenv.Patience)
	for {
		r, err := bBackups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: cr2.GetBackup().GetId()})
		if err == nil && r.GetBackup().GetStatus() == "available" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restored backup after the takeover: %v %v", r.GetBackup().GetStatus(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := volumeStatus(t, s, target); v.GetStatus() != "error_restoring" {
		t.Fatalf("the restore target after the takeover: %s", v.GetStatus())
	}
	noLeftovers(t, s, 2)
}
