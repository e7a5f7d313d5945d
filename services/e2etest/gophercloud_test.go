package e2etest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/backups"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/snapshots"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

// blockStorageClient is what an OpenStack user's program builds: a
// gophercloud service client on the gateway's /v3/{project_id}/ endpoint
// with a token, no change to gophercloud.
func blockStorageClient(gateway, projectID, token string) *gophercloud.ServiceClient {
	pc := &gophercloud.ProviderClient{}
	pc.SetToken(token)
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: "http://" + gateway + "/v3/" + projectID + "/", Type: "block-storage"}
}

// TestGophercloud drives the gateway with gophercloud's blockstorage/v3
// packages, unmodified: volumes, snapshots and backups (create with force,
// get, list, list detail, restore, delete), with a member's token.
func TestGophercloud(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	ctx := context.Background()
	c := blockStorageClient(s.Gateway.Addr, project, s.Token(project, auth.RoleMember))

	// Volumes.
	vol, err := volumes.Create(ctx, c, volumes.CreateOpts{Size: 1, Name: "gc-volume", Description: "made by gophercloud"}, nil).Extract()
	if err != nil {
		t.Fatalf("volumes.Create: %v", err)
	}
	if vol.Size != 1 || vol.Name != "gc-volume" || vol.ID == "" {
		t.Fatalf("volumes.Create returned %+v", vol)
	}
	got, err := volumes.Get(ctx, c, vol.ID).Extract()
	if err != nil || got.Status != "available" || got.CreatedAt.IsZero() {
		t.Fatalf("volumes.Get: %v %+v", err, got)
	}
	pages, err := volumes.List(c, volumes.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatalf("volumes.List: %v", err)
	}
	all, err := volumes.ExtractVolumes(pages)
	if err != nil || len(all) != 1 || all[0].ID != vol.ID {
		t.Fatalf("volumes.List: %v %+v", err, all)
	}
	if err := volumes.ExtendSize(ctx, c, vol.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(); err != nil {
		t.Fatalf("volumes.ExtendSize: %v", err)
	}

	// Attach it (through our attachments API), so the backup needs force.
	_, att, _ := attached(t, s, 64<<20)
	_ = att
	inUse, err := volumes.Get(ctx, c, att.GetVolumeId()).Extract()
	if err != nil || inUse.Status != "in-use" || len(inUse.Attachments) != 1 {
		t.Fatalf("volumes.Get of an attached volume: %v %+v", err, inUse)
	}

	// Snapshots.
	snap, err := snapshots.Create(ctx, c, snapshots.CreateOpts{VolumeID: inUse.ID, Name: "gc-snap", Force: true}).Extract()
	if err != nil {
		t.Fatalf("snapshots.Create: %v", err)
	}
	if err := snapshots.WaitForStatus(ctx, c, snap.ID, "available"); err != nil {
		t.Fatalf("snapshots.WaitForStatus: %v", err)
	}
	spages, err := snapshots.List(c, snapshots.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatalf("snapshots.List: %v", err)
	}
	if ss, err := snapshots.ExtractSnapshots(spages); err != nil || len(ss) != 1 || ss[0].ID != snap.ID {
		t.Fatalf("snapshots.List: %v %+v", err, ss)
	}
	if err := snapshots.Delete(ctx, c, snap.ID).ExtractErr(); err != nil {
		t.Fatalf("snapshots.Delete: %v", err)
	}

	// Backups: an in-use volume with force.
	bk, err := backups.Create(ctx, c, backups.CreateOpts{VolumeID: inUse.ID, Name: "gc-backup", Force: true}).Extract()
	if err != nil {
		t.Fatalf("backups.Create: %v", err)
	}
	waitGC(t, func() (string, error) {
		b, err := backups.Get(ctx, c, bk.ID).Extract()
		if err != nil {
			return "", err
		}
		return b.Status, nil
	}, "available")
	b, err := backups.Get(ctx, c, bk.ID).Extract()
	if err != nil || b.VolumeID != inUse.ID || b.Name != "gc-backup" || b.Size != 1 || b.CreatedAt.IsZero() {
		t.Fatalf("backups.Get: %v %+v", err, b)
	}
	bpages, err := backups.List(c, backups.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatalf("backups.List: %v", err)
	}
	if bl, err := backups.ExtractBackups(bpages); err != nil || len(bl) != 1 || bl[0].ID != bk.ID {
		t.Fatalf("backups.List: %v %+v", err, bl)
	}
	dpages, err := backups.ListDetail(c, backups.ListDetailOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatalf("backups.ListDetail: %v", err)
	}
	if bl, err := backups.ExtractBackups(dpages); err != nil || len(bl) != 1 || bl[0].Status != "available" || bl[0].VolumeID != inUse.ID {
		t.Fatalf("backups.ListDetail: %v %+v", err, bl)
	}

	// Export the backup's record (Cinder's "backup-record" key).
	rec, err := backups.Export(ctx, c, bk.ID).Extract()
	if err != nil || rec.BackupService != "blockvault" || !strings.Contains(string(rec.BackupURL), bk.ID) {
		t.Fatalf("backups.Export: %v %+v", err, rec)
	}
	// Importing it again (an admin's call) is refused as already there:
	// the record was understood.
	admin := blockStorageClient(s.Gateway.Addr, project, s.Token(project, auth.RoleAdmin))
	_, err = backups.Import(ctx, admin, backups.ImportOpts{BackupService: rec.BackupService, BackupURL: rec.BackupURL}).Extract()
	if !gophercloud.ResponseCodeIs(err, 409) {
		t.Fatalf("backups.Import of a registered backup: %v, want 409", err)
	}

	// Restore into a new volume.
	rs, err := backups.RestoreFromBackup(ctx, c, bk.ID, backups.RestoreOpts{Name: "gc-restored"}).Extract()
	if err != nil || rs.BackupID != bk.ID || rs.VolumeID == "" {
		t.Fatalf("backups.RestoreFromBackup: %v %+v", err, rs)
	}
	waitGC(t, func() (string, error) {
		v, err := volumes.Get(ctx, c, rs.VolumeID).Extract()
		if err != nil {
			return "", err
		}
		return v.Status, nil
	}, "available")
	waitGC(t, func() (string, error) {
		b, err := backups.Get(ctx, c, bk.ID).Extract()
		if err != nil {
			return "", err
		}
		return b.Status, nil
	}, "available")

	// Delete the backup and the volumes.
	if err := backups.Delete(ctx, c, bk.ID).ExtractErr(); err != nil {
		t.Fatalf("backups.Delete: %v", err)
	}
	waitGC(t, func() (string, error) {
		_, err := backups.Get(ctx, c, bk.ID).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			return "gone", nil
		}
		return "present", err
	}, "gone")
	for _, id := range []string{vol.ID, rs.VolumeID} {
		if err := volumes.Delete(ctx, c, id, volumes.DeleteOpts{}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete: %v", err)
		}
	}
	if _, err := volumes.Get(ctx, c, vol.ID).Extract(); !gophercloud.ResponseCodeIs(err, 404) {
		t.Fatalf("a deleted volume: %v", err)
	}
}

