package e2etest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The callers of the role table: a project member, an admin, a daemon (the
// service role) and a call without a token.
const (
	asMember  = "member"
	asAdmin   = "admin"
	asService = "service"
	asNobody  = "unauthenticated"
)

var (
	everyone   = []string{asMember, asAdmin, asService}
	adminsOnly = []string{asAdmin, asService}
	// daemonsOnly: the whole internal service needs the service role (an
	// admin may call it too, to repair by hand).
	daemonsOnly = []string{asAdmin, asService}
)

// roleDecisions says, for every method of every blockvault gRPC service,
// which callers get past authentication and authorization. A method that
// is added to a proto without a line here fails TestEveryMethodHasARoleDecision.
// Checks that depend on a request's fields (all_tenants, a foreign
// project) are TestAuthProjectsAndRoles's.
var roleDecisions = map[string][]string{
	"/blockvault.volume.v1.VolumeManagerService/CreateVolume":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/GetVolume":         everyone,
	"/blockvault.volume.v1.VolumeManagerService/ListVolumes":       everyone,
	"/blockvault.volume.v1.VolumeManagerService/DeleteVolume":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/UpdateVolume":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/ExtendVolume":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/VolumeAction":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/ResetVolumeStatus": adminsOnly,
	"/blockvault.volume.v1.VolumeManagerService/AttachVolume":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/DetachVolume":      everyone,
	"/blockvault.volume.v1.VolumeManagerService/CreateSnapshot":    everyone,
	"/blockvault.volume.v1.VolumeManagerService/GetSnapshot":       everyone,
	"/blockvault.volume.v1.VolumeManagerService/ListSnapshots":     everyone,
	"/blockvault.volume.v1.VolumeManagerService/DeleteSnapshot":    everyone,
	// The quickstart's demonstration shows a member the backend's driver
	// and free space.
	"/blockvault.volume.v1.VolumeManagerService/GetCapabilities": everyone,
	// Quota sets: a member sees their own project's; setting is an admin's.
	"/blockvault.volume.v1.VolumeManagerService/GetQuotaSet":    everyone,
	"/blockvault.volume.v1.VolumeManagerService/UpdateQuotaSet": adminsOnly,

	"/blockvault.volume.v1.VolumeManagerInternalService/BeginBackup":             daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/EndBackup":               daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/BeginRestore":            daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/EndRestore":              daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/StartLiveRestore":        daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/AttachSnapshot":          daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/DetachSnapshot":          daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/GetChangedRanges":        daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/AttachForBackup":         daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/CreateTemporarySnapshot": daemonsOnly,
	"/blockvault.volume.v1.VolumeManagerInternalService/CreateTemporaryVolume":   daemonsOnly,

	"/blockvault.backup.v1.BackupService/CreateBackup":       everyone,
	"/blockvault.backup.v1.BackupService/GetBackup":          everyone,
	"/blockvault.backup.v1.BackupService/ListBackups":        everyone,
	"/blockvault.backup.v1.BackupService/DeleteBackup":       everyone,
	"/blockvault.backup.v1.BackupService/RestoreBackup":      everyone,
	"/blockvault.backup.v1.BackupService/BackupAction":       adminsOnly,
	"/blockvault.backup.v1.BackupService/WatchBackup":        everyone,
	"/blockvault.backup.v1.BackupService/VerifyBackup":       everyone,
	"/blockvault.backup.v1.BackupService/ExportBackupRecord": everyone,
	"/blockvault.backup.v1.BackupService/ImportBackupRecord": adminsOnly,
	"/blockvault.backup.v1.BackupService/GetQuotaSet":        everyone,
	"/blockvault.backup.v1.BackupService/UpdateQuotaSet":     adminsOnly,
}

// blockvaultMethods walks the file descriptors compiled into this binary
// (the generated gen/ packages register theirs) and returns every method of
// every blockvault service.
func blockvaultMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	// Make sure both generated packages are linked in.
	_ = volumev1.File_blockvault_volume_v1_volume_manager_internal_proto
	_ = backupv1.File_blockvault_backup_v1_backup_service_proto
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(f.Package()), "blockvault.") {
			return true
		}
		for i := 0; i < f.Services().Len(); i++ {
			ms := f.Services().Get(i).Methods()
			for j := 0; j < ms.Len(); j++ {
				out = append(out, ms.Get(j))
			}
		}
		return true
	})
	if len(out) == 0 {
		t.Fatal("no blockvault service descriptors are registered")
	}
	return out
}

