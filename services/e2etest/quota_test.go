package e2etest

import (
	"strings"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestQuotas: past a project's quota of volumes, gigabytes, snapshots,
// backups or backup gigabytes a request gets 413 overLimit with the Block
// Storage API's message and changes nothing; another project is not
// affected; deleting frees the quota again, and a failed request takes
// nothing.
func TestQuotas(t *testing.T) {
	s := Start(t, Options{Tokens: true,
		VolumeManagerArgs: []string{"--quota-volumes", "3", "--quota-gigabytes", "5", "--quota-snapshots", "1"},
		BackupArgs:        []string{"--quota-backups", "2", "--quota-backup-gigabytes", "3"},
	})
	tok := s.Token("quota-a", auth.RoleMember)
	other := s.Token("quota-b", auth.RoleMember)
	over := func(what string, code int, body map[string]any, want string) {
		t.Helper()
		msg := field(body, "overLimit", "message")
		if code != 413 || !strings.Contains(msg, want) {
			t.Fatalf("%s: HTTP %d %v, want 413 overLimit with %q", what, code, body, want)
		}
	}
	count := func(path, key string) int {
		t.Helper()
		code, body := restAs(t, s, tok, "GET", path, "")
		if code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		return len(idsOf(body, key))
	}
	create := func(size string) (int, map[string]any) {
		return restAs(t, s, tok, "POST", "/v3/quota-a/volumes", `{"volume": {"size": `+size+`}}`)
	}

	// gigabytes: 5. A 6 GiB volume is refused outright.
	code, body := create("6")
	over("a 6 GiB volume against 5", code, body, "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 6G, quota is 5G and 0G has been consumed.")
	code, body = create("2")
	if code != 202 {
		t.Fatalf("first volume: %d %v", code, body)
	}
	v1 := field(body, "volume", "id")
	code, body = create("1")
	if code != 202 {
		t.Fatalf("second volume: %d %v", code, body)
	}
	v2 := field(body, "volume", "id")
	code, body = create("3")
	over("3 GiB more with 3 of 5 used", code, body, "Requested 3G, quota is 5G and 3G has been consumed.")
	// extend past the gigabytes quota: 413, the size unchanged.
	code, body = restAs(t, s, tok, "POST", "/v3/quota-a/volumes/"+v2+"/action", `{"os-extend": {"new_size": 4}}`)
	over("extend 1 -> 4 GiB with 3 of 5 used", code, body, "Requested 3G, quota is 5G and 3G has been consumed.")
	if _, body = restAs(t, s, tok, "GET", "/v3/quota-a/volumes/"+v2, ""); body["volume"].(map[string]any)["size"].(float64) != 1 {
		t.Fatalf("the refused extend changed the size: %v", body["volume"])
	}
	code, body = create("1")
	if code != 202 {
		t.Fatalf("third volume: %d %v", code, body)
	}
	// volumes: 3.
	code, body = create("1")
	over("a fourth volume", code, body, "VolumeLimitExceeded: Maximum number of volumes allowed (3) exceeded for quota 'volumes'.")
	if n := count("/v3/quota-a/volumes", "volumes"); n != 3 {
		t.Fatalf("%d volumes after the refusals, want 3", n)
	}
	// Another project has its own quota.
	if code, body := restAs(t, s, other, "POST", "/v3/quota-b/volumes", `{"volume": {"size": 5}}`); code != 202 {
		t.Fatalf("another project's volume: %d %v", code, body)
	}

	// snapshots: 1 (and they count in gigabytes: 4 of 5 used, v2 is 1 GiB).
	code, body = restAs(t, s, tok, "POST", "/v3/quota-a/snapshots", `{"snapshot": {"volume_id": "`+v2+`"}}`)
	if code != 202 {
		t.Fatalf("first snapshot: %d %v", code, body)
	}
	snap := field(body, "snapshot", "id")
	code, body = restAs(t, s, tok, "POST", "/v3/quota-a/snapshots", `{"snapshot": {"volume_id": "`+v2+`"}}`)
	over("a second snapshot", code, body, "SnapshotLimitExceeded: Maximum number of snapshots allowed (1) exceeded for quota 'snapshots'.")
	if n := count("/v3/quota-a/snapshots", "snapshots"); n != 1 {
		t.Fatalf("%d snapshots after the refusal, want 1", n)
	}
	if code, _ := restAs(t, s, tok, "DELETE", "/v3/quota-a/snapshots/"+snap, ""); code != 202 {
		t.Fatalf("delete snapshot: %d", code)
	}

	// backups: 2, backup gigabytes: 3. v1 is 2 GiB, v2 1 GiB.
	backup := func(vol string) (int, map[string]any) {
		return restAs(t, s, tok, "POST", "/v3/quota-a/backups", `{"backup": {"volume_id": "`+vol+`"}}`)
	}
	code, body = backup(v1)
	if code != 202 {
		t.Fatalf("first backup: %d %v", code, body)
	}
	b1 := field(body, "backup", "id")
	waitBackupIn(t, s, "quota-a", b1, testenv.Patience)
	code, body = backup(v1)
	over("2 more backup GiB with 2 of 3 used", code, body, "Requested backup exceeds allowed Backup gigabytes quota. Requested 2G, quota is 3G and 2G has been consumed.")
	if _, body = restAs(t, s, tok, "GET", "/v3/quota-a/volumes/"+v1, ""); field(body, "volume", "status") != "available" {
		t.Fatalf("the refused backup changed the volume: %v", body["volume"])
	}
	code, body = backup(v2)
	if code != 202 {
		t.Fatalf("second backup: %d %v", code, body)
	}
	waitBackupIn(t, s, "quota-a", field(body, "backup", "id"), testenv.Patience)
	code, body = backup(v2)
	over("a third backup", code, body, "BackupLimitExceeded: Maximum number of backups allowed (2) exceeded for quota 'backups'.")
	if n := count("/v3/quota-a/backups", "backups"); n != 2 {
		t.Fatalf("%d backups after the refusals, want 2", n)
	}

	// A restore into a new volume needs volume quota too: 3 volumes exist.
	code, body = restAs(t, s, tok, "POST", "/v3/quota-a/backups/"+b1+"/restore", `{"restore": {}}`)
	over("a restore into a fourth volume", code, body, "VolumeLimitExceeded")
	if n := count("/v3/quota-a/volumes", "volumes"); n != 3 {
		t.Fatalf("%d volumes after the refused restore, want 3", n)
	}
	if b := waitBackupIn(t, s, "quota-a", b1, time.Second); b.GetStatus() != "available" {
		t.Fatalf("the backup after the refused restore: %s", b.GetStatus())
	}

	// Deleting frees the quota.
	if code, _ := restAs(t, s, tok, "DELETE", "/v3/quota-a/backups/"+b1, ""); code != 202 {
		t.Fatalf("delete backup: %d", code)
	}
	deadline := time.Now().Add(testenv.Patience)
	for count("/v3/quota-a/backups", "backups") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the deleted backup is still listed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := backup(v2); code != 202 {
		t.Fatalf("a backup after a delete freed the quota: %d %v", code, body)
	}
	if code, _ := restAs(t, s, tok, "DELETE", "/v3/quota-a/volumes/"+v1, ""); code != 202 {
		t.Fatalf("delete volume: %d", code)
	}
	if code, body := create("1"); code != 202 {
		t.Fatalf("a volume after a delete freed the quota: %d %v", code, body)
	}
}
