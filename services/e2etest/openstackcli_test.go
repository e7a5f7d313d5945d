package e2etest

import (
	"encoding/json"
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

// cinderclientCreateBody is the body python-cinderclient's volumes.create
// (what `openstack volume create --size 1 --property k=v cli-volume`
// calls) sends: every optional key present, null when not asked for.
const cinderclientCreateBody = `{"volume": {"size": 1, "consistencygroup_id": null, "snapshot_id": null, "name": "cli-volume",
	"description": null, "volume_type": null, "availability_zone": null, "metadata": {"k": "v"}, "imageRef": null,
	"source_volid": null, "backup_id": null}}`

// TestOpenStackCLIVolumeCreateBody: the openstack CLI's volume create body
// is accepted as it is, a value the gateway cannot honour in one of its
// keys is refused naming the key, and string sizes are taken where the
// Block Storage API takes them (size and os-extend's new_size, digits
// only).
func TestOpenStackCLIVolumeCreateBody(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	const project = "project-cli"
	tok := s.Token(project, auth.RoleMember)
	vols := "/v3/" + project + "/volumes"
	code, body := restAs(t, s, tok, "POST", vols, cinderclientCreateBody)
	if code != 202 || field(body, "volume", "name") != "cli-volume" {
		t.Fatalf("the openstack CLI's create body: HTTP %d %v", code, body)
	}
	vol := field(body, "volume", "id")
	if _, got := restAs(t, s, tok, "GET", vols+"/"+vol, ""); field(got, "volume", "status") != "available" ||
		field(got, "volume", "metadata", "k") != "v" {
		t.Errorf("the CLI's volume: %v", got)
	}

	for _, c := range []struct{ what, body, want string }{
		{"a consistency group", `{"volume": {"size": 1, "consistencygroup_id": "6f1f7d0e-2b7c-4c55-9d7a-3c1e9a4b2f10"}}`, "consistencygroup_id: consistency groups are not supported"},
		{"a group", `{"volume": {"size": 1, "group_id": "6f1f7d0e-2b7c-4c55-9d7a-3c1e9a4b2f10"}}`, "group_id: groups are not supported"},
		{"an image", `{"volume": {"size": 1, "imageRef": "6f1f7d0e-2b7c-4c55-9d7a-3c1e9a4b2f10"}}`, "imageRef: volumes from images are not supported"},
		{"a size with an exponent", `{"volume": {"size": "1e1"}}`, "Invalid input for field/attribute size"},
		{"a negative string size", `{"volume": {"size": "-1"}}`, "Invalid input for field/attribute size"},
		{"a size with spaces", `{"volume": {"size": " 1"}}`, "Invalid input for field/attribute size"},
	} {
		code, body := restAs(t, s, tok, "POST", vols, c.body)
		checkFault(t, c.what, code, body, 400, c.want)
	}
	// "2" is a size, as the Block Storage API's schema allows, and so is
	// os-extend's "3".
	code, body = restAs(t, s, tok, "POST", vols, `{"volume": {"size": "2"}}`)
	if code != 202 || body["volume"].(map[string]any)["size"] != float64(2) {
		t.Fatalf(`size "2": HTTP %d %v`, code, body)
	}
	id := field(body, "volume", "id")
	if code, body := restAs(t, s, tok, "POST", vols+"/"+id+"/action", `{"os-extend": {"new_size": "3"}}`); code != 202 {
		t.Fatalf(`os-extend new_size "3": HTTP %d %v`, code, body)
	}
	if _, got := restAs(t, s, tok, "GET", vols+"/"+id, ""); got["volume"].(map[string]any)["size"] != float64(3) {
		t.Errorf(`after os-extend to "3": %v`, got)
	}
	code, body = restAs(t, s, tok, "POST", vols+"/"+id+"/action", `{"os-extend": {"new_size": "4.0"}}`)
	checkFault(t, `os-extend new_size "4.0"`, code, body, 400, "field/attribute new_size")
}

// openstackCLI runs the openstack CLI (Debian's python3-openstackclient,
// installed by .ci/deps.sh) against the gateway with token-endpoint auth:
// the gateway's own token, no Keystone.
func openstackCLI(t *testing.T, s *Stack, project, token string, args ...string) (string, error) {
	t.Helper()
	bin := testenv.LookPath(t, "openstack")
	full := append([]string{"--os-auth-type", "admin_token", "--os-endpoint", "http://" + s.Gateway.Addr + "/v3/" + project,
		"--os-token", token, "--os-volume-api-version", "3"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestOpenStackCLI creates, shows, lists and deletes a volume with the
// real openstack CLI through the gateway, as a member.
func TestOpenStackCLI(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	const project = "project-osc"
	tok := s.Token(project, auth.RoleMember)
	run := func(args ...string) string {
		t.Helper()
		out, err := openstackCLI(t, s, project, tok, args...)
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	var vol struct {
		ID         string            `json:"id"`
		Name       string            `json:"name"`
		Size       int               `json:"size"`
		Status     string            `json:"status"`
		Properties map[string]string `json:"properties"`
	}
	out := run("volume", "create", "--size", "1", "--property", "k=v", "--description", "made by the openstack CLI", "-f", "json", "osc-volume")
	if err := json.Unmarshal([]byte(out), &vol); err != nil || vol.ID == "" || vol.Name != "osc-volume" || vol.Size != 1 || vol.Properties["k"] != "v" {
		t.Fatalf("openstack volume create: %v %+v\n%s", err, vol, out)
	}
	if _, got := restAs(t, s, tok, "GET", "/v3/"+project+"/volumes/"+vol.ID, ""); field(got, "volume", "description") != "made by the openstack CLI" {
		t.Errorf("the CLI's volume over REST: %v", got)
	}
	out = run("volume", "show", "-f", "json", vol.ID)
	if err := json.Unmarshal([]byte(out), &vol); err != nil || vol.Status != "available" {
		t.Errorf("openstack volume show: %v %+v\n%s", err, vol, out)
	}
	var list []struct {
		ID   string `json:"ID"`
		Name string `json:"Name"`
	}
	out = run("volume", "list", "-f", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].ID != vol.ID {
		t.Errorf("openstack volume list: %v %+v\n%s", err, list, out)
	}
	run("volume", "delete", vol.ID)
	if code, _ := restAs(t, s, tok, "GET", "/v3/"+project+"/volumes/"+vol.ID, ""); code != 404 {
		t.Errorf("after openstack volume delete: HTTP %d, want 404", code)
	}
}

// TestOpenStackCLIBackupsAndMore: the rest of what users type with the
// openstack CLI, as a member: volume set --size (extend), --name and
// --description, snapshots, backup records (export here, import into a
// second deployment),
// backups (--force, --incremental, --snapshot), restore, zones, limits;
// and, for what needs an API the gateway does not have, the error the
// client prints for it.
func TestOpenStackCLIBackupsAndMore(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repository")
	s := Start(t, Options{Tokens: true, RepositoryDir: repo})
	const project = "project-osc"
	tok := s.Token(project, auth.RoleMember)
	try := func(args ...string) (string, error) {
		t.Helper()
		return openstackCLI(t, s, project, tok, args...)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := try(args...)
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	show := func(args ...string) map[string]any {
		t.Helper()
		var m map[string]any
		out := run(append(args, "-f", "json")...)
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return m
	}
	list := func(args ...string) []map[string]any {
		t.Helper()
		var l []map[string]any
		out := run(append(args, "-f", "json")...)
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return l
	}
	wait := func(kind, id string, passing ...string) map[string]any {
		t.Helper()
		deadline := time.Now().Add(testenv.Patience)
		for {
			m := show(append(strings.Fields(kind), "show", id)...)
			if st, _ := m["status"].(string); !slices.Contains(passing, st) || time.Now().After(deadline) {
				return m
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	has := func(l []map[string]any, key, value string) map[string]any {
		for _, m := range l {
			if m[key] == value {
				return m
			}
		}
		return nil
	}

	vol := show("volume", "create", "--size", "1", "osc-data")
	id, _ := vol["id"].(string)
	if v := wait("volume", id, "creating"); v["status"] != "available" {
		t.Fatalf("openstack volume show: %v", v)
	}
	// volume set --size is the extend.
	run("volume", "set", "--size", "2", id)
	if v := wait("volume", id, "extending"); v["size"] != float64(2) || v["status"] != "available" {
		t.Errorf("openstack volume show after volume set --size 2: %v", v)
	}
	// volume set --name and --description: PUT of the volume (the CLI
	// sends display_name and display_description).
	run("volume", "set", "--name", "osc-renamed", "--description", "renamed by the CLI", id)
	if v := show("volume", "show", id); v["name"] != "osc-renamed" || v["description"] != "renamed by the CLI" || v["size"] != float64(2) {
		t.Errorf("openstack volume show after volume set --name --description: %v", v)
	}
	for _, c := range []struct{ what, body, want string }{
		{"nothing to set", `{"volume": {}}`, "Missing required element 'volume'"},
		{"no body", `{}`, "Missing required element 'volume'"},
		{"a size", `{"volume": {"size": 3}}`, `unknown field "size"`},
	} {
		code, body := restAs(t, s, tok, "PUT", "/v3/"+project+"/volumes/"+id, c.body)
		checkFault(t, "PUT of a volume with "+c.what, code, body, 400, c.want)
	}
	code, body := restAs(t, s, s.Token("someone-else", auth.RoleMember), "PUT", "/v3/"+project+"/volumes/"+id, `{"volume": {"name": "taken"}}`)
	checkFault(t, "PUT of another project's volume", code, body, 403, project)
	// What needs an API the gateway has not: the metadata sub-resource.
	// The client says which call failed and the gateway's Block Storage
	// error.
	out, err := try("volume", "set", "--property", "k=v", id)
	if err == nil || !strings.Contains(out, "Failed to set volume property: no resource at POST /v3/"+project+"/volumes/"+id+"/metadata (HTTP 404)") {
		t.Errorf("openstack volume set --property: %v\n%s", err, out)
	}
	if v := show("volume", "show", id); v["name"] != "osc-renamed" {
		t.Errorf("after the refused volume set --property: %v", v)
	}

	// snapshots
	snap := show("volume", "snapshot", "create", "--volume", id, "osc-snap")
	sid, _ := snap["id"].(string)
	if sn := wait("volume snapshot", sid, "creating"); sn["status"] != "available" || sn["volume_id"] != id || sn["size"] != float64(2) {
		t.Fatalf("openstack volume snapshot show: %v", sn)
	}
	if r := has(list("volume", "snapshot", "list"), "ID", sid); r == nil || r["Name"] != "osc-snap" || r["Status"] != "available" {
		t.Errorf("openstack volume snapshot list: %v", r)
	}

	// backups: full, in use with --force, --incremental, --snapshot
	full := show("volume", "backup", "create", "--name", "osc-full", id)
	bid, _ := full["id"].(string)
	if b := wait("volume backup", bid, "creating"); b["status"] != "available" || b["is_incremental"] != false || b["volume_id"] != id {
		t.Fatalf("openstack volume backup show: %v", b)
	}
	code, body = restAs(t, s, tok, "POST", "/v3/"+project+"/attachments", `{"attachment": {"volume_uuid": "`+id+`", "instance_uuid": "7b9b2b57-7a0f-4d4d-8d6e-2f2b8c1e9a01", "connector": {}}}`)
	if code != 200 {
		t.Fatalf("attach: HTTP %d %v", code, body)
	}
	att := field(body, "attachment", "id")
	// volume list reads each attachment's device (the table's "Attached
	// to <server> on <device>").
	out = run("volume", "list")
	if !regexp.MustCompile(`\| ` + id + ` \| osc-renamed +\| in-use +\| +2 \| Attached to 7b9b2b57-7a0f-4d4d-8d6e-2f2b8c1e9a01 on +\|`).MatchString(out) {
		t.Errorf("openstack volume list with an attached volume:\n%s", out)
	}
	out, err = try("volume", "backup", "create", id)
	if err == nil || !strings.Contains(out, "Backing up an in-use volume must use the force flag. (HTTP 400)") {
		t.Errorf("openstack volume backup create of an in-use volume without --force: %v\n%s", err, out)
	}
	incr := show("volume", "backup", "create", "--force", "--incremental", "--name", "osc-incr", id)
	iid, _ := incr["id"].(string)
	if b := wait("volume backup", iid, "creating"); b["status"] != "available" || b["is_incremental"] != true || b["parent_id"] != bid {
		t.Errorf("openstack volume backup show of the --incremental one: %v", b)
	}
	sb := show("volume", "backup", "create", "--force", "--snapshot", sid, "--name", "osc-snapbk", id)
	sbid, _ := sb["id"].(string)
	if b := wait("volume backup", sbid, "creating"); b["status"] != "available" || b["snapshot_id"] != sid {
		t.Errorf("openstack volume backup show of the snapshot's: %v", b)
	}
	backups := list("volume", "backup", "list")
	for _, b := range []string{bid, iid, sbid} {
		if r := has(backups, "ID", b); r == nil || r["Status"] != "available" || r["Size"] != float64(2) {
			t.Errorf("openstack volume backup list: %s: %v", b, r)
		}
	}
	if code, body := restAs(t, s, tok, "DELETE", "/v3/"+project+"/attachments/"+att, ""); code != 200 && code != 202 {
		t.Fatalf("detach: HTTP %d %v", code, body)
	}

	// restore into a new volume: the restore is made (202), then this
	// version of the CLI (Debian's 6.0.0) fails printing its answer, a bug
	// of the client's: it returns the restore where a table is expected.
	out, err = try("volume", "backup", "restore", bid, "osc-restored")
	if err == nil || !strings.Contains(out, "cannot unpack non-iterable VolumeBackupsRestore object") {
		t.Errorf("openstack volume backup restore: %v\n%s (the client's bug fixed? then check its table)", err, out)
	}
	deadline := time.Now().Add(testenv.Patience)
	var rv map[string]any
	for {
		rv = show("volume", "show", "osc-restored")
		if rv["status"] == "available" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rv["status"] != "available" || rv["size"] != float64(2) {
		t.Errorf("openstack volume show of the restored volume: %v", rv)
	}

	// export the full backup's record; an admin imports it into a second
	// deployment over the same repository, where it is the same backup.
	rec := show("volume", "backup", "record", "export", bid)
	if rec["backup_service"] != "blockvault" || rec["backup_url"] == "" {
		t.Fatalf("openstack volume backup record export: %v", rec)
	}
	s2 := Start(t, Options{Tokens: true, RepositoryDir: repo})
	url, _ := rec["backup_url"].(string)
	out, err = openstackCLI(t, s2, project, s2.Token("ops", auth.RoleAdmin), "volume", "backup", "record", "import", "-f", "json", "blockvault", url)
	var imp map[string]any
	if err != nil || json.Unmarshal([]byte(out), &imp) != nil || imp["id"] != bid {
		t.Fatalf("openstack volume backup record import: %v %v\n%s", err, imp, out)
	}
	out, err = openstackCLI(t, s2, project, s2.Token(project, auth.RoleMember), "volume", "backup", "show", "-f", "json", bid)
	var moved map[string]any
	if err != nil || json.Unmarshal([]byte(out), &moved) != nil || moved["status"] != "available" || moved["size"] != float64(2) {
		t.Errorf("openstack volume backup show of the imported backup: %v %v\n%s", err, moved, out)
	}

	// zones and limits: 2 volumes and a snapshot of 2 GiB, 3 backups
	if z := list("availability", "zone", "list", "--volume"); len(z) != 1 || z[0]["Zone Name"] != "nova" || z[0]["Zone Status"] != "available" {
		t.Errorf("openstack availability zone list --volume: %v", z)
	}
	limits := list("limits", "show", "--absolute")
	for k, want := range map[string]float64{"totalVolumesUsed": 2, "totalGigabytesUsed": 6, "totalSnapshotsUsed": 1, "totalBackupsUsed": 3, "maxTotalVolumes": -1} {
		if r := has(limits, "Name", k); r == nil || r["Value"] != want {
			t.Errorf("openstack limits show --absolute: %s: %v, want %v", k, r, want)
		}
	}
	// quota show looks the project up in Keystone (GET .../projects/{id}
	// on the one endpoint admin_token gives), which the gateway is not:
	// the Block Storage quotas are os-quota-sets over REST, or cinder
	// quota-show.
	out, err = try("quota", "show", project)
	if err == nil || !strings.Contains(out, "No project with a name or ID of '"+project+"' exists.") {
		t.Errorf("openstack quota show: %v\n%s", err, out)
	}

	// deletes
	run("volume", "backup", "delete", sbid)
	run("volume", "snapshot", "delete", sid)
	rid, _ := rv["id"].(string)
	run("volume", "delete", rid)
	for what, path := range map[string]string{"backup": "/backups/" + sbid, "snapshot": "/snapshots/" + sid, "volume": "/volumes/" + rid} {
		deadline := time.Now().Add(testenv.Patience)
		for {
			code, body := restAs(t, s, tok, "GET", "/v3/"+project+path, "")
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
	if r := has(list("volume", "backup", "list"), "ID", sbid); r != nil {
		t.Errorf("openstack volume backup list after delete: %v", r)
	}
}
