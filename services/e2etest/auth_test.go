package e2etest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// restAs sends a REST request with token as X-Auth-Token ("" sends none)
// and returns the status code and the decoded body.
func restAs(t *testing.T, s *Stack, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+s.Gateway.Addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("%s %s: HTTP %d, body not JSON: %q", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, out
}

// field digs a string out of a decoded body: field(m, "volume", "id").
func field(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

func idsOf(m map[string]any, key string) []string {
	var out []string
	items, _ := m[key].([]any)
	for _, it := range items {
		if mm, ok := it.(map[string]any); ok {
			out = append(out, mm["id"].(string))
		}
	}
	return out
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TestProjectsAreIsolated: with tokens on, a token of project A reaches
// nothing of project B's over REST or gRPC: B's ids answer 404 (ids do not
// leak), B's project path answers 403, and every attempt changes nothing.
// Admin-only actions are refused to members; admins list all projects.
func TestProjectsAreIsolated(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	ctx := context.Background()
	tokA := s.Token("project-a", auth.RoleMember)
	tokB := s.Token("project-b", auth.RoleMember)
	admin := s.Token("ops", auth.RoleAdmin)

	// Authentication.
	for name, tok := range map[string]string{
		"no token":       "",
		"tampered token": tokA[:len(tokA)-2] + "xx",
		"unknown token":  "not-a-token-at-all-0123456789",
		"expired token":  auth.Mint(s.SigningKey, auth.Identity{Project: "project-a", Roles: []string{auth.RoleMember}, Expires: time.Now().Add(-time.Minute).Unix()}),
		"foreign key":    auth.Mint([]byte(strings.Repeat("x", 40)), auth.Identity{Project: "project-a", Roles: []string{auth.RoleAdmin}}),
	} {
		code, body := restAs(t, s, tok, "GET", "/v3/project-a/volumes", "")
		if code != 401 || field(body, "unauthorized", "message") == "" {
			t.Errorf("%s: HTTP %d %v, want 401 with a message", name, code, body)
		}
	}
	if code, _ := restAs(t, s, tokA, "GET", "/v3/project-b/volumes", ""); code != 403 {
		t.Errorf("A's token on B's project path: HTTP %d, want 403", code)
	}

	// A's volume, attached, with a backup; B's volume.
	code, body := restAs(t, s, tokA, "POST", "/v3/project-a/volumes", `{"volume": {"size": 1, "name": "a-data"}}`)
	if code != 202 {
		t.Fatalf("A creates a volume: HTTP %d %v", code, body)
	}
	volA := field(body, "volume", "id")
	if code, body = restAs(t, s, tokA, "POST", "/v3/project-a/attachments", `{"attachment": {"volume_uuid": "`+volA+`"}}`); code != 200 && code != 201 && code != 202 {
		t.Fatalf("A attaches its volume: HTTP %d %v", code, body)
	}
	code, body = restAs(t, s, tokA, "POST", "/v3/project-a/backups", `{"backup": {"volume_id": "`+volA+`", "force": true}}`)
	if code != 202 {
		t.Fatalf("A backs up its volume: HTTP %d %v", code, body)
	}
	backupA := field(body, "backup", "id")
	if b := waitBackupIn(t, s, "project-a", backupA, testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("A's backup: %s %q", b.GetStatus(), b.GetFailReason())
	}
	code, body = restAs(t, s, tokB, "POST", "/v3/project-b/volumes", `{"volume": {"size": 2, "name": "b-data"}}`)
	if code != 202 {
		t.Fatalf("B creates a volume: HTTP %d %v", code, body)
	}
	volB := field(body, "volume", "id")

	// B, with B's token on B's paths, names A's ids: 404 every time.
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v3/project-b/volumes/" + volA, ""},
		{"DELETE", "/v3/project-b/volumes/" + volA, ""},
		{"POST", "/v3/project-b/volumes/" + volA + "/action", `{"os-extend": {"new_size": 3}}`},
		{"POST", "/v3/project-b/snapshots", `{"snapshot": {"volume_id": "` + volA + `", "force": true}}`},
		{"POST", "/v3/project-b/backups", `{"backup": {"volume_id": "` + volA + `", "force": true}}`},
		{"POST", "/v2/project-b/backups", `{"backup": {"volume_id": "` + volA + `", "force": true}}`},
		{"GET", "/v3/project-b/backups/" + backupA, ""},
		{"DELETE", "/v3/project-b/backups/" + backupA, ""},
		{"POST", "/v3/project-b/backups/" + backupA + "/restore", `{"restore": {"volume_id": "` + volB + `"}}`},
		{"POST", "/v3/project-b/backups/" + backupA + "/restore", `{"restore": {}}`},
		{"GET", "/v3/project-b/backups/" + backupA + "/export_record", ""},
	} {
		code, body := restAs(t, s, tokB, c.method, c.path, c.body)
		if code != 404 || field(body, "itemNotFound", "message") == "" {
			t.Errorf("B: %s %s: HTTP %d %v, want 404 itemNotFound", c.method, c.path, code, body)
		}
	}
	// A cannot restore into B's volume either.
	if code, body := restAs(t, s, tokA, "POST", "/v3/project-a/backups/"+backupA+"/restore", `{"restore": {"volume_id": "`+volB+`"}}`); code != 404 {
		t.Errorf("A restores into B's volume: HTTP %d %v, want 404", code, body)
	}
	// With A's token on A's path and B's id: 404 too.
	if code, _ := restAs(t, s, tokA, "DELETE", "/v3/project-a/volumes/"+volB, ""); code != 404 {
		t.Errorf("A deletes B's volume: HTTP %d, want 404", code)
	}

	// Lists show only one's own.
	_, body = restAs(t, s, tokB, "GET", "/v3/project-b/volumes/detail", "")
	if ids := idsOf(body, "volumes"); len(ids) != 1 || ids[0] != volB {
		t.Errorf("B's volume list: %v, want only %s", ids, volB)
	}
	_, body = restAs(t, s, tokB, "GET", "/v3/project-b/backups/detail", "")
	if ids := idsOf(body, "backups"); len(ids) != 0 {
		t.Errorf("B's backup list: %v, want none", ids)
	}

	// Nothing changed: A's volume in-use at 1 GiB, A's backup available,
	// no restore volume made anywhere.
	_, body = restAs(t, s, tokA, "GET", "/v3/project-a/volumes/"+volA, "")
	if field(body, "volume", "status") != "in-use" || body["volume"].(map[string]any)["size"].(float64) != 1 {
		t.Errorf("A's volume after B's attempts: %v", body["volume"])
	}
	if b := waitBackupIn(t, s, "project-a", backupA, time.Second); b.GetStatus() != "available" {
		t.Errorf("A's backup after B's attempts: %s", b.GetStatus())
	}
	all, err := s.Volumes.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: "ops", AllTenants: true})
	if err != nil || len(all.GetVolumes()) != 2 {
		t.Errorf("volumes in all projects: %v %d, want A's and B's only", err, len(all.GetVolumes()))
	}

	// Admin-only actions.
	_, body = restAs(t, s, admin, "GET", "/v3/ops/volumes?all_tenants=1", "")
	if ids := idsOf(body, "volumes"); !contains(ids, volA) || !contains(ids, volB) {
		t.Errorf("admin all_tenants list: %v", ids)
	}
	// A member's all_tenants is ignored, as the Block Storage API does
	// (cinderclient sends it to look a volume up by name): their own only.
	if code, body := restAs(t, s, tokA, "GET", "/v3/project-a/volumes?all_tenants=1", ""); code != 200 || !slices.Equal(idsOf(body, "volumes"), []string{volA}) {
		t.Errorf("member all_tenants: HTTP %d %v, want A's volume only", code, idsOf(body, "volumes"))
	}
	if code, body := restAs(t, s, tokA, "GET", "/v3/project-a/backups?all_tenants=1", ""); code != 200 || !slices.Equal(idsOf(body, "backups"), []string{backupA}) {
		t.Errorf("member all_tenants backups: HTTP %d %v, want A's backup only", code, idsOf(body, "backups"))
	}
	if code, _ := restAs(t, s, tokA, "POST", "/v3/project-a/backups/"+backupA+"/action", `{"os-reset_status": {"status": "error"}}`); code != 403 {
		t.Errorf("member os-reset_status: HTTP %d, want 403", code)
	}
	if code, _ := restAs(t, s, tokA, "POST", "/v3/project-a/backups/"+backupA+"/action", `{"os-force_delete": {}}`); code != 403 {
		t.Errorf("member os-force_delete: HTTP %d, want 403", code)
	}
	if code, _ := restAs(t, s, tokA, "POST", "/v3/project-a/volumes/"+volA+"/action", `{"os-reset_status": {"status": "error"}}`); code != 403 {
		t.Errorf("member volume os-reset_status: HTTP %d, want 403", code)
	}
	if code, body := restAs(t, s, admin, "POST", "/v3/project-a/backups/"+backupA+"/action", `{"os-reset_status": {"status": "error"}}`); code != 202 {
		t.Errorf("admin os-reset_status on A's backup: HTTP %d %v", code, body)
	}
	if b := waitBackupIn(t, s, "project-a", backupA, time.Second); b.GetStatus() != "error" {
		t.Errorf("after the admin's reset: %s", b.GetStatus())
	}

	// The same rules over gRPC, with the token in metadata.
	volsB, backupsB := s.ClientsAs(tokB)
	if _, err := volsB.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: "project-b", VolumeId: volA}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC: B gets A's volume: %v, want NotFound", err)
	}
	if _, err := volsB.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: "project-a", VolumeId: volA}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC: B names project A: %v, want PermissionDenied", err)
	}
	if _, err := backupsB.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: "project-b", Backup: &backupv1.BackupInput{VolumeId: volA, Force: true}}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC: B backs up A's volume: %v, want NotFound", err)
	}
	if _, err := s.internalAs(tokB).BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: "project-b", VolumeId: volB}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC: a member calls the internal BeginBackup: %v, want PermissionDenied", err)
	}
	volsNone, _ := s.ClientsAs("")
	if _, err := volsNone.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: "project-a"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC without a token: %v, want Unauthenticated", err)
	}
	if l, _ := s.Backups.ListBackups(ctx, &backupv1.ListBackupsRequest{ProjectId: "ops", AllTenants: true}); len(l.GetBackups()) != 1 {
		t.Errorf("backups in all projects: %d, want A's one", len(l.GetBackups()))
	}
}
