package e2etest

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/auth"
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
	bin, err := exec.LookPath("openstack")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the openstack CLI is not installed (.ci/deps.sh installs python3-openstackclient): %v", err)
		}
		t.Skipf("the openstack CLI is not installed: %v", err)
	}
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
