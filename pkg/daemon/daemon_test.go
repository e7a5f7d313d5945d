package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/quota"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestErrorsBecomeCodes: the authenticator's errors and a handler's domain
// errors reach the client as the codes pkg/rpcerr gives them, with their
// messages, on unary and streaming calls alike.
func TestErrorsBecomeCodes(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(strings.Repeat("k", 40)), 0o600)
	a, err := auth.New(auth.Config{Mode: auth.ModeToken, SigningKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := auth.ReadKey(keyFile)
	member := auth.Mint(key, auth.Identity{Project: "p", Roles: []string{auth.RoleMember}})

	handlerErr := func() error {
		q, _ := quota.New(quota.Config{Defaults: quota.Limits{quota.Volumes: 0}})
		return q.CheckCount("p", quota.Volumes, 0)
	}
	desc := grpc.ServiceDesc{
		ServiceName: "test.v1.Service",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(emptypb.Empty)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { return nil, handlerErr() }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/test.v1.Service/Unary"}, h)
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			if err := ss.RecvMsg(new(emptypb.Empty)); err != nil {
				return err
			}
			return handlerErr()
		}}},
	}
	for _, c := range []struct {
		name     string
		internal auth.Internal
		token    string
		code     codes.Code
		msg      string
	}{
		{"no token", nil, "", codes.Unauthenticated, "authentication required: send a token in X-Auth-Token"},
		{"a bad token", nil, "bvt1.x.y", codes.Unauthenticated, "the token is not valid"},
		{"a member calling an internal service", auth.Internal{"test.v1.Service"}, member, codes.PermissionDenied, "Policy doesn't allow"},
		{"over quota", nil, member, codes.ResourceExhausted, "VolumeLimitExceeded: Maximum number of volumes allowed (0)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewGRPCServer(slog.New(slog.DiscardHandler), Auth{Authenticator: a, Internal: c.internal})
			s.RegisterService(&desc, struct{}{})
			ln := bufconn.Listen(1 << 20)
			go s.Serve(ln)
			defer s.Stop()
			conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := context.Background()
			if c.token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, auth.MetadataKey, c.token)
			}
			check := func(kind string, err error) {
				s := status.Convert(err)
				if s.Code() != c.code || !strings.HasPrefix(s.Message(), c.msg) {
					t.Errorf("%s call: %v %q, want %v %q", kind, s.Code(), s.Message(), c.code, c.msg)
				}
			}
			check("unary", conn.Invoke(ctx, "/test.v1.Service/Unary", new(emptypb.Empty), new(emptypb.Empty)))
			st, err := conn.NewStream(ctx, &desc.Streams[0], "/test.v1.Service/Stream")
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SendMsg(new(emptypb.Empty)); err != nil {
				t.Fatal(err)
			}
			st.CloseSend()
			err = st.RecvMsg(new(emptypb.Empty))
			if err == io.EOF {
				err = nil
			}
			check("streaming", err)
		})
	}
}
