package e2etest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/store/storetest"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	code := storetest.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir) // the daemons Binaries built for this run
	}
	os.Exit(code)
}

const project = "e2e"

func volumeFile(s *Stack, id string) string {
	return filepath.Join(s.PoolDir, "volumes", id+".img")
}

// allocated is the space a file really uses (sparse files use little).
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestVolumesEndToEnd(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			o := Options{}
			if db == "postgres" {
				o.DatabaseURL = storetest.PostgresURL(t)
			}
			s := Start(t, o)
			ctx := context.Background()

			// gRPC: create, list, extend, delete; the sparse file comes and goes.
			cr, err := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project,
				Volume: &volumev1.VolumeInput{SizeBytes: 64 << 20, Name: "grpc-vol"}})
			if err != nil {
				t.Fatal(err)
			}
			v := cr.GetVolume()
			if v.GetStatus() != "available" || v.GetSizeBytes() != 64<<20 {
				t.Fatalf("created volume: %+v", v)
			}
			path := volumeFile(s, v.GetId())
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatalf("the volume's file is not in the pool: %v", err)
			}
			if fi.Size() != 64<<20 || allocated(t, path) > 1<<20 {
				t.Fatalf("file size %d, allocated %d: want a sparse 64 MiB file", fi.Size(), allocated(t, path))
			}
			lr, err := s.Volumes.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: project})
			if err != nil || len(lr.GetVolumes()) != 1 || lr.GetVolumes()[0].GetId() != v.GetId() {
				t.Fatalf("list: %v %v", lr, err)
			}
			if _, err := s.Volumes.ExtendVolume(ctx, &volumev1.ExtendVolumeRequest{ProjectId: project, VolumeId: v.GetId(), NewSizeBytes: 128 << 20}); err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(path); fi.Size() != 128<<20 {
				t.Fatalf("after extend the file has %d bytes", fi.Size())
			}
			if _, err := s.Volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: v.GetId()}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("the file is still there after delete: %v", err)
			}
			if _, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: v.GetId()}); status.Code(err) != codes.NotFound {
				t.Fatalf("get deleted volume: %v", err)
			}

			// REST with the Block Storage API's bodies.
			code, body := s.REST("POST", "/v3/"+project+"/volumes", `{"volume": {"size": 1, "name": "rest-vol", "description": "made over REST"}}`)
			if code != 202 {
				t.Fatalf("REST create: %d %v", code, body)
			}
			rv := body["volume"].(map[string]any)
			id := rv["id"].(string)
			if rv["status"] != "available" || rv["size"].(float64) != 1 || rv["name"] != "rest-vol" {
				t.Fatalf("REST create body: %v", rv)
			}
			if code, body = s.REST("GET", "/v3/"+project+"/volumes/"+id, nil); code != 200 || body["volume"].(map[string]any)["id"] != id {
				t.Fatalf("REST get: %d %v", code, body)
			}
			if code, body = s.REST("GET", "/v3/"+project+"/volumes/detail", nil); code != 200 || len(body["volumes"].([]any)) != 1 {
				t.Fatalf("REST list: %d %v", code, body)
			}
			if code, body = s.REST("POST", "/v3/"+project+"/volumes/"+id+"/action", `{"os-extend": {"new_size": 2}}`); code != 202 {
				t.Fatalf("REST extend: %d %v", code, body)
			}
			if fi, err := os.Stat(volumeFile(s, id)); err != nil || fi.Size() != 2<<30 {
				t.Fatalf("after REST extend: %v %v", fi, err)
			}
			if code, body = s.REST("DELETE", "/v3/"+project+"/volumes/"+id, nil); code != 202 {
				t.Fatalf("REST delete: %d %v", code, body)
			}
			if code, body = s.REST("GET", "/v3/"+project+"/volumes/"+id, nil); code != 404 || body["itemNotFound"] == nil {
				t.Fatalf("REST get after delete: %d %v", code, body)
			}
			if _, err := os.Stat(volumeFile(s, id)); !os.IsNotExist(err) {
				t.Fatal("REST delete left the file")
			}
		})
	}
}

