package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/blockvault/blockvault/pkg/metrics"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ownRoutes are the gateway's paths outside the OpenAPI document.
var ownRoutes = []string{"/healthz", "/openapi.json"}

// routes is the OpenAPI document's path templates, split into segments,
// most specific first (a literal segment before a {variable} one).
var routes = loadRoutes(openAPI)

func loadRoutes(doc []byte) [][]string {
	var d struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		panic("gateway: the embedded openapi.json: " + err.Error())
	}
	var out [][]string
	for p := range d.Paths {
		out = append(out, strings.Split(strings.Trim(p, "/"), "/"))
	}
	for _, p := range ownRoutes {
		out = append(out, []string{strings.Trim(p, "/")})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		for k := 0; k < len(a) && k < len(b); k++ {
			av, bv := isVar(a[k]), isVar(b[k])
			if av != bv {
				return !av
			}
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return len(a) < len(b)
	})
	return out
}

func isVar(seg string) bool { return strings.HasPrefix(seg, "{") }

// Route is the path template a request path falls under, e.g.
// /v3/{project_id}/volumes/{volume_id} for /v3/demo/volumes/2d2f...; a
// path under no template is "other" (so no label is made of what clients
// send).
func Route(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
next:
	for _, r := range routes {
		if len(r) != len(segs) {
			continue
		}
		for i, s := range r {
			if segs[i] == "" || !isVar(s) && s != segs[i] {
				continue next
			}
		}
		return "/" + strings.Join(r, "/")
	}
	return "other"
}

// methodLabel bounds the method label to the methods HTTP defines.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// statusWriter remembers the status code a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Observe counts and times every request h answers, by method, route and
// status code (metrics.HTTPRequests, metrics.HTTPSeconds).
func Observe(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			method, route := methodLabel(r.Method), Route(r.URL.Path)
			metrics.HTTPRequests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
			metrics.HTTPSeconds.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
}

// WithMonitoring serves GET /metrics and GET /readyz from mon (a
// metrics.Handler) beside the REST handler api, on the REST port; the
// gateway's own /healthz stays api's.
func WithMonitoring(api, mon http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", mon)
	mux.Handle("GET /readyz", mon)
	mux.Handle("/", api)
	return mux
}

// WatchBackends keeps ready set while both daemons answer their gRPC
// health checks with SERVING (checked every interval) until ctx is done.
func WatchBackends(ctx context.Context, ready *metrics.Ready, interval time.Duration, conns ...*grpc.ClientConn) {
	check := func() {
		for _, c := range conns {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			r, err := healthpb.NewHealthClient(c).Check(cctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				ready.Set(false)
				return
			}
		}
		ready.Set(true)
	}
	check()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			ready.Set(false)
			return
		case <-t.C:
			check()
		}
	}
}
