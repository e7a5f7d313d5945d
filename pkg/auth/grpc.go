package auth

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// MetadataKey is the gRPC metadata key of the token (the gateway copies the
// X-Auth-Token header into it).
const MetadataKey = "x-auth-token"

type ctxKey struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity of the request, if authenticated.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// IsAdmin reports whether the request's identity is an admin (true for
// code paths that run without a request, such as recovery).
func IsAdmin(ctx context.Context) bool {
	id, ok := FromContext(ctx)
	return !ok || id.Admin()
}

// RequireAdmin refuses what (an admin-only action) to a non-admin.
func RequireAdmin(ctx context.Context, what string) error {
	if IsAdmin(ctx) {
		return nil
	}
	return Denied("Policy doesn't allow %s to be performed: it is for admins.", what)
}

type projectScoped interface{ GetProjectId() string }

// public methods need no token: health checks and server reflection.
func public(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// Internal names the gRPC services (full names, such as
// "blockvault.volume.v1.VolumeManagerInternalService") that only
// blockvault's own daemons may call: every method of such a service needs
// the service or admin role.
type Internal []string

// has reports whether method ("/package.Service/Method") belongs to one of
// the internal services.
func (in Internal) has(method string) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	return ok && slices.Contains(in, svc)
}

// check authenticates a call and returns the context carrying its identity.
// Methods of internal services need the service (or admin) role. A token
// that is not good is Authenticate's error (ErrNoToken, ErrBadToken,
// ErrExpired; or why the token file cannot be read, the server's fault); a
// good token without the right is ErrPermissionDenied.
func (a *Authenticator) check(ctx context.Context, method string, req any, internal Internal) (context.Context, error) {
	if public(method) {
		return ctx, nil
	}
	token := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(MetadataKey); len(v) > 0 {
			token = v[0]
		}
	}
	id, err := a.Authenticate(token)
	if err != nil {
		return nil, err
	}
	if internal.has(method) && !id.Has(RoleService) && !id.Has(RoleAdmin) {
		return nil, Denied("Policy doesn't allow %s to be performed: it is internal, for blockvault's own daemons (service role).", method[strings.LastIndex(method, "/")+1:])
	}
	if p, ok := req.(projectScoped); ok && !id.Admin() && p.GetProjectId() != id.Project {
		return nil, Denied("Policy doesn't allow project %q to be reached with a token of project %q.", p.GetProjectId(), id.Project)
	}
	return With(ctx, id), nil
}

// UnaryServerInterceptor authenticates unary calls.
func (a *Authenticator) UnaryServerInterceptor(internal Internal) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := a.check(ctx, info.FullMethod, req, internal)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

type stream struct {
	grpc.ServerStream
	ctx      context.Context
	a        *Authenticator
	method   string
	internal Internal
	checked  bool
}

func (s *stream) Context() context.Context { return s.ctx }

// RecvMsg checks the first message (server-streaming calls have one).
func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !s.checked {
		ctx, err := s.a.check(s.ServerStream.Context(), s.method, m, s.internal)
		if err != nil {
			return err
		}
		s.ctx, s.checked = ctx, true
	}
	return nil
}

// StreamServerInterceptor authenticates streaming calls on their first
// message.
func (a *Authenticator) StreamServerInterceptor(internal Internal) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return h(srv, ss)
		}
		return h(srv, &stream{ServerStream: ss, ctx: ss.Context(), a: a, method: info.FullMethod, internal: internal})
	}
}

// ClientInterceptors send token with every call ("" sends none).
func ClientInterceptors(token string) (grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor) {
	add := func(ctx context.Context) context.Context {
		if token == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, MetadataKey, token)
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(add(ctx), method, req, reply, cc, opts...)
		}, func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(add(ctx), desc, cc, method, opts...)
		}
}
