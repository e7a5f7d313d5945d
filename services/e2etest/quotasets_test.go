package e2etest

import (
	"context"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

// TestQuotaSets drives os-quota-sets with gophercloud's blockstorage/v3
// quotasets package, unmodified: a member shows their project's limits,
// the defaults and the usage; an admin updates them, the new limits are
// enforced and outlive a restart of the daemons; a member may neither
// update nor look at another project's.
func TestQuotaSets(t *testing.T) {
	s := Start(t, Options{Tokens: true,
		VolumeManagerArgs: []string{"--quota-volumes", "3", "--quota-gigabytes", "5", "--quota-snapshots", "1"},
		BackupArgs:        []string{"--quota-backups", "2", "--quota-backup-gigabytes", "3"},
	})
	ctx := context.Background()
	const project = "quota-sets"
	member := blockStorageClient(s.Gateway.Addr, project, s.Token(project, auth.RoleMember))
	admin := blockStorageClient(s.Gateway.Addr, project, s.Token("ops", auth.RoleAdmin))

	want := quotasets.QuotaSet{ID: project, Volumes: 3, Gigabytes: 5, Snapshots: 1, Backups: 2, BackupGigabytes: 3}
	got, err := quotasets.Get(ctx, member, project).Extract()
	if err != nil || got.ID != want.ID || got.Volumes != want.Volumes || got.Gigabytes != want.Gigabytes || got.Snapshots != want.Snapshots ||
		got.Backups != want.Backups || got.BackupGigabytes != want.BackupGigabytes {
		t.Fatalf("quotasets.Get: %v %+v, want %+v", err, got, want)
	}
	if d, err := quotasets.GetDefaults(ctx, member, project).Extract(); err != nil || d.Volumes != 3 || d.Backups != 2 {
		t.Fatalf("quotasets.GetDefaults: %v %+v", err, d)
	}

	// Usage: one 1 GiB volume and one backup of it.
	vol, err := volumes.Create(ctx, member, volumes.CreateOpts{Size: 1}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	code, body := restAs(t, s, s.Token(project, auth.RoleMember), "POST", "/v3/"+project+"/backups", `{"backup": {"volume_id": "`+vol.ID+`"}}`)
	if code != 202 {
		t.Fatalf("backup: HTTP %d %v", code, body)
	}
	if b := waitBackupIn(t, s, project, field(body, "backup", "id"), time.Minute); b.GetStatus() != "available" {
		t.Fatalf("backup %s", b.GetStatus())
	}
	u, err := quotasets.GetUsage(ctx, member, project).Extract()
	if err != nil || u.Volumes.InUse != 1 || u.Volumes.Limit != 3 || u.Gigabytes.InUse != 1 || u.Backups.InUse != 1 ||
		u.BackupGigabytes.InUse != 1 || u.Snapshots.InUse != 0 {
		t.Fatalf("quotasets.GetUsage: %v %+v", err, u)
	}

	// A member may not update, nor look at another project's.
	one := 1
	if _, err := quotasets.Update(ctx, member, project, quotasets.UpdateOpts{Volumes: &one}).Extract(); !gophercloud.ResponseCodeIs(err, 403) {
		t.Errorf("a member's quotasets.Update: %v, want 403", err)
	}
	if _, err := quotasets.Get(ctx, member, "someone-else").Extract(); !gophercloud.ResponseCodeIs(err, 403) {
		t.Errorf("a member's quotasets.Get of another project: %v, want 403", err)
	}

	// An admin sets volumes to 1 and backups to 5: enforced at once.
	five := 5
	up, err := quotasets.Update(ctx, admin, project, quotasets.UpdateOpts{Volumes: &one, Backups: &five}).Extract()
	if err != nil || up.Volumes != 1 || up.Backups != 5 || up.Gigabytes != 5 {
		t.Fatalf("quotasets.Update: %v %+v", err, up)
	}
	if _, err := volumes.Create(ctx, member, volumes.CreateOpts{Size: 1}, nil).Extract(); !gophercloud.ResponseCodeIs(err, 413) {
		t.Errorf("a second volume with volumes set to 1: %v, want 413", err)
	}
	if d, err := quotasets.GetDefaults(ctx, member, project).Extract(); err != nil || d.Volumes != 3 {
		t.Errorf("the defaults after an update: %v %+v, want volumes 3", err, d)
	}
	if o, err := quotasets.Get(ctx, admin, "another-project").Extract(); err != nil || o.Volumes != 3 {
		t.Errorf("another project after the update: %v %+v, want the default 3", err, o)
	}

	// The limits are kept in the daemons' databases: they outlive a restart.
	for _, d := range []*Daemon{s.VolumeManager, s.Backup} {
		d.Stop()
		for d.Running() {
			time.Sleep(50 * time.Millisecond)
		}
		d.Start()
		s.WaitHealthy(d)
	}
	if got, err := quotasets.Get(ctx, member, project).Extract(); err != nil || got.Volumes != 1 || got.Backups != 5 {
		t.Errorf("after a restart: %v %+v, want volumes 1 and backups 5", err, got)
	}

	// Bad updates, through the REST body a client could send.
	adminTok := s.Token("ops", auth.RoleAdmin)
	for _, c := range []struct{ what, body, want string }{
		{"an unknown key", `{"quota_set": {"volumes": 2, "floppies": 1}}`, "Bad key(s) in quota set: floppies"},
		{"not a number", `{"quota_set": {"volumes": "many"}}`, "Invalid input for field/attribute volumes. Value: \"many\". It must be an integer."},
		{"below -1", `{"quota_set": {"volumes": -2}}`, "must be -1 (no limit) or more"},
		{"no quota_set", `{"volumes": 2}`, "Missing required element 'quota_set'"},
		{"not JSON", `{quota_set`, "Malformed request body"},
	} {
		code, body := restAs(t, s, adminTok, "PUT", "/v3/"+project+"/os-quota-sets/"+project, c.body)
		checkFault(t, c.what, code, body, 400, c.want)
	}
	// A limit given as a string of digits is taken, as the API does.
	code, body = restAs(t, s, adminTok, "PUT", "/v3/"+project+"/os-quota-sets/"+project, `{"quota_set": {"snapshots": "4"}}`)
	if code != 200 || body["quota_set"].(map[string]any)["snapshots"] != float64(4) {
		t.Errorf(`snapshots "4": HTTP %d %v`, code, body)
	}
	code, body = restAs(t, s, s.Token(project, auth.RoleMember), "GET", "/v3/"+project+"/os-quota-sets/"+project+"?usage=maybe", "")
	checkFault(t, "usage=maybe", code, body, 400, "query parameter usage")
}
