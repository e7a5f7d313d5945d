// Package gateway is the REST endpoint: grpc-gateway handlers generated from
// the protos, forwarding to the volume manager and the backup service, with
// the Block Storage API's conventions (snake_case bodies, 202 for
// asynchronous calls, {"badRequest": {...}} error bodies).
package gateway

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
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
	"google.golang.org/protobuf/reflect/protoreflect"
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
	marshaler := &apiMarshaler{JSONPb: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
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
	root.HandleFunc("GET /{$}", versions)
	root.HandleFunc("GET /v3/{$}", versions)
	root.HandleFunc("GET /v3", versions)
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	qs := &quotaSets{volumes: volumev1.NewVolumeManagerServiceClient(cfg.Volumes), backups: backupv1.NewBackupServiceClient(cfg.Backups)}
	root.HandleFunc("GET /v3/{project_id}/os-quota-sets/{target}", qs.show)
	root.HandleFunc("GET /v3/{project_id}/os-quota-sets/{target}/defaults", qs.show)
	root.HandleFunc("PUT /v3/{project_id}/os-quota-sets/{target}", qs.update)
	root.HandleFunc("GET /v3/{project_id}/limits", qs.limits)
	root.HandleFunc("GET /v3/{project_id}/os-availability-zone", qs.zones)
	root.Handle("/", recordKeys(streamErrors(mux)))
	return logRequests(log, limitBody(negotiate(root))), nil
}

// apiMarshaler is grpc-gateway's JSON marshaler, with the Block Storage
// API's rule for integers given as strings: protojson takes "1e1" or
// "-1" for an integer field, the API takes a string of digits only
// ("size": "2" is a size, as its schema's pattern ^[0-9]+$ says).
type apiMarshaler struct{ *runtime.JSONPb }

// NewDecoder checks the integer fields of the request body, then decodes
// it as protojson does.
func (m *apiMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		raw, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if msg, ok := v.(proto.Message); ok && len(bytes.TrimSpace(raw)) > 0 {
			var body any
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if dec.Decode(&body) == nil {
				if err := checkIntegerStrings(body, msg.ProtoReflect().Descriptor()); err != nil {
					return err
				}
			}
		}
		return m.JSONPb.NewDecoder(bytes.NewReader(raw)).Decode(v)
	})
}

var reDigits = regexp.MustCompile(`^[0-9]+$`)

// checkIntegerStrings walks a decoded JSON body beside the message it
// decodes into and refuses a string that is not all digits where the
// message has an integer field.
func checkIntegerStrings(v any, md protoreflect.MessageDescriptor) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for key, val := range obj {
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByTextName(key)
		}
		if fd == nil {
			continue
		}
		var err error
		switch {
		case fd.IsMap():
			if m, ok := val.(map[string]any); ok {
				for _, e := range m {
					if err = checkIntegerValue(string(fd.Name()), e, fd.MapValue()); err != nil {
						break
					}
				}
			}
		case fd.IsList():
			if l, ok := val.([]any); ok {
				for _, e := range l {
					if err = checkIntegerValue(string(fd.Name()), e, fd); err != nil {
						break
					}
				}
			}
		default:
			err = checkIntegerValue(string(fd.Name()), val, fd)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkIntegerValue(name string, v any, fd protoreflect.FieldDescriptor) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkIntegerStrings(v, fd.Message())
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind,
		protoreflect.Sint32Kind, protoreflect.Sint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		if s, ok := v.(string); ok && !reDigits.MatchString(s) {
			return fmt.Errorf("Invalid input for field/attribute %s. Value: %q. It must be an integer.", name, s)
		}
	}
	return nil
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
	code, msg := restError(status.Convert(err))
	writeError(w, code, msg)
}

// restError is the HTTP status and message of a gRPC status: the daemons'
// messages as they are, the gateway's decoders' reworded (apiMessage).
func restError(s *status.Status) (int, string) {
	code := HTTPStatus(s.Code())
	msg := s.Message()
	if s.Code() == codes.InvalidArgument && strings.Contains(msg, "http: request body too large") {
		return http.StatusBadRequest, fmt.Sprintf("request body is larger than the limit of %d bytes", MaxBodyBytes)
	}
	if s.Code() == codes.InvalidArgument {
		msg = apiMessage(msg)
	}
	if s.Code() == codes.Unavailable {
		msg = "a backend service is unavailable: " + msg
	}
	return code, msg
}

