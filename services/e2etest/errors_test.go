package e2etest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/auth"
)

// faultKinds are the Block Storage API's error bodies by HTTP status.
var apiFaults = map[int]string{400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
	405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 500: "computeFault", 503: "serviceUnavailable"}

// checkFault checks that body is {"<kind>": {"code": code, "message": ...}}
// with the API's kind for code, a message holding want, and none of the
// decoders' words. It returns the message.
func checkFault(t *testing.T, what string, code int, body map[string]any, wantCode int, want string) string {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: HTTP %d %v, want %d", what, code, body, wantCode)
		return ""
	}
	kind := apiFaults[code]
	if len(body) != 1 || body[kind] == nil {
		t.Errorf("%s: body %v, want one %q object", what, body, kind)
		return ""
	}
	f, _ := body[kind].(map[string]any)
	msg, _ := f["message"].(string)
	if n, _ := f["code"].(float64); int(n) != code || msg == "" {
		t.Errorf("%s: %v, want code %d and a message", what, f, code)
	}
	for _, leak := range []string{"proto:", "strconv.", "type mismatch", "(line 1:"} {
		if strings.Contains(msg, leak) {
			t.Errorf("%s: the message %q is the decoder's (%q)", what, msg, leak)
		}
	}
	if !strings.Contains(msg, want) {
		t.Errorf("%s: message %q, want it to say %q", what, msg, want)
	}
	return msg
}

// TestRESTErrorBodies sends the bad requests a client makes through the
// real gateway and checks every error body is in the Block Storage API's
// shape, with a message in the API's words — the watch (streaming)
// endpoint's too.
func TestRESTErrorBodies(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	const project = "project-err"
	tok := s.Token(project, auth.RoleMember)
	vols := "/v3/" + project + "/volumes"
	code, body := restAs(t, s, tok, "POST", vols, `{"volume": {"size": 1}}`)
	if code != 202 {
		t.Fatalf("create: HTTP %d %v", code, body)
	}
	vol := field(body, "volume", "id")
	missing := "0b7c2a57-8e7e-4d7e-9a43-1d3c7b5e2f11"

	for _, c := range []struct {
		what, method, path, body string
		code                     int
		want                     string
	}{
		{"unknown field", "POST", vols, `{"volume": {"size": 1, "colour": "red"}}`, 400, `unknown field "colour"`},
		{"size not a number", "POST", vols, `{"volume": {"size": "big"}}`, 400, `Invalid input for field/attribute size. Value: "big". It must be an integer.`},
		{"size a fraction", "POST", vols, `{"volume": {"size": 1.5}}`, 400, "field/attribute size"},
		{"name not a string", "POST", vols, `{"volume": {"size": 1, "name": 5}}`, 400, "field/attribute name. Value: 5. It must be a string."},
		{"multiattach not a boolean", "POST", vols, `{"volume": {"size": 1, "multiattach": "yes"}}`, 400, "It must be a boolean"},
		{"metadata a list", "POST", vols, `{"volume": {"size": 1, "metadata": []}}`, 400, "Malformed request body: unexpected ["},
		{"volume not an object", "POST", vols, `{"volume": 3}`, 400, "Malformed request body"},
		{"truncated JSON", "POST", vols, `{"volume": {`, 400, "Malformed request body"},
		{"not JSON", "POST", vols, `{volume}`, 400, "Malformed request body: invalid character"},
		{"duplicate field", "POST", vols, `{"volume": {"size": 1, "size": 2}}`, 400, `"size" is given twice`},
		{"os-extend new_size not a number", "POST", vols + "/" + vol + "/action", `{"os-extend": {"new_size": "x"}}`, 400, "field/attribute new_size"},
		{"limit not a number", "GET", vols + "?limit=abc", "", 400, "Invalid input for query parameter limit. Value: abc. It must be an integer."},
		{"limit out of range", "GET", vols + "?limit=99999999999", "", 400, "query parameter limit"},
		{"all_tenants not a boolean", "GET", vols + "?all_tenants=yes", "", 400, "query parameter all_tenants"},
		{"malformed uuid", "GET", vols + "/not-a-uuid", "", 400, "volume_id"},
		{"missing volume", "GET", vols + "/" + missing, "", 404, missing},
		{"another project", "GET", "/v3/other-project/volumes", "", 403, "other-project"},
		{"no such route", "GET", "/v3/" + project + "/nothing-here", "", 404, "no resource"},
		{"wrong method", "PATCH", vols + "/" + vol, "", 405, "PATCH"},
		{"oversized body", "POST", vols, `{"volume": {"size": 1, "description": "` + strings.Repeat("x", 2<<20) + `"}}`, 400, "larger than the limit"},
		{"over the pool or quota", "POST", vols, `{"volume": {"size": 5000}}`, 413, "bytes requested"},
		// The watch endpoint streams; its errors come the same way.
		{"watch a missing backup", "GET", "/v3/" + project + "/backups/" + missing + "/watch", "", 404, missing},
		{"watch a malformed id", "GET", "/v3/" + project + "/backups/not-a-uuid/watch", "", 400, "backup_id"},
		{"watch another project's", "GET", "/v3/other-project/backups/" + missing + "/watch", "", 403, "other-project"},
	} {
		code, body := restAs(t, s, tok, c.method, c.path, c.body)
		checkFault(t, c.what, code, body, c.code, c.want)
	}
	code, body = restAs(t, s, "", "GET", "/v3/"+project+"/backups/"+missing+"/watch", "")
	checkFault(t, "watch without a token", code, body, 401, "X-Auth-Token")
	code, body = restAs(t, s, "", "GET", vols, "")
	checkFault(t, "list without a token", code, body, 401, "X-Auth-Token")
	code, body = restAs(t, s, "not-a-real-token-at-all", "GET", vols, "")
	checkFault(t, "a bad token", code, body, 401, "not valid")

	// A watch that works still streams its results, one JSON object a line.
	code, body = restAs(t, s, tok, "POST", "/v3/"+project+"/backups", `{"backup": {"volume_id": "`+vol+`"}}`)
	if code != 202 {
		t.Fatalf("create backup: HTTP %d %v", code, body)
	}
	req, _ := http.NewRequest("GET", "http://"+s.Gateway.Addr+"/v3/"+project+"/backups/"+field(body, "backup", "id")+"/watch", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var last map[string]map[string]map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); resp.StatusCode != 200 || err != nil || last["result"]["backup"]["status"] != "available" {
		t.Errorf("watch of a running backup: HTTP %d, %d lines, last %q (%v), want 200 ending with the backup available", resp.StatusCode, len(lines), lines[len(lines)-1], err)
	}
}
