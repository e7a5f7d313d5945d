package e2etest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// cinderCLI runs the cinder command (Debian's python3-cinderclient,
// installed by .ci/deps.sh) with auth, the flags of one of the two set-ups
// docs/api.md shows; it returns stdout and stderr apart (the client warns
// on stderr).
type cinderCLI struct {
	t    *testing.T
	bin  string
	auth []string
	home string
}

func newCinderCLI(t *testing.T, auth ...string) *cinderCLI {
	t.Helper()
	return &cinderCLI{t: t, bin: testenv.LookPath(t, "cinder"), auth: auth, home: t.TempDir()}
}

// try runs cinder args and returns what it printed and its error.
func (c *cinderCLI) try(args ...string) (string, string, error) {
	c.t.Helper()
	cmd := exec.Command(c.bin, append(append([]string{}, c.auth...), args...)...)
	env := []string{"HOME=" + c.home}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") && !strings.HasPrefix(e, "HOME=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// run is try that fails the test when cinder exits non-zero.
func (c *cinderCLI) run(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("cinder %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// cliRows are the rows of the tables the cinder command prints, each a
// slice of its cells, header rows included.
func cliRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// cliProps reads a "Property | Value" table (show, create).
func cliProps(t *testing.T, what, out string) map[string]string {
	t.Helper()
	rows := cliRows(out)
	if len(rows) < 2 || len(rows[0]) != 2 {
		t.Fatalf("%s: not a property table:\n%s", what, out)
	}
	m := map[string]string{}
	for _, r := range rows[1:] {
		m[r[0]] = r[1]
	}
	return m
}

// cliList reads a list table into one map per row, keyed by the header.
func cliList(t *testing.T, what, out string) []map[string]string {
	t.Helper()
	rows := cliRows(out)
	if len(rows) < 1 {
		t.Fatalf("%s: no table:\n%s", what, out)
	}
	var list []map[string]string
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			if i < len(r) {
				m[h] = r[i]
			}
		}
		list = append(list, m)
	}
	return list
}

// rowWith is the row of list whose key is value (nil when none).
func rowWith(list []map[string]string, key, value string) map[string]string {
	for _, r := range list {
		if r[key] == value {
			return r
		}
	}
	return nil
}

var reUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// waitCinder polls `cinder <show> id` until its status is not one of
// passing, and returns the last table.
func waitCinder(t *testing.T, c *cinderCLI, show, id string, passing ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for {
		p := cliProps(t, show, c.run(show, id))
		if !slices.Contains(passing, p["status"]) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("cinder %s %s: still %s after %v", show, id, p["status"], testenv.Patience)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cinderFlow runs the commands users type, through the real cinder
// command, against s, in project, and checks what they print. It returns
// the first backup's exported record (service, url).
func cinderFlow(t *testing.T, s *Stack, c *cinderCLI, project string) (string, string, string) {
	// create, list, show, extend
	vol := cliProps(t, "create", c.run("create", "--name", "cinder-vol", "--description", "made by cinder", "1"))
	id := vol["id"]
	if !reUUID.MatchString(id) || vol["name"] != "cinder-vol" || vol["size"] != "1" || vol["project_id"] != project {
		t.Fatalf("cinder create: %v", vol)
	}
	if vol = waitCinder(t, c, "show", id, "creating"); vol["status"] != "available" || vol["description"] != "made by cinder" {
		t.Fatalf("cinder show after create: %v", vol)
	}
	if r := rowWith(cliList(t, "list", c.run("list")), "ID", id); r == nil || r["Status"] != "available" || r["Name"] != "cinder-vol" || r["Size"] != "1" {
		t.Errorf("cinder list: row %v", r)
	}
	c.run("rename", "--description", "renamed by cinder", id, "cinder-renamed")
	if vol = cliProps(t, "show", c.run("show", id)); vol["name"] != "cinder-renamed" || vol["description"] != "renamed by cinder" {
		t.Errorf("cinder show after rename: %v", vol)
	}
	c.run("extend", id, "2")
	if vol = waitCinder(t, c, "show", id, "extending"); vol["size"] != "2" || vol["status"] != "available" {
		t.Errorf("cinder show after extend to 2: %v", vol)
	}

	// snapshots
	snap := cliProps(t, "snapshot-create", c.run("snapshot-create", "--name", "cinder-snap", id))
	sid := snap["id"]
	if !reUUID.MatchString(sid) || snap["volume_id"] != id || snap["name"] != "cinder-snap" || snap["size"] != "2" {
		t.Fatalf("cinder snapshot-create: %v", snap)
	}
	if snap = waitCinder(t, c, "snapshot-show", sid, "creating"); snap["status"] != "available" {
		t.Fatalf("cinder snapshot-show: %v", snap)
	}
	if r := rowWith(cliList(t, "snapshot-list", c.run("snapshot-list")), "ID", sid); r == nil || r["Volume ID"] != id || r["Status"] != "available" || r["Size"] != "2" {
		t.Errorf("cinder snapshot-list: row %v", r)
	}

	// backups: full, then in use (--force), incremental, of a snapshot
	full := cliProps(t, "backup-create", c.run("backup-create", "--name", "cinder-full", id))
	bid := full["id"]
	if !reUUID.MatchString(bid) || full["volume_id"] != id || full["name"] != "cinder-full" {
		t.Fatalf("cinder backup-create: %v", full)
	}
	if full = waitCinder(t, c, "backup-show", bid, "creating"); full["status"] != "available" || full["is_incremental"] != "False" || full["size"] != "2" {
		t.Fatalf("cinder backup-show of the full backup: %v", full)
	}
	att := cliProps(t, "attachment-create", c.run("attachment-create", id, "7b9b2b57-7a0f-4d4d-8d6e-2f2b8c1e9a01"))
	if att["volume_id"] != id || att["attach_mode"] != "rw" {
		t.Fatalf("cinder attachment-create: %v", att)
	}
	if vol = cliProps(t, "show", c.run("show", id)); vol["status"] != "in-use" {
		t.Fatalf("cinder show after attachment-create: %v", vol)
	}
	_, errOut, err := c.try("backup-create", id)
	if err == nil || !strings.Contains(errOut, "Backing up an in-use volume must use the force flag. (HTTP 400)") {
		t.Errorf("cinder backup-create of an in-use volume without --force: %v\n%s", err, errOut)
	}
	incr := cliProps(t, "backup-create --force --incremental", c.run("backup-create", "--force", "--incremental", "--name", "cinder-incr", id))
	if incr = waitCinder(t, c, "backup-show", incr["id"], "creating"); incr["status"] != "available" || incr["is_incremental"] != "True" || incr["parent_id"] != bid {
		t.Errorf("cinder backup-show of the --incremental backup: %v", incr)
	}
	fromSnap := cliProps(t, "backup-create --snapshot-id", c.run("backup-create", "--snapshot-id", sid, "--name", "cinder-snapbk", id))
	if fromSnap["snapshot_id"] != sid {
		t.Errorf("cinder backup-create --snapshot-id: %v", fromSnap)
	}
	if fromSnap = waitCinder(t, c, "backup-show", fromSnap["id"], "creating"); fromSnap["status"] != "available" || fromSnap["snapshot_id"] != sid {
		t.Errorf("cinder backup-show of the snapshot's backup: %v", fromSnap)
	}
	backups := cliList(t, "backup-list", c.run("backup-list"))
	for _, b := range []map[string]string{full, incr, fromSnap} {
		if r := rowWith(backups, "ID", b["id"]); r == nil || r["Volume ID"] != id || r["Status"] != "available" || r["Name"] != b["name"] {
			t.Errorf("cinder backup-list: row of %s: %v", b["name"], r)
		}
	}
	c.run("attachment-delete", att["id"])
	if vol = waitCinder(t, c, "show", id, "detaching"); vol["status"] != "available" {
		t.Errorf("cinder show after attachment-delete: %v", vol)
	}

	// restore into a new volume
	rest := cliProps(t, "backup-restore", c.run("backup-restore", "--name", "cinder-restored", bid))
	rid := rest["volume_id"]
	if rest["backup_id"] != bid || !reUUID.MatchString(rid) || rest["volume_name"] != "cinder-restored" {
		t.Fatalf("cinder backup-restore: %v", rest)
	}
	if rv := waitCinder(t, c, "show", rid, "creating", "restoring-backup"); rv["status"] != "available" || rv["size"] != "2" || rv["name"] != "cinder-restored" {
		t.Errorf("cinder show of the restored volume: %v", rv)
	}

	// export
	rec := cliProps(t, "backup-export", c.run("backup-export", bid))
	if rec["backup_service"] != "blockvault" || rec["backup_url"] == "" {
		t.Errorf("cinder backup-export: %v", rec)
	}

	// quotas, zones, limits: 2 volumes and a snapshot of 2 GiB each, 3 backups of 2 GiB
	quotas := cliProps(t, "quota-show", c.run("quota-show", project))
	for _, k := range []string{"volumes", "gigabytes", "snapshots", "backups", "backup_gigabytes"} {
		if quotas[k] != "-1" {
			t.Errorf("cinder quota-show: %s = %q, want -1 (the stack's quotas are off): %v", k, quotas[k], quotas)
		}
	}
	usage := cliList(t, "quota-usage", c.run("quota-usage", project))
	for k, want := range map[string]string{"volumes": "2", "gigabytes": "6", "snapshots": "1", "backups": "3", "backup_gigabytes": "6"} {
		if r := rowWith(usage, "Type", k); r == nil || r["In_use"] != want || r["Limit"] != "-1" {
			t.Errorf("cinder quota-usage: %s row %v, want in use %s, limit -1", k, r, want)
		}
	}
	zones := cliList(t, "availability-zone-list", c.run("availability-zone-list"))
	if len(zones) != 1 || zones[0]["Name"] != "nova" || zones[0]["Status"] != "available" {
		t.Errorf("cinder availability-zone-list: %v", zones)
	}
	limits := cliList(t, "absolute-limits", c.run("absolute-limits"))
	for k, want := range map[string]string{"totalVolumesUsed": "2", "totalGigabytesUsed": "6", "totalSnapshotsUsed": "1", "totalBackupsUsed": "3", "maxTotalVolumes": "-1"} {
		if r := rowWith(limits, "Name", k); r == nil || r["Value"] != want {
			t.Errorf("cinder absolute-limits: %s row %v, want %s", k, r, want)
		}
	}

	// deletes
	c.run("backup-delete", fromSnap["id"])
	c.run("snapshot-delete", sid)
	out := c.run("delete", rid)
	if !strings.Contains(out, "Request to delete volume "+rid+" has been accepted.") {
		t.Errorf("cinder delete: %q", out)
	}
	for what, path := range map[string]string{"backup": "/backups/" + fromSnap["id"], "snapshot": "/snapshots/" + sid, "volume": "/volumes/" + rid} {
		deadline := time.Now().Add(testenv.Patience)
		for {
			code, body := restAs(t, s, c.token(), "GET", "/v3/"+project+path, "")
			if code == 404 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the deleted %s: HTTP %d %v, want 404", what, code, body)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	_, errOut, err = c.try("show", rid)
	if err == nil || !strings.Contains(errOut, "No volume with a name or ID of '"+rid+"' exists.") {
		t.Errorf("cinder show of the deleted volume: %v %s", err, errOut)
	}
	return rec["backup_service"], rec["backup_url"], bid
}

// token is the X-Auth-Token the cinder command sends (noauth: user:project).
func (c *cinderCLI) token() string {
	for i, a := range c.auth {
		if a == "--os-token" {
			return c.auth[i+1]
		}
	}
	var user, project string
	for i, a := range c.auth {
		switch a {
		case "--os-user-id":
			user = c.auth[i+1]
		case "--os-project-id":
			project = c.auth[i+1]
		}
	}
	return user + ":" + project
}

// TestCinderClientNoAuth: the cinder command with its noauth plugin
// against daemons run with --auth noauth (development): the endpoint is
// the gateway's /v3/{project_id}; the client negotiates the microversion
// (3.66, it asks for 3.70 and says it downgrades).
func TestCinderClientNoAuth(t *testing.T) {
	s := Start(t, Options{})
	const project = "project-cinder"
	c := newCinderCLI(t, "--os-auth-type", "noauth", "--os-endpoint", "http://"+s.Gateway.Addr+"/v3/"+project,
		"--os-project-id", project, "--os-user-id", "cinder-user")
	_, errOut, err := c.try("list")
	if err != nil || !strings.Contains(errOut, "downgrading to 3.66 based on server support") {
		t.Errorf("cinder list: %v, stderr %q, want the client to negotiate 3.66", err, errOut)
	}
	_, url, bid := cinderFlow(t, s, c, project)
	// The record is of a backup this deployment has: importing it again
	// is refused.
	_, errOut, err = c.try("backup-import", "blockvault", url)
	if err == nil || !strings.Contains(errOut, "backup "+bid+" is already registered here (HTTP 409)") {
		t.Errorf("cinder backup-import of a registered backup: %v %s", err, errOut)
	}
}

// TestCinderClientToken: the cinder command with a blockvault token and
// the gateway as its endpoint (--os-auth-type admin_token, --os-endpoint,
// --os-token), as a member; an admin imports the exported record into a
// second deployment sharing the repository, where the backup restores.
func TestCinderClientToken(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repository")
	s := Start(t, Options{Tokens: true, RepositoryDir: repo})
	const project = "project-cinder"
	tokenCLI := func(s *Stack, token string) *cinderCLI {
		return newCinderCLI(t, "--os-auth-type", "admin_token", "--os-endpoint", "http://"+s.Gateway.Addr+"/v3/"+project,
			"--os-token", token, "--os-project-id", project, "--os-volume-api-version", "3.66")
	}
	member := tokenCLI(s, s.Token(project, auth.RoleMember))
	service, url, bid := cinderFlow(t, s, member, project)

	// A member of another project is refused.
	other := newCinderCLI(t, "--os-auth-type", "admin_token", "--os-endpoint", "http://"+s.Gateway.Addr+"/v3/"+project,
		"--os-token", s.Token("someone-else", auth.RoleMember), "--os-project-id", project, "--os-volume-api-version", "3.66")
	if _, errOut, err := other.try("list"); err == nil || !strings.Contains(errOut, "(HTTP 403)") {
		t.Errorf("cinder list as a member of another project: %v %s", err, errOut)
	}

	// Import into a second deployment over the same repository (admin).
	s2 := Start(t, Options{Tokens: true, RepositoryDir: repo})
	admin2 := tokenCLI(s2, s2.Token("ops", auth.RoleAdmin))
	imp := cliProps(t, "backup-import", admin2.run("backup-import", service, url))
	if imp["id"] != bid {
		t.Fatalf("cinder backup-import: %v, want backup %s", imp, bid)
	}
	member2 := tokenCLI(s2, s2.Token(project, auth.RoleMember))
	if b := waitCinder(t, member2, "backup-show", bid, "creating"); b["status"] != "available" || b["size"] != "2" {
		t.Errorf("cinder backup-show of the imported backup: %v", b)
	}
	rest := cliProps(t, "backup-restore", member2.run("backup-restore", "--name", "moved", bid))
	if rv := waitCinder(t, member2, "show", rest["volume_id"], "creating", "restoring-backup"); rv["status"] != "available" || rv["size"] != "2" {
		t.Errorf("cinder show of the volume restored from the imported backup: %v", rv)
	}
	member2.run("backup-delete", bid)
}