// The decoders' messages: protojson's for the body, grpc-gateway's for
// query and path parameters, encoding/json's for what is not JSON.
var (
	reUnknownField = regexp.MustCompile(`^proto:[ \x{00a0}]\(line (\d+):(\d+)\): unknown field "([^"]*)"$`)
	reInvalidValue = regexp.MustCompile(`^proto:[ \x{00a0}]\(line \d+:\d+\): invalid value for (\w+) field (\w+): (.*)$`)
	reDuplicate    = regexp.MustCompile(`^proto:[ \x{00a0}]\(line \d+:\d+\): duplicate field "([^"]*)"$`)
	reSyntax       = regexp.MustCompile(`^proto:[ \x{00a0}]syntax error \(line (\d+):(\d+)\): (?:unexpected token )?(.*)$`)
	reProtoOther   = regexp.MustCompile(`^proto:[ \x{00a0}]\(line (\d+):(\d+)\): (.*)$`)
	reQuery        = regexp.MustCompile(`^parsing field "([^"]*)": strconv\.Parse(\w+): parsing "(.*)": (.*)$`)
	rePath         = regexp.MustCompile(`^type mismatch, parameter: (\S+), error: `)
	reCamel        = regexp.MustCompile(`[A-Z]`)
)

// kinds names, in the API's words, what a field of a proto kind takes.
var kinds = map[string]string{
	"int32": "an integer", "int64": "an integer", "uint32": "an integer", "uint64": "an integer",
	"sint32": "an integer", "sint64": "an integer", "fixed32": "an integer", "fixed64": "an integer",
	"sfixed32": "an integer", "sfixed64": "an integer", "bool": "a boolean (true or false)",
	"string": "a string", "float": "a number", "double": "a number", "enum": "one of the field's values",
}

// snake turns protojson's JSON name of a field (newSize) back into the
// API's (new_size).
func snake(name string) string {
	return reCamel.ReplaceAllStringFunc(name, func(c string) string { return "_" + strings.ToLower(c) })
}

// apiMessage rewords a decoder's message about a bad request ("proto:
// (line 1:24): unknown field \"foo\"") in the API's words ("Invalid input:
// the request body has an unknown field \"foo\" (line 1, column 24)."); a
// daemon's message is returned as it is.
func apiMessage(msg string) string {
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("Invalid input: the request body has an unknown field %q (line %s, column %s).", m[3], m[1], m[2])
	}
	if m := reInvalidValue.FindStringSubmatch(msg); m != nil {
		want := kinds[m[1]]
		if want == "" {
			want = "a " + m[1]
		}
		return fmt.Sprintf("Invalid input for field/attribute %s. Value: %s. It must be %s.", snake(m[2]), m[3], want)
	}
	if m := reDuplicate.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("Invalid input: the field %q is given twice in the request body.", snake(m[1]))
	}
	if m := reSyntax.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("Malformed request body: unexpected %s at line %s, column %s (a value of the wrong JSON type, or not JSON).", m[3], m[1], m[2])
	}
	if m := reProtoOther.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("Invalid input: %s (line %s, column %s).", m[3], m[1], m[2])
	}
	if m := reQuery.FindStringSubmatch(msg); m != nil {
		want := "an integer"
		switch m[2] {
		case "Bool":
			want = "a boolean (true, false, 1 or 0)"
		case "Float":
			want = "a number"
		}
		if m[4] == "value out of range" {
			return fmt.Sprintf("Invalid input for query parameter %s. Value: %s. It is out of range.", m[1], m[3])
		}
		return fmt.Sprintf("Invalid input for query parameter %s. Value: %s. It must be %s.", m[1], m[3], want)
	}
	if m := rePath.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("Invalid input for path parameter %s.", m[1])
	}
	switch {
	case msg == "unexpected EOF":
		return "Malformed request body: the JSON ends before it is complete."
	case strings.HasPrefix(msg, "invalid character "), strings.HasPrefix(msg, "json: "):
		return "Malformed request body: " + strings.TrimPrefix(msg, "json: ") + "."
	}
	return msg
}

// streamErrors puts the error of a streaming response (the watch
// endpoint) in the API's shape: grpc-gateway writes it as a chunk
// {"error": {"code": <gRPC code>, "message": ...}} with its own HTTP
// status; this writes {"itemNotFound": {"code": 404, "message": ...}} and
// the status HTTPStatus gives, as every other error.
func streamErrors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/watch") {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(&streamErrorWriter{ResponseWriter: w}, r)
	})
}

type streamErrorWriter struct {
	http.ResponseWriter
	pending int // a status not written yet: the first chunk decides
	wrote   bool
}

func (w *streamErrorWriter) WriteHeader(code int) {
	if !w.wrote {
		w.pending = code
	}
}