func fullMethod(m protoreflect.MethodDescriptor) string {
	return "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
}

// TestEveryMethodHasARoleDecision calls every method of every blockvault
// service on the real daemons (tokens on) as a member, an admin, a daemon
// and without a token, and checks that exactly the callers in roleDecisions
// get past authentication and authorization. A request names the member's
// project and is otherwise empty, so what an admitted call does is refuse
// the request (InvalidArgument and the like), never change anything.
func TestEveryMethodHasARoleDecision(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	const project = "project-roles"
	tokens := map[string]string{
		asMember:  s.Token(project, auth.RoleMember),
		asAdmin:   s.Token("ops", auth.RoleAdmin),
		asService: s.Token("blockvault", auth.RoleService),
		asNobody:  "",
	}
	conns := map[string]map[string]*grpc.ClientConn{}
	for who, tok := range tokens {
		conns[who] = map[string]*grpc.ClientConn{
			"blockvault.volume.v1": s.dialAs(s.VolumeManager.Addr, tok),
			"blockvault.backup.v1": s.dialAs(s.Backup.Addr, tok),
		}
	}

	seen := map[string]bool{}
	for _, m := range blockvaultMethods(t) {
		name := fullMethod(m)
		seen[name] = true
		allowed, ok := roleDecisions[name]
		if !ok {
			t.Errorf("%s has no role decision: add it to roleDecisions (and to the internal service if only daemons call it)", name)
			continue
		}
		pkg := string(m.ParentFile().Package())
		for _, who := range []string{asMember, asAdmin, asService, asNobody} {
			conn := conns[who][pkg]
			if conn == nil {
				t.Fatalf("%s: no daemon serves package %s", name, pkg)
			}
			err := callEmpty(conn, m, project)
			code := status.Code(err)
			admitted := code != codes.Unauthenticated && code != codes.PermissionDenied
			want := slices.Contains(allowed, who)
			switch {
			case code == codes.Unimplemented:
				t.Errorf("%s as %s: %v: the daemon does not serve it", name, who, err)
			case admitted != want:
				t.Errorf("%s as %s: %v; want admitted=%v", name, who, err, want)
			case who == asNobody && code != codes.Unauthenticated:
				t.Errorf("%s without a token: %v, want Unauthenticated", name, err)
			}
		}
	}
	for name := range roleDecisions {
		if !seen[name] {
			t.Errorf("roleDecisions names %s, which no service has", name)
		}
	}
}

// callEmpty calls m with a request that names project (when it has a
// project_id) and nothing else, and returns the call's error.
func callEmpty(conn *grpc.ClientConn, m protoreflect.MethodDescriptor, project string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := dynamicpb.NewMessage(m.Input())
	if f := m.Input().Fields().ByName("project_id"); f != nil {
		req.Set(f, protoreflect.ValueOfString(project))
	}
	resp := dynamicpb.NewMessage(m.Output())
	if !m.IsStreamingServer() && !m.IsStreamingClient() {
		return conn.Invoke(ctx, fullMethod(m), req, resp)
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, fullMethod(m))
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(resp)
}

// dialAs connects to addr sending token ("" sends none).
func (s *Stack) dialAs(addr, token string) *grpc.ClientConn {
	saved := s.clientToken
	s.clientToken = token
	defer func() { s.clientToken = saved }()
	return s.dial(addr)
}

