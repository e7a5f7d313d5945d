package e2etest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestCrashMatrix stops the backup service at each stage of a backup and
// of a restore (pkg/failpoint), SIGKILLs one daemon there (the backup
// service, the volume manager or the gateway), restarts it, and checks the
// end state: the backup error or available (and then verified), the
// restore's backup available again, the volume back in its previous status,
// no temporary snapshot, volume or NBD export left; and at the end, once
// every backup is deleted, the repository holds no chunk (what the
// interrupted backups wrote was garbage-collectable).
func TestCrashMatrix(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repository")
	s := Start(t, Options{RepositoryDir: repo})
	ctx := context.Background()
	vol, _, dev := attached(t, s, 256<<20)
	fillText(t, dev)
	base, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	baseID := base.GetBackup().GetId()
	if b := waitBackup(t, s, baseID, testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("base backup: %s %q", b.GetStatus(), b.GetFailReason())
	}

	backupStages := []string{"backup-begun", "backup-source-attached", "backup-half-done", "backup-stored", "backup-source-released", "backup-ended"}
	restoreStages := []string{"restore-begun", "restore-half-done", "restore-written"}
	arm := func(env ...string) {
		s.Backup.Stop()
		s.Backup.Env = env
		s.Backup.Start()
		s.WaitHealthy(s.Backup)
	}
	for _, victim := range []*Daemon{s.Backup, s.VolumeManager, s.Gateway} {
		for _, stage := range append(append([]string{}, backupStages...), restoreStages...) {
			t.Run(victim.Name+"/"+stage, func(t *testing.T) {
				fp := t.TempDir()
				arm("BLOCKVAULT_FAILPOINT=" + stage + ":" + fp)
				restore := stage[:7] == "restore"
				var id, target string
				if restore {
					code, body := s.REST("POST", "/v3/"+project+"/backups/"+baseID+"/restore", map[string]any{"restore": map[string]any{}})
					if code != 202 {
						t.Fatalf("restore: %d %v", code, body)
					}
					id, target = baseID, field(body, "restore", "volume_id")
				} else {
					code, body := s.REST("POST", "/v3/"+project+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol.GetId(), "force": true}})
					if code != 202 {
						t.Fatalf("backup: %d %v", code, body)
					}
					id = field(body, "backup", "id")
				}
				waitFile(t, filepath.Join(fp, stage+".reached"))
				victim.Kill()
				if victim == s.Backup {
					s.Backup.Env = nil // the paused process is gone; the new one runs free
				}
				victim.Start()
				if victim == s.Gateway {
					s.waitHTTP(s.Gateway, "http://"+s.Gateway.Addr+"/healthz")
				} else {
					s.WaitHealthy(victim)
				}
				os.WriteFile(filepath.Join(fp, stage+".go"), nil, 0o644)

				b := waitBackup(t, s, id, testenv.Patience)
				switch {
				case restore && b.GetStatus() != "available":
					t.Fatalf("the restored backup is %s %q", b.GetStatus(), b.GetFailReason())
				case b.GetStatus() == "error" && b.GetFailReason() == "":
					t.Fatal("error without a fail_reason")
				case b.GetStatus() != "available" && b.GetStatus() != "error":
					t.Fatalf("the backup ended %s", b.GetStatus())
				}
				if b.GetStatus() == "available" && !restore {
					v, err := s.Backups.VerifyBackup(ctx, &backupv1.VerifyBackupRequest{ProjectId: project, BackupId: id})
					if err != nil || !v.GetOk() {
						t.Fatalf("the available backup does not verify: %v %v", err, v)
					}
				}
				deadline := time.Now().Add(testenv.Patience)
				for {
					v := volumeStatus(t, s, vol.GetId())
					tv := "available"
					if target != "" {
						tv = volumeStatus(t, s, target).GetStatus()
					}
					if v.GetStatus() == "in-use" && (tv == "available" || tv == "error_restoring") {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("volume %s, restore target %s", v.GetStatus(), tv)
					}
					time.Sleep(100 * time.Millisecond)
				}
				noLeftovers(t, s, 1)
				t.Logf("%s killed at %s: backup %s %q", victim.Name, stage, b.GetStatus(), b.GetFailReason())
				if target != "" {
					if _, err := s.Volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: target}); err != nil {
						t.Fatalf("delete the restore target: %v", err)
					}
				} else if b.GetStatus() == "available" || b.GetStatus() == "error" {
					s.Backups.DeleteBackup(ctx, &backupv1.DeleteBackupRequest{ProjectId: project, BackupId: id})
				}
			})
		}
	}

	// Everything deleted: the collection that runs with each delete leaves
	// no chunk behind, not even those of the interrupted backups.
	arm()
	deadline := time.Now().Add(testenv.Patience)
	for {
		l, err := s.Backups.ListBackups(ctx, &backupv1.ListBackupsRequest{ProjectId: project})
		if err != nil {
			t.Fatal(err)
		}
		busy := false
		for _, b := range l.GetBackups() {
			switch b.GetStatus() {
			case "available", "error":
				s.Backups.DeleteBackup(ctx, &backupv1.DeleteBackupRequest{ProjectId: project, BackupId: b.GetId()})
				busy = true
			case "deleting":
				busy = true
			default:
				t.Fatalf("backup %s is %s %q while everything is being deleted", b.GetId(), b.GetStatus(), b.GetFailReason())
			}
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backups left after deleting them all: %d", len(l.GetBackups()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	var chunks []string
	filepath.WalkDir(repo, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(path, string(filepath.Separator)+"chunks"+string(filepath.Separator)) {
			chunks = append(chunks, path)
		}
		return nil
	})
	if len(chunks) != 0 {
		t.Fatalf("%d chunks left in the repository after every backup was deleted, e.g. %s", len(chunks), chunks[0])
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(fmt.Sprintf("%s never appeared: the stage was not reached", filepath.Base(path)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
