package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/services/backup"
	"github.com/blockvault/blockvault/services/gateway"
	"github.com/blockvault/blockvault/services/volumemanager/vmtest"
	"google.golang.org/grpc"
)

// newGateway is the gateway in process in front of the real volume manager
// (SQLite, the file driver, an NBD server) and the real backup service (a
// posix repository), both over bufconn.
func newGateway(t testing.TB) http.Handler {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	vm := vmtest.New(t, file.Config{})
	vmConn := vm.Conn
	bdbConn, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "bs.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(bdbConn) })
	bdb, err := backupdb.New(ctx, bdbConn)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := posix.New(filepath.Join(dir, "repository"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(repo, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bs := backup.New(backup.Config{Jobs: backupjob.Config{NodeID: "b", MaxConcurrent: 2}}, bdb, vmConn, eng, nil)
	t.Cleanup(bs.Close)
	bsConn := vmtest.Serve(t, func(s *grpc.Server) { backupv1.RegisterBackupServiceServer(s, bs) })

	h, err := gateway.New(ctx, gateway.Config{Volumes: vmConn, Backups: bsConn})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// routes the fuzzer aims at: method and path, with {v} and {b} replaced by
// an existing volume's and backup's id.
var routes = []struct{ method, path string }{
	{"POST", "/v3/p/volumes"},
	{"POST", "/v3/p/volumes/{v}/action"},
	{"POST", "/v3/p/snapshots"},
	{"POST", "/v3/p/attachments"},
	{"POST", "/v3/p/backups"},
	{"POST", "/v2/p/backups"},
	{"POST", "/v3/p/backups/{b}/restore"},
	{"POST", "/v3/p/backups/{b}/action"},
	{"POST", "/v3/p/backups/import_record"},
	{"GET", "/v3/p/volumes/{v}"},
	{"GET", "/v3/p/volumes/detail"},
	{"GET", "/v3/p/backups/detail"},
	{"DELETE", "/v3/p/volumes/{v}"},
	{"DELETE", "/v3/p/backups/{b}"},
}

// FuzzRequestDecoding sends arbitrary bodies and query strings to the
// gateway's routes. Whatever arrives, the answer is never a 5xx: bad input
// is a 4xx with a Block Storage API error body naming the problem.
func FuzzRequestDecoding(f *testing.F) {
	seeds := []string{
		`{"volume": {"size": 1}}`,
		`{"volume": {"size": "1"}}`,
		`{"volume": {"size": -1}}`,
		`{"volume": {"size": 1e100}}`,
		`{"volume": {"size": 1, "colour": "red"}}`,
		`{"volume": `,
		`[]`,
		`null`,
		`"volume"`,
		`{"volume": {"snapshot_id": "not-a-uuid", "size": 1}}`,
		`{"os-extend": {"new_size": 99999999999}}`,
		`{"os-extend": null}`,
		`{"os-reset_status": {"status": "nonsense"}}`,
		`{"backup": {"volume_id": "{v}", "force": "yes"}}`,
		`{"backup": {"volume_id": "../../etc", "container": "../x"}}`,
		`{"backup": {"volume_id": "{v}", "container": "` + strings.Repeat("c", 300) + `"}}`,
		`{"restore": {"volume_id": "00000000-0000-0000-0000-000000000000"}}`,
		`{"os-force_delete": {}}`,
		`{"backup-record": {"backup_service": "x", "backup_url": "!!"}}`,
		`{"attachment": {"volume_uuid": "{v}", "mode": "rx"}}`,
		"\x00\xff\xfe",
		`{"volume": {"name": "` + strings.Repeat("\u00e9", 300) + `", "size": 1}}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), s, "")
	}
	f.Add(uint8(10), "", "limit=-5&marker=zzz")
	f.Add(uint8(11), "", "limit=abc")
	f.Add(uint8(11), "", "all_tenants=maybe")
	h := newGateway(f)
	// One volume and one backup for the routes that name them.
	do := func(method, path, body string) (int, []byte) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		data, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, data
	}
	code, data := do("POST", "/v3/p/volumes", `{"volume": {"size": 1}}`)
	var v struct{ Volume struct{ ID string } }
	if code != 202 || json.Unmarshal(data, &v) != nil {
		f.Fatalf("setup volume: %d %s", code, data)
	}
	code, data = do("POST", "/v3/p/backups", `{"backup": {"volume_id": "`+v.Volume.ID+`"}}`)
	var b struct{ Backup struct{ ID string } }
	if code != 202 || json.Unmarshal(data, &b) != nil {
		f.Fatalf("setup backup: %d %s", code, data)
	}
	fill := func(s string) string {
		return strings.NewReplacer("{v}", v.Volume.ID, "{b}", b.Backup.ID).Replace(s)
	}

	f.Fuzz(func(t *testing.T, route uint8, body, query string) {
		r := routes[int(route)%len(routes)]
		path := fill(r.path)
		if query != "" {
			path += "?" + strings.Map(func(c rune) rune {
				if c <= ' ' || c == '#' || c > '~' {
					return -1
				}
				return c
			}, query)
		}
		req, err := http.NewRequest(r.method, path, strings.NewReader(fill(body)))
		if err != nil {
			return // not a request a client can send
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with %q: HTTP %d %s", r.method, path, body, rec.Code, rec.Body.Bytes())
		}
		if rec.Code >= 400 {
			var e map[string]struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || len(e) != 1 {
				t.Fatalf("%s %s: HTTP %d with a body that is not one API error: %q", r.method, path, rec.Code, rec.Body.Bytes())
			}
			for _, v := range e {
				if v.Code != rec.Code || v.Message == "" {
					t.Fatalf("%s %s: HTTP %d, error body %q", r.method, path, rec.Code, rec.Body.Bytes())
				}
			}
		}
	})
}

// TestOversizedBody: a body past the limit is 400 badRequest saying so,
// not a 500.
func TestOversizedBody(t *testing.T) {
	h := newGateway(t)
	big := `{"volume": {"size": 1, "name": "` + strings.Repeat("x", gateway.MaxBodyBytes) + `"}}`
	req := httptest.NewRequest("POST", "/v3/p/volumes", bytes.NewReader([]byte(big)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"badRequest"`) || !strings.Contains(rec.Body.String(), "larger than the limit") {
		t.Fatalf("oversized body: HTTP %d %s", rec.Code, rec.Body.String())
	}
}
