// Package requestid carries a request id from the gateway through the
// backup service to the volume manager (gRPC metadata "x-request-id"), so one
// call can be followed through every daemon's log.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Key is the metadata key (and HTTP header) of the request id.
const Key = "x-request-id"

type ctxKey struct{}

// New returns a fresh request id.
func New() string {
	var b [8]byte
	rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}

// From returns the request id of ctx, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

func fromIncoming(ctx context.Context) context.Context {
	id := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(Key); len(v) > 0 && len(v[0]) <= 128 {
			id = v[0]
		}
	}
	if id == "" {
		id = New()
	}
	return With(ctx, id)
}

// UnaryServerInterceptor takes the caller's request id (or makes one).
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(fromIncoming(ctx), req)
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stream) Context() context.Context { return s.ctx }

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, stream{ss, fromIncoming(ss.Context())})
	}
}

// UnaryClientInterceptor passes the request id of ctx on to the callee.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if id := From(ctx); id != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, Key, id)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
