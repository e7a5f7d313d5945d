package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// cinderRecordKey is the key the Block Storage API gives a backup record
// ("backup-record"); the proto field, and so grpc-gateway, says
// "backup_record". recordKeys renames it both ways so Cinder clients (the
// openstack CLI, gophercloud's backups.Export and Import) work; our own
// spelling is accepted too.
const cinderRecordKey = "backup-record"

func recordKeys(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/backups/import_record"):
			body, err := io.ReadAll(r.Body)
			if err != nil {
				writeError(w, http.StatusBadRequest, "request body: "+err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(renameKey(body, cinderRecordKey, "backup_record")))
			r.ContentLength = -1
			h.ServeHTTP(w, r)
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/export_record"):
			buf := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
			h.ServeHTTP(buf, r)
			body := buf.body.Bytes()
			if buf.code == http.StatusOK {
				body = renameKey(body, "backup_record", cinderRecordKey)
			}
			for k, v := range buf.header {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(buf.code)
			w.Write(body)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// renameKey renames the top-level key from to to in a JSON object; any
// other body is returned as it is (the decoder then says what is wrong).
func renameKey(body []byte, from, to string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	v, ok := m[from]
	if !ok {
		return body
	}
	if _, clash := m[to]; clash {
		return body
	}
	delete(m, from)
	m[to] = v
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return out
}

type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