func waitGC(t *testing.T, status func() (string, error), want string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for {
		st, err := status()
		if err != nil {
			t.Fatal(err)
		}
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s, want %s", st, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGophercloudAttachDetach is what a compute service does to mark a
// volume in use and free it again: gophercloud's volumes.Attach (the
// os-attach action) and volumes.Detach (os-detach), unmodified, with a
// member's token; the status and attachments they leave are what the
// volume then shows, and a backup of the attached volume needs force.
func TestGophercloudAttachDetach(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	ctx := context.Background()
	c := blockStorageClient(s.Gateway.Addr, project, s.Token(project, auth.RoleMember))
	vol, err := volumes.Create(ctx, c, volumes.CreateOpts{Size: 1, Name: "gc-attach"}, nil).Extract()
	if err != nil {
		t.Fatalf("volumes.Create: %v", err)
	}
	const instance = "3f0c6e52-4a1f-4b8e-9f3a-2d9b8c7e6a51"
	if err := volumes.Attach(ctx, c, vol.ID, volumes.AttachOpts{InstanceUUID: instance, MountPoint: "/dev/vdb", Mode: volumes.ReadWrite}).ExtractErr(); err != nil {
		t.Fatalf("volumes.Attach: %v", err)
	}
	got, err := volumes.Get(ctx, c, vol.ID).Extract()
	if err != nil || got.Status != "in-use" || len(got.Attachments) != 1 || got.Attachments[0].ServerID != instance || got.Attachments[0].AttachmentID == "" {
		t.Fatalf("after volumes.Attach: %v %+v", err, got)
	}
	// Not multiattach: a second instance is refused, the first stays.
	err = volumes.Attach(ctx, c, vol.ID, volumes.AttachOpts{InstanceUUID: "0d4c1e2f-6b7a-4c3d-8e9f-1a2b3c4d5e6f", Mode: volumes.ReadWrite}).ExtractErr()
	if !gophercloud.ResponseCodeIs(err, 400) {
		t.Errorf("a second os-attach of a volume that is not multiattach: %v, want 400", err)
	}
	_, err = backups.Create(ctx, c, backups.CreateOpts{VolumeID: vol.ID}).Extract()
	if !gophercloud.ResponseCodeIs(err, 400) {
		t.Errorf("a backup of the attached volume without force: %v, want 400", err)
	}
	if err := volumes.Detach(ctx, c, vol.ID, volumes.DetachOpts{AttachmentID: got.Attachments[0].AttachmentID}).ExtractErr(); err != nil {
		t.Fatalf("volumes.Detach: %v", err)
	}
	if got, err = volumes.Get(ctx, c, vol.ID).Extract(); err != nil || got.Status != "available" || len(got.Attachments) != 0 {
		t.Fatalf("after volumes.Detach: %v %+v", err, got)
	}

	// A bare-metal host instead of an instance, detached without naming
	// the attachment (the volume's only one).
	if err := volumes.Attach(ctx, c, vol.ID, volumes.AttachOpts{HostName: "baremetal-7", Mode: volumes.ReadOnly}).ExtractErr(); err != nil {
		t.Fatalf("volumes.Attach to a host: %v", err)
	}
	if got, err = volumes.Get(ctx, c, vol.ID).Extract(); err != nil || got.Status != "in-use" || len(got.Attachments) != 1 || got.Attachments[0].HostName != "baremetal-7" {
		t.Fatalf("after volumes.Attach to a host: %v %+v", err, got)
	}
	if err := volumes.Detach(ctx, c, vol.ID, volumes.DetachOpts{}).ExtractErr(); err != nil {
		t.Fatalf("volumes.Detach without an attachment id: %v", err)
	}
	if got, err = volumes.Get(ctx, c, vol.ID).Extract(); err != nil || got.Status != "available" {
		t.Fatalf("after the second volumes.Detach: %v %+v", err, got)
	}
	if err := volumes.Detach(ctx, c, vol.ID, volumes.DetachOpts{}).ExtractErr(); !gophercloud.ResponseCodeIs(err, 400) {
		t.Errorf("volumes.Detach of a volume that is not attached: %v, want 400", err)
	}
	if err := volumes.Attach(ctx, c, vol.ID, volumes.AttachOpts{MountPoint: "/dev/vdc"}).ExtractErr(); !gophercloud.ResponseCodeIs(err, 400) {
		t.Errorf("volumes.Attach to neither an instance nor a host: %v, want 400", err)
	}
	if err := volumes.Delete(ctx, c, vol.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
		t.Fatalf("volumes.Delete after detaching: %v", err)
	}
}
