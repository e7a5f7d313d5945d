// Package gateway is the REST endpoint: grpc-gateway handlers generated from
// the protos, forwarding to the volume manager and the backup service, with
// the Block Storage API's conventions (snake_case bodies, 202 for
// asynchronous calls, {"badRequest": {...}} error bodies).
package gateway

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// openAPI is the OpenAPI document generated from the protos (make generate
// copies it here from gen/openapiv2).
//
//go:embed openapi.json
var openAPI []byte

// MaxBodyBytes caps a request body.
const MaxBodyBytes = 1 << 20

// Config of the gateway.
type Config struct {
	// Volumes and Backups are connections to the two daemons.
	Volumes *grpc.ClientConn
	Backups *grpc.ClientConn
	Log     *slog.Logger
}

// accepted lists the RPCs the Block Storage API answers with 202 Accepted.
var accepted = map[string]bool{
	"/blockvault.volume.v1.VolumeManagerService/CreateVolume":   true,
	"/blockvault.volume.v1.VolumeManagerService/DeleteVolume":   true,
	"/blockvault.volume.v1.VolumeManagerService/VolumeAction":   true,
	"/blockvault.volume.v1.VolumeManagerService/CreateSnapshot": true,
	"/blockvault.volume.v1.VolumeManagerService/DeleteSnapshot": true,
	"/blockvault.backup.v1.BackupService/CreateBackup":          true,
	"/blockvault.backup.v1.BackupService/DeleteBackup":          true,
	"/blockvault.backup.v1.BackupService/RestoreBackup":         true,
	"/blockvault.backup.v1.BackupService/BackupAction":          true,
}

// created lists the RPCs answered with 201 Created.
var created = map[string]bool{
	"/blockvault.backup.v1.BackupService/ImportBackupRecord": true,
}

// New returns the gateway's HTTP handler.
func New(ctx context.Context, cfg Config) (http.Handler, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	marshaler := &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		runtime.WithForwardResponseOption(statusCode),
		runtime.WithMetadata(func(ctx context.Context, r *http.Request) metadata.MD {
			id := r.Header.Get(requestid.Key)
			if id == "" || len(id) > 128 {
				id = requestid.New()
			}
			return metadata.Pairs(requestid.Key, id)
		}),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, "X-Auth-Token") {
				return "x-auth-token", true
			}
			return runtime.DefaultHeaderMatcher(h)
		}),
	)
	if err := volumev1.RegisterVolumeManagerServiceHandler(ctx, mux, cfg.Volumes); err != nil {
		return nil, fmt.Errorf("gateway: register volume manager: %w", err)
	}
	if err := backupv1.RegisterBackupServiceHandler(ctx, mux, cfg.Backups); err != nil {
		return nil, fmt.Errorf("gateway: register backup service: %w", err)
	}

	root := http.NewServeMux()
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	root.Handle("/", recordKeys(mux))
	return logRequests(log, limitBody(root)), nil
}

func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBodyBytes {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("request body of %d bytes is larger than the limit of %d bytes", r.ContentLength, MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		h.ServeHTTP(w, r)
	})
}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.Header.Get(requestid.Key) == "" {
			r.Header.Set(requestid.Key, requestid.New())
		}
		w.Header().Set(requestid.Key, r.Header.Get(requestid.Key))
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		log.Info("http", "method", r.Method, "path", r.URL.Path, "status", rec.code,
			"elapsed", time.Since(start), "request_id", r.Header.Get(requestid.Key))
	})
}

func statusCode(ctx context.Context, w http.ResponseWriter, _ proto.Message) error {
	m, ok := runtime.RPCMethod(ctx)
	if !ok {
		return nil
	}
	switch {
	case accepted[m]:
		w.WriteHeader(http.StatusAccepted)
	case created[m]:
		w.WriteHeader(http.StatusCreated)
	}
	return nil
}

// faultKinds names the Block Storage API's error body for an HTTP status.
var faultKinds = map[int]string{
	http.StatusBadRequest:            "badRequest",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "itemNotFound",
	http.StatusMethodNotAllowed:      "badMethod",
	http.StatusConflict:              "conflictingRequest",
	http.StatusRequestEntityTooLarge: "overLimit",
	http.StatusNotImplemented:        "notImplemented",
	http.StatusServiceUnavailable:    "serviceUnavailable",
}

// HTTPStatus is the HTTP status of a gRPC code, as the Block Storage API
// uses them: a request on a resource in the wrong state is a 400 there, and
// quota or space exhaustion is a 413.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.FailedPrecondition, codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.ResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return runtime.HTTPStatusFromCode(c)
}

func errorHandler(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	s := status.Convert(err)
	code := HTTPStatus(s.Code())
	msg := s.Message()
	if s.Code() == codes.InvalidArgument && strings.Contains(msg, "http: request body too large") {
		code, msg = http.StatusBadRequest, fmt.Sprintf("request body is larger than the limit of %d bytes", MaxBodyBytes)
	}
	if s.Code() == codes.Unavailable {
		msg = "a backend service is unavailable: " + msg
	}
	writeError(w, code, msg)
}

func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	msg := http.StatusText(httpStatus)
	if httpStatus == http.StatusNotFound {
		msg = fmt.Sprintf("no resource at %s %s", r.Method, r.URL.Path)
	}
	if httpStatus == http.StatusMethodNotAllowed {
		msg = fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)
	}
	writeError(w, httpStatus, msg)
}

// writeError writes {"<kind>": {"code": N, "message": "..."}}.
func writeError(w http.ResponseWriter, code int, msg string) {
	kind := faultKinds[code]
	if kind == "" {
		kind = "computeFault"
	}
	if code == http.StatusRequestEntityTooLarge {
		w.Header().Set("Retry-After", "0")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{kind: map[string]any{"code": code, "message": msg}})
}
