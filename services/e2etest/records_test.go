package e2etest

import (
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
)

// TestExportRecordHidesTheRepositoryFromMembers: a member's export_record
// names no server-side path (the record leaves out the repository's
// location), an admin's has it, and the member's record still imports (an
// admin's import of it reaches "already registered", past the parsing and
// the manifest check).
func TestExportRecordHidesTheRepositoryFromMembers(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "server-side-repository")
	s := Start(t, Options{Tokens: true, RepositoryDir: repo})
	const project = "project-rec"
	member := s.Token(project, auth.RoleMember)
	admin := s.Token("ops", auth.RoleAdmin)

	code, body := restAs(t, s, member, "POST", "/v3/"+project+"/volumes", `{"volume": {"size": 1, "name": "rec"}}`)
	if code != 202 {
		t.Fatalf("create volume: HTTP %d %v", code, body)
	}
	code, body = restAs(t, s, member, "POST", "/v3/"+project+"/backups", `{"backup": {"volume_id": "`+field(body, "volume", "id")+`"}}`)
	if code != 202 {
		t.Fatalf("create backup: HTTP %d %v", code, body)
	}
	id := field(body, "backup", "id")
	if b := waitBackupIn(t, s, project, id, time.Minute); b.GetStatus() != "available" {
		t.Fatalf("backup %s: %s", b.GetStatus(), b.GetFailReason())
	}

	record := func(token string) (string, map[string]any, string) {
		t.Helper()
		code, body := restAs(t, s, token, "GET", "/v3/"+project+"/backups/"+id+"/export_record", "")
		if code != 200 {
			t.Fatalf("export_record: HTTP %d %v", code, body)
		}
		url := field(body, "backup-record", "backup_url")
		raw, err := base64.StdEncoding.DecodeString(url)
		if err != nil {
			t.Fatalf("backup_url is not base64: %v", err)
		}
		var rec map[string]any
		if err := json.Unmarshal(raw, &rec); err != nil {
			t.Fatalf("backup_url does not decode to a JSON record: %v %q", err, raw)
		}
		return url, rec, string(raw)
	}

	murl, mrec, mraw := record(member)
	if strings.Contains(mraw, repo) || mrec["repository"] != nil {
		t.Errorf("a member's record names the repository: %s", mraw)
	}
	if mrec["backup_id"] != id {
		t.Errorf("a member's record: %s, want backup_id %s", mraw, id)
	}
	if _, arec, _ := record(admin); arec["repository"] != repo {
		t.Errorf("an admin's record: repository %v, want %s", arec["repository"], repo)
	}

	code, body = restAs(t, s, admin, "POST", "/v3/"+project+"/backups/import_record",
		`{"backup-record": {"backup_service": "blockvault", "backup_url": "`+murl+`"}}`)
	if code != 409 || !strings.Contains(field(body, "conflictingRequest", "message"), "already registered") {
		t.Errorf("importing a member's record: HTTP %d %v, want 409 already registered", code, body)
	}
}