func TestVolumeBadInput(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	grpcCases := []struct {
		name string
		req  *volumev1.CreateVolumeRequest
		want codes.Code
	}{
		{"size 0", &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{Size: 0}}, codes.InvalidArgument},
		{"negative size", &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{Size: -1}}, codes.InvalidArgument},
		{"unaligned bytes", &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: 1000}}, codes.InvalidArgument},
		{"past free space", &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{Size: 60 << 10}}, codes.ResourceExhausted},
		{"no project", &volumev1.CreateVolumeRequest{Volume: &volumev1.VolumeInput{Size: 1}}, codes.InvalidArgument},
		{"bad snapshot id", &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{Size: 1, SnapshotId: "nope"}}, codes.InvalidArgument},
		{"unknown snapshot", &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{Size: 1, SnapshotId: "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}}, codes.NotFound},
	}
	for _, tc := range grpcCases {
		_, err := s.Volumes.CreateVolume(ctx, tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		} else if status.Convert(err).Message() == "" {
			t.Errorf("%s: no message", tc.name)
		}
	}
	if _, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: "../../etc"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed id: %v", err)
	}

	restCases := []struct {
		name, method, path, body string
		code                     int
		kind                     string
	}{
		{"size 0", "POST", "/v3/e2e/volumes", `{"volume": {"size": 0}}`, 400, "badRequest"},
		{"negative", "POST", "/v3/e2e/volumes", `{"volume": {"size": -5}}`, 400, "badRequest"},
		{"too large for the pool", "POST", "/v3/e2e/volumes", `{"volume": {"size": 61440}}`, 413, "overLimit"},
		{"unknown field", "POST", "/v3/e2e/volumes", `{"volume": {"size": 1, "colour": "red"}}`, 400, "badRequest"},
		{"wrong type", "POST", "/v3/e2e/volumes", `{"volume": {"size": "big"}}`, 400, "badRequest"},
		{"malformed JSON", "POST", "/v3/e2e/volumes", `{"volume": {`, 400, "badRequest"},
		{"name too long", "POST", "/v3/e2e/volumes", `{"volume": {"size": 1, "name": "` + strings.Repeat("n", 300) + `"}}`, 400, "badRequest"},
		{"malformed uuid", "GET", "/v3/e2e/volumes/not-a-uuid", "", 400, "badRequest"},
		{"unknown id", "GET", "/v3/e2e/volumes/6ba7b810-9dad-11d1-80b4-00c04fd430c8", "", 404, "itemNotFound"},
		{"oversized body", "POST", "/v3/e2e/volumes", `{"volume": {"size": 1, "description": "` + strings.Repeat("x", 2<<20) + `"}}`, 400, "badRequest"},
	}
	for _, tc := range restCases {
		var body any
		if tc.body != "" {
			body = tc.body
		}
		code, out := s.REST(tc.method, tc.path, body)
		if code != tc.code || out[tc.kind] == nil {
			t.Errorf("%s: HTTP %d %v, want %d with %s", tc.name, code, out, tc.code, tc.kind)
			continue
		}
		fault := out[tc.kind].(map[string]any)
		if fault["code"].(float64) != float64(tc.code) || fault["message"] == "" {
			t.Errorf("%s: fault body %v", tc.name, fault)
		}
	}
	// Nothing was created by any of it.
	lr, err := s.Volumes.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: project, IncludeTemporary: true})
	if err != nil || len(lr.GetVolumes()) != 0 {
		t.Fatalf("bad input created volumes: %v %v", lr.GetVolumes(), err)
	}
	entries, _ := os.ReadDir(filepath.Join(s.PoolDir, "volumes"))
	if len(entries) != 0 {
		t.Fatalf("bad input left files in the pool: %v", entries)
	}
}

// TestGRPCurlList: every daemon answers grpcurl list with its service,
// health and reflection.
func TestGRPCurlList(t *testing.T) {
	grpcurl := testenv.LookPath(t, "grpcurl")
	s := Start(t, Options{NoGateway: true})
	for _, c := range []struct {
		d       *Daemon
		service string
	}{{s.VolumeManager, "blockvault.volume.v1.VolumeManagerService"}, {s.Backup, "blockvault.backup.v1.BackupService"}} {
		out, err := exec.Command(grpcurl, "-plaintext", c.d.Addr, "list").CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl list %s: %v: %s", c.d.Name, err, out)
		}
		for _, want := range []string{c.service, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("grpcurl list %s: %q missing in:\n%s", c.d.Name, want, out)
			}
		}
	}
	out, err := exec.Command(grpcurl, "-plaintext", "-d", `{"project_id": "e2e", "volume": {"size_bytes": 16777216, "name": "curl"}}`,
		s.VolumeManager.Addr, "blockvault.volume.v1.VolumeManagerService/CreateVolume").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"status": "available"`) {
		t.Fatalf("grpcurl create: %v: %s", err, out)
	}
}