func (w *streamErrorWriter) header(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if code == 0 {
		code = http.StatusOK
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *streamErrorWriter) Write(p []byte) (int, error) {
	var chunk map[string]json.RawMessage
	if json.Unmarshal(p, &chunk) == nil && len(chunk) == 1 && chunk["error"] != nil {
		var st struct {
			Code    codes.Code `json:"code"`
			Message string     `json:"message"`
		}
		if json.Unmarshal(chunk["error"], &st) == nil {
			code, msg := restError(status.New(st.Code, st.Message))
			if !w.wrote {
				w.Header().Set("Content-Type", "application/json")
				if code == http.StatusRequestEntityTooLarge {
					w.Header().Set("Retry-After", "0")
				}
			}
			w.header(code)
			if _, err := w.ResponseWriter.Write(errorBody(code, msg)); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	w.header(w.pending)
	return w.ResponseWriter.Write(p)
}

func (w *streamErrorWriter) Flush() {
	w.header(w.pending)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
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
	if code == http.StatusRequestEntityTooLarge {
		w.Header().Set("Retry-After", "0")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(errorBody(code, msg), '\n'))
}

// errorBody is {"<kind>": {"code": N, "message": "..."}}, the kind the
// Block Storage API gives the status (computeFault for the rest).
func errorBody(code int, msg string) []byte {
	kind := faultKinds[code]
	if kind == "" {
		kind = "computeFault"
	}
	b, _ := json.Marshal(map[string]any{kind: map[string]any{"code": code, "message": msg}})
	return b
}

// quotaSets serves os-quota-sets: the volume manager keeps the quotas of
// volumes, gigabytes and snapshots, the backup service those of backups
// and backup_gigabytes; a quota set is both daemons' answers merged.
type quotaSets struct {
	volumes volumev1.VolumeManagerServiceClient
	backups backupv1.BackupServiceClient
}

// quotaKeysIgnored are keys of an update body that are not quotas
// (clients send them; the Block Storage API skips them).
var quotaKeysIgnored = map[string]bool{"id": true, "tenant_id": true, "force": true, "skip_validation": true}

var (
	volumeQuotas = []string{"volumes", "gigabytes", "snapshots"}
	backupQuotas = []string{"backups", "backup_gigabytes"}
	reLimit      = regexp.MustCompile(`^-?[0-9]+$`)
)

// outgoing is the context of a call to a daemon on behalf of r: its
// token and request id.
func outgoing(r *http.Request) context.Context {
	md := metadata.Pairs(requestid.Key, r.Header.Get(requestid.Key))
	if t := r.Header.Get("X-Auth-Token"); t != "" {
		md.Set("x-auth-token", t)
	}
	return metadata.NewOutgoingContext(r.Context(), md)
}

func writeGRPCError(w http.ResponseWriter, err error) {
	code, msg := restError(status.Convert(err))
	writeError(w, code, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// show is GET .../os-quota-sets/{target}[?usage=true] and .../defaults.
func (q *quotaSets) show(w http.ResponseWriter, r *http.Request) {
	project, target := r.PathValue("project_id"), r.PathValue("target")
	defaults := strings.HasSuffix(r.URL.Path, "/defaults")
	usage := false
	if v := r.URL.Query().Get("usage"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid input for query parameter usage. Value: %s. It must be a boolean (true or false).", v))
			return
		}
		usage = b
	}
	quotas, err := q.get(r, project, target, defaults)
	if err != nil {
		writeGRPCError(w, err)
		return
	}
	set := map[string]any{"id": target}
	for k, v := range quotas {
		if usage && !defaults {
			set[k] = map[string]int64{"limit": v.limit, "in_use": v.inUse, "reserved": v.reserved}
		} else {
			set[k] = v.limit
		}
	}
	writeJSON(w, map[string]any{"quota_set": set})
}

// quota is one quota's limit and usage.
type quota struct{ limit, inUse, reserved int64 }

// get is both daemons' quota sets of target, asked as r's caller in
// project.
func (q *quotaSets) get(r *http.Request, project, target string, defaults bool) (map[string]quota, error) {
	ctx := outgoing(r)
	vr, err := q.volumes.GetQuotaSet(ctx, &volumev1.GetQuotaSetRequest{ProjectId: project, TargetProjectId: target, Defaults: defaults})
	if err != nil {
		return nil, err
	}
	br, err := q.backups.GetQuotaSet(ctx, &backupv1.GetQuotaSetRequest{ProjectId: project, TargetProjectId: target, Defaults: defaults})
	if err != nil {
		return nil, err
	}
	out := map[string]quota{}
	for k, v := range vr.GetQuotaSet() {
		out[k] = quota{v.GetLimit(), v.GetInUse(), v.GetReserved()}
	}
	for k, v := range br.GetQuotaSet() {
		out[k] = quota{v.GetLimit(), v.GetInUse(), v.GetReserved()}
	}
	return out, nil
}

// limits is GET /v3/{project_id}/limits: the project's quotas and usage
// as the Block Storage API's absolute limits (no rate limits).
func (q *quotaSets) limits(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project_id")
	quotas, err := q.get(r, project, project, false)
	if err != nil {
		writeGRPCError(w, err)
		return
	}
	abs := map[string]int64{}
	for k, names := range map[string][2]string{
		"volumes":          {"maxTotalVolumes", "totalVolumesUsed"},
		"gigabytes":        {"maxTotalVolumeGigabytes", "totalGigabytesUsed"},
		"snapshots":        {"maxTotalSnapshots", "totalSnapshotsUsed"},
		"backups":          {"maxTotalBackups", "totalBackupsUsed"},
		"backup_gigabytes": {"maxTotalBackupGigabytes", "totalBackupGigabytesUsed"},
	} {
		abs[names[0]], abs[names[1]] = quotas[k].limit, quotas[k].inUse
	}
	writeJSON(w, map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": abs}})
}

// zones is GET /v3/{project_id}/os-availability-zone: the volume
// manager's one zone, "nova" (the zone a volume created without one is
// in; a volume's zone is recorded as given). The caller's access to the
// project is checked as for its quotas.
func (q *quotaSets) zones(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project_id")
	if _, err := q.volumes.GetQuotaSet(outgoing(r), &volumev1.GetQuotaSetRequest{ProjectId: project, TargetProjectId: project, Defaults: true}); err != nil {
		writeGRPCError(w, err)
		return
	}
	writeJSON(w, map[string]any{"availabilityZoneInfo": []any{
		map[string]any{"zoneName": "nova", "zoneState": map[string]bool{"available": true}},
	}})
}

// update is PUT .../os-quota-sets/{target} (admin): {"quota_set":
// {"volumes": 20, ...}}, each limit an integer (or a string of one) of -1
// or more.
func (q *quotaSets) update(w http.ResponseWriter, r *http.Request) {
	project, target := r.PathValue("project_id"), r.PathValue("target")
	var body map[string]json.RawMessage
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&body); err != nil {
		code, msg := restError(status.New(codes.InvalidArgument, err.Error()))
		if err == io.EOF {
			msg = "Missing required element 'quota_set' in request body."
		}
		writeError(w, code, msg)
		return
	}
	var set map[string]json.RawMessage
	if raw, ok := body["quota_set"]; !ok || json.Unmarshal(raw, &set) != nil || set == nil {
		writeError(w, http.StatusBadRequest, "Missing required element 'quota_set' in request body: want {\"quota_set\": {\"volumes\": 10, ...}}.")
		return
	}
	vl, bl := map[string]int64{}, map[string]int64{}
	var bad []string
	for k, raw := range set {
		if quotaKeysIgnored[k] {
			continue
		}
		var into map[string]int64
		switch {
		case slices.Contains(volumeQuotas, k):
			into = vl
		case slices.Contains(backupQuotas, k):
			into = bl
		default:
			bad = append(bad, k)
			continue
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		d.Decode(&v)
		text := ""
		switch x := v.(type) {
		case json.Number:
			text = x.String()
		case string:
			text = x
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if !reLimit.MatchString(text) || err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid input for field/attribute %s. Value: %s. It must be an integer.", k, raw))
			return
		}
		into[k] = n
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Bad key(s) in quota set: %s (the quotas are %s).",
			strings.Join(bad, ", "), strings.Join(append(append([]string{}, volumeQuotas...), backupQuotas...), ", ")))
		return
	}
	ctx := outgoing(r)
	vr, err := q.volumes.UpdateQuotaSet(ctx, &volumev1.UpdateQuotaSetRequest{ProjectId: project, TargetProjectId: target, Limits: vl})
	if err != nil {
		writeGRPCError(w, err)
		return
	}
	br, err := q.backups.UpdateQuotaSet(ctx, &backupv1.UpdateQuotaSetRequest{ProjectId: project, TargetProjectId: target, Limits: bl})
	if err != nil {
		writeGRPCError(w, err)
		return
	}
	out := map[string]any{}
	for k, v := range vr.GetQuotaSet() {
		out[k] = v.GetLimit()
	}
	for k, v := range br.GetQuotaSet() {
		out[k] = v.GetLimit()
	}
	writeJSON(w, map[string]any{"quota_set": out})
}
