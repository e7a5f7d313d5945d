package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestVersions: GET / is 300 Multiple Choices and GET /v3/ 200, both
// naming v3 with its min and max microversions and a self link on the
// host asked.
func TestVersions(t *testing.T) {
	for _, c := range []struct {
		path string
		code int
	}{{"/", 300}, {"/v3/", 200}, {"/v3", 200}} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "http://gw.example:8776"+c.path, nil)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /{$}", versions)
		mux.HandleFunc("GET /v3/{$}", versions)
		mux.HandleFunc("GET /v3", versions)
		negotiate(mux).ServeHTTP(w, r)
		var doc struct {
			Versions []struct {
				ID, Status, Version string
				MinVersion          string `json:"min_version"`
				Links               []struct{ Rel, Href string }
			}
		}
		if w.Code != c.code || json.Unmarshal(w.Body.Bytes(), &doc) != nil || len(doc.Versions) != 1 {
			t.Fatalf("GET %s: %d %s", c.path, w.Code, w.Body)
		}
		v := doc.Versions[0]
		if v.ID != "v3.0" || v.Status != "CURRENT" || v.Version != MaxMicroversion || v.MinVersion != MinMicroversion ||
			len(v.Links) != 2 || v.Links[1].Href != "http://gw.example:8776/v3/" {
			t.Errorf("GET %s: %+v", c.path, v)
		}
	}
}

// TestNegotiate: the OpenStack-API-Version header is answered in kind
// (none is 3.0, latest the maximum), out of range is a 406 and not a
// version a 400, with the API's messages; paths outside /v3 are left
// alone.
func TestNegotiate(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	for _, c := range []struct {
		path, header string
		code         int
		echo, body   string
	}{
		{"/v3/p/volumes", "", 200, "volume 3.0", "ok"},
		{"/v3/p/volumes", "volume 3.66", 200, "volume 3.66", "ok"},
		{"/v3/p/volumes", "volume 3.27", 200, "volume 3.27", "ok"},
		{"/v3/p/volumes", "compute 2.1, volume 3.44", 200, "volume 3.44", "ok"},
		{"/v3/p/volumes", "volume latest", 200, "volume " + MaxMicroversion, "ok"},
		{"/v3/p/volumes", "volume 3.67", 406, "volume 3.0", `"message":"Version 3.67 is not supported by the API. Minimum is 3.0 and maximum is 3.66."`},
		{"/v3/p/volumes", "volume 2.0", 406, "volume 3.0", `"code":406`},
		{"/v3/p/volumes", "volume 3.x", 400, "volume 3.0", `{"badRequest":{"code":400,"message":"API Version String 3.x is of invalid format. Must be of format MajorNum.MinorNum."}}`},
		{"/healthz", "volume 3.99", 200, "", "ok"},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", c.path, nil)
		if c.header != "" {
			r.Header.Set("OpenStack-API-Version", c.header)
		}
		negotiate(ok).ServeHTTP(w, r)
		if w.Code != c.code || w.Header().Get("OpenStack-API-Version") != c.echo || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("%s with %q: %d %q %s, want %d %q %s", c.path, c.header, w.Code, w.Header().Get("OpenStack-API-Version"), w.Body, c.code, c.echo, c.body)
		}
		if c.echo != "" && w.Header().Get("Vary") != "OpenStack-API-Version" {
			t.Errorf("%s: Vary %q", c.path, w.Header().Get("Vary"))
		}
	}
}