// internalAs is a client of the volume manager's internal service sending
// token.
func (s *Stack) internalAs(token string) volumev1.VolumeManagerInternalServiceClient {
	return volumev1.NewVolumeManagerInternalServiceClient(s.dialAs(s.VolumeManager.Addr, token))
}

// TestMemberCannotCallInternalMethods: a member's calls to the volume
// manager's internal service are refused and change nothing — the volume
// stays available, no temporary volume or snapshot appears — while the
// backup service's own token is admitted; and the public create bodies no
// longer take the internal fields.
func TestMemberCannotCallInternalMethods(t *testing.T) {
	s := Start(t, Options{Tokens: true})
	ctx := context.Background()
	const project = "project-m"
	member := s.Token(project, auth.RoleMember)
	vols, _ := s.ClientsAs(member)
	cv, err := vols.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{Size: 1, Name: "mine"}})
	if err != nil {
		t.Fatal(err)
	}
	vol := cv.GetVolume().GetId()
	sn, err := vols.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: project, Snapshot: &volumev1.SnapshotInput{VolumeId: vol}})
	if err != nil {
		t.Fatal(err)
	}
	snap := sn.GetSnapshot().GetId()

	in := s.internalAs(member)
	const tempID = "6f1f7d0e-2b7c-4c55-9d7a-3c1e9a4b2f10"
	calls := map[string]func() error{
		"BeginRestore": func() error {
			_, err := in.BeginRestore(ctx, &volumev1.BeginRestoreRequest{ProjectId: project, VolumeId: vol})
			return err
		},
		"EndRestore": func() error {
			_, err := in.EndRestore(ctx, &volumev1.EndRestoreRequest{ProjectId: project, VolumeId: vol, Success: false, FailReason: "member"})
			return err
		},
		"StartLiveRestore": func() error {
			_, err := in.StartLiveRestore(ctx, &volumev1.StartLiveRestoreRequest{ProjectId: project, VolumeId: vol, BackupId: tempID,
				SizeBytes: 1 << 20, Source: &volumev1.ConnectionInfo{DriverVolumeType: "nbd", Data: &volumev1.ConnectionData{Host: "127.0.0.1", Port: 1, ExportName: "x"}}})
			return err
		},
		"BeginBackup": func() error {
			_, err := in.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: project, VolumeId: vol})
			return err
		},
		"EndBackup": func() error {
			_, err := in.EndBackup(ctx, &volumev1.EndBackupRequest{ProjectId: project, VolumeId: vol})
			return err
		},
		"AttachSnapshot": func() error {
			_, err := in.AttachSnapshot(ctx, &volumev1.AttachSnapshotRequest{ProjectId: project, SnapshotId: snap, Connector: &volumev1.Connector{Host: "x"}})
			return err
		},
		"GetChangedRanges": func() error {
			_, err := in.GetChangedRanges(ctx, &volumev1.GetChangedRangesRequest{ProjectId: project, VolumeId: vol, FromSnapshotId: snap, ToSnapshotId: snap})
			return err
		},
		"CreateTemporaryVolume": func() error {
			_, err := in.CreateTemporaryVolume(ctx, &volumev1.CreateTemporaryVolumeRequest{ProjectId: project, Id: tempID, SourceVolid: vol})
			return err
		},
		"AttachForBackup": func() error {
			_, err := in.AttachForBackup(ctx, &volumev1.AttachForBackupRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{VolumeUuid: vol, Mode: "ro"}})
			return err
		},
		"CreateTemporarySnapshot": func() error {
			_, err := in.CreateTemporarySnapshot(ctx, &volumev1.CreateTemporarySnapshotRequest{ProjectId: project, Id: tempID, VolumeId: vol})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("member's %s: %v, want PermissionDenied", name, err)
		} else if !strings.Contains(status.Convert(err).Message(), name) {
			t.Errorf("member's %s: the message %q does not name the method", name, status.Convert(err).Message())
		}
	}
	gv, err := vols.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: vol})
	if err != nil {
		t.Fatal(err)
	}
	if st := gv.GetVolume().GetStatus(); st != "available" || gv.GetVolume().GetFailReason() != "" {
		t.Errorf("after the member's internal calls the volume is %q (fail_reason %q), want available", st, gv.GetVolume().GetFailReason())
	}
	lv, _ := s.Volumes.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: project, IncludeTemporary: true})
	ls, _ := s.Volumes.ListSnapshots(ctx, &volumev1.ListSnapshotsRequest{ProjectId: project, IncludeTemporary: true})
	if len(lv.GetVolumes()) != 1 || len(ls.GetSnapshots()) != 1 {
		t.Errorf("after the member's internal calls: %d volumes and %d snapshots, want 1 and 1", len(lv.GetVolumes()), len(ls.GetSnapshots()))
	}

	// The REST create bodies refuse the fields the backup service used to
	// send through them.
	for _, c := range []struct{ path, body string }{
		{"/v3/" + project + "/volumes", `{"volume": {"size": 1, "temporary": true}}`},
		{"/v3/" + project + "/volumes", `{"volume": {"size": 1, "id": "` + tempID + `"}}`},
		{"/v3/" + project + "/snapshots", `{"snapshot": {"volume_id": "` + vol + `", "temporary": true}}`},
	} {
		if code, body := restAs(t, s, member, "POST", c.path, c.body); code != 400 || field(body, "badRequest", "message") == "" {
			t.Errorf("POST %s %s: HTTP %d %v, want 400 badRequest", c.path, c.body, code, body)
		}
	}

	// The backup service's role is admitted: the same BeginRestore moves
	// the volume, and EndRestore brings it back.
	svc := s.internalAs(s.Token("blockvault", auth.RoleService))
	br, err := svc.BeginRestore(ctx, &volumev1.BeginRestoreRequest{ProjectId: project, VolumeId: vol})
	if err != nil || br.GetVolume().GetStatus() != "restoring-backup" {
		t.Fatalf("service BeginRestore: %v %q", err, br.GetVolume().GetStatus())
	}
	er, err := svc.EndRestore(ctx, &volumev1.EndRestoreRequest{ProjectId: project, VolumeId: vol, Success: true})
	if err != nil || er.GetVolume().GetStatus() != "available" {
		t.Fatalf("service EndRestore: %v %q", err, er.GetVolume().GetStatus())
	}

	// While the backup service backs the volume up, only it may attach
	// the volume (read-only); a member's attachment is refused, through
	// gRPC and REST.
	if _, err := svc.BeginBackup(ctx, &volumev1.BeginBackupRequest{ProjectId: project, VolumeId: vol}); err != nil {
		t.Fatal(err)
	}
	if _, err := vols.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{VolumeUuid: vol, Mode: "ro"}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a member attaches a backing-up volume read-only: %v, want FailedPrecondition", err)
	}
	if code, body := restAs(t, s, member, "POST", "/v3/"+project+"/volumes/"+vol+"/action", `{"os-attach": {"instance_uuid": "`+tempID+`", "mode": "ro"}}`); code != 400 {
		t.Errorf("a member's os-attach of a backing-up volume: HTTP %d %v, want 400", code, body)
	}
	ab, err := svc.AttachForBackup(ctx, &volumev1.AttachForBackupRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{VolumeUuid: vol, Mode: "ro"}})
	if err != nil {
		t.Fatalf("the service's AttachForBackup of the backing-up volume: %v", err)
	}
	if _, err := vols.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: ab.GetAttachment().GetId()}); err != nil {
		t.Fatal(err)
	}
	if eb, err := svc.EndBackup(ctx, &volumev1.EndBackupRequest{ProjectId: project, VolumeId: vol}); err != nil || eb.GetVolume().GetStatus() != "available" {
		t.Fatalf("EndBackup: %v %q", err, eb.GetVolume().GetStatus())
	}
}
