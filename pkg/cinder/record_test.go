package cinder_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/cinder/cindertest"
)

func TestParseExportRecord(t *testing.T) {
	t.Parallel()
	vols := volumes(t, 1*mib, 2)
	before := time.Now().Add(-time.Minute)
	c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.Posix, AvailabilityZone: "zone-1", VolumeSizeGB: 3, Backups: []cindertest.Step{
		{Volume: vols[0], Name: "nightly", Description: "the full one: ünïcode too"},
		{Volume: vols[1], Name: "", Description: ""},
	}})
	after := time.Now().Add(time.Minute)
	full, err := cinder.ParseExportRecord(c.Records[0].BackupService, c.Records[0].BackupURL)
	if err != nil {
		t.Fatal(err)
	}
	inc, err := cinder.ParseExportRecord(c.Records[1].BackupService, c.Records[1].BackupURL)
	if err != nil {
		t.Fatal(err)
	}
	if full.Kind != cinder.Posix || full.Service != "cinder.backup.drivers.posix.PosixBackupDriver" {
		t.Errorf("driver: %q %q", full.Kind, full.Service)
	}
	if full.Name != "nightly" || full.Description != "the full one: ünïcode too" || inc.Name != "" {
		t.Errorf("names: %q %q %q", full.Name, full.Description, inc.Name)
	}
	if full.Incremental() || !inc.Incremental() || inc.ParentID != full.ID || inc.VolumeID != full.VolumeID {
		t.Errorf("chain: full %+v, incremental %+v", full, inc)
	}
	if full.SizeGB != 3 || full.AvailabilityZone != "zone-1" || full.ProjectID != "blockvault-project" || full.UserID != "blockvault-user" {
		t.Errorf("size, zone, owner: %+v", full)
	}
	if full.CreatedAt.Before(before) || full.CreatedAt.After(after) || inc.CreatedAt.Before(full.CreatedAt) {
		t.Errorf("created_at: %v, %v (made between %v and %v)", full.CreatedAt, inc.CreatedAt, before, after)
	}
	// The posix driver's layout: the container is <id[0:2]>/<id[2:4]>/<id>
	// under backup_posix_path, the prefix names the volume and the backup.
	if want := full.ID[0:2] + "/" + full.ID[2:4] + "/" + full.ID; full.Container != want {
		t.Errorf("container %q, want %q", full.Container, want)
	}
	if !strings.HasPrefix(full.Prefix, "volume_"+full.VolumeID+"_") || !strings.HasSuffix(full.Prefix, "_backup_"+full.ID) {
		t.Errorf("prefix %q", full.Prefix)
	}
	if _, err := os.Stat(filepath.Join(c.PosixPath, full.Container, full.Prefix+"_metadata")); err != nil {
		t.Errorf("the record does not lead to the metadata: %v", err)
	}
	if full.ObjectCount != 1 || inc.ObjectCount < 1 {
		t.Errorf("object counts %d, %d", full.ObjectCount, inc.ObjectCount)
	}
	if l := inc.Link(); l.BackupID != inc.ID || l.Container != inc.Container || l.Prefix != inc.Prefix || l.Kind != cinder.Posix {
		t.Errorf("link %+v", l)
	}
}

func TestParseExportRecordRefuses(t *testing.T) {
	t.Parallel()
	vols := volumes(t, 1*mib, 1)
	c := cindertest.Backup(t, cindertest.Options{Driver: cindertest.Posix, Backups: steps(vols)})
	service, url := c.Records[0].BackupService, c.Records[0].BackupURL
	// edit returns url's JSON changed by fn, encoded as Cinder does.
	edit := func(fn func(m map[string]any)) string {
		raw, err := base64.StdEncoding.DecodeString(url)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		fn(m)
		out, _ := json.Marshal(m)
		return base64.StdEncoding.EncodeToString(out)
	}
	for _, tc := range []struct {
		name, service, url string
		want               error
		says               string
	}{
		{"ceph driver", "cinder.backup.drivers.ceph.CephBackupDriver", url, cinder.ErrUnsupported, "RBD"},
		{"swift driver", "cinder.backup.drivers.swift.SwiftBackupDriver", url, cinder.ErrUnsupported, "Swift"},
		{"unknown driver", "my.own.Driver", url, cinder.ErrUnsupported, "my.own.Driver"},
		{"no driver", "", url, cinder.ErrInvalidRecord, "backup_service is empty"},
		{"not base64", service, "not base64!", cinder.ErrInvalidRecord, "not base64"},
		{"not JSON", service, base64.StdEncoding.EncodeToString([]byte("{nope")), cinder.ErrInvalidRecord, "not a backup's JSON"},
		{"no id", service, edit(func(m map[string]any) { delete(m, "id") }), cinder.ErrInvalidRecord, "no id"},
		{"no container", service, edit(func(m map[string]any) { m["container"] = nil }), cinder.ErrInvalidRecord, "no container"},
		{"no prefix", service, edit(func(m map[string]any) { delete(m, "service_metadata") }), cinder.ErrInvalidRecord, "no service_metadata"},
		{"no created_at", service, edit(func(m map[string]any) { delete(m, "created_at") }), cinder.ErrInvalidRecord, "no created_at"},
		{"bad created_at", service, edit(func(m map[string]any) { m["created_at"] = "yesterday" }), cinder.ErrInvalidRecord, "created_at"},
		{"size a string", service, edit(func(m map[string]any) { m["size"] = "1" }), cinder.ErrInvalidRecord, `"size"`},
		{"another driver's backup", "cinder.backup.drivers.s3.S3BackupDriver", url, cinder.ErrInvalidRecord, "own service"},
		{"not available", service, edit(func(m map[string]any) { m["status"] = "error" }), cinder.ErrInvalidRecord, "not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cinder.ParseExportRecord(tc.service, tc.url)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
	// Accepted: the module name older Cinder wrote, whitespace in the
	// URL, an NFS backup (the posix layout).
	if r, err := cinder.ParseExportRecord("cinder.backup.drivers.posix", url[:40]+"\n"+url[40:]); err != nil || r.Kind != cinder.Posix {
		t.Errorf("module name: %v", err)
	}
	nfs := "cinder.backup.drivers.nfs.NFSBackupDriver"
	if r, err := cinder.ParseExportRecord(nfs, edit(func(m map[string]any) { m["service"] = nfs })); err != nil || r.Kind != cinder.NFS || r.Link().Kind != cinder.NFS {
		t.Errorf("nfs: %+v %v", r, err)
	}
}
