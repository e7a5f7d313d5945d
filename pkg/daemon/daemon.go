// Package daemon is what the three daemons share around their services:
// the logger, the gRPC server (error mapping, request ids, request logs,
// authentication, health, reflection), and running servers until a signal
// stops them.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/requestid"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Version is the build's version, set with -ldflags "-X .../pkg/daemon.Version=...".
var Version = "dev"

// NewLogger returns a slog logger writing "text" or "json" at level
// (debug, info, warn, error).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// GRPCServer is a gRPC server with health and reflection registered.
type GRPCServer struct {
	*grpc.Server
	Health *health.Server
}

// Auth is how a GRPCServer authenticates calls: the Authenticator, and
// the services only blockvault's daemons (the service role) may call,
// every method of them.
type Auth struct {
	*auth.Authenticator
	Internal auth.Internal
}

// NewGRPCServer returns a server whose requests carry request ids, are
// logged and authenticated (a nil Authenticator lets every call through),
// whose handlers' and authenticator's errors are mapped to gRPC codes
// (rpcerr, chained outside auth so that it sees auth's errors too), and
// which serves grpc.health.v1 and server reflection (so grpcurl list works).
func NewGRPCServer(log *slog.Logger, a Auth, opts ...grpc.ServerOption) *GRPCServer {
	unary := []grpc.UnaryServerInterceptor{requestid.UnaryServerInterceptor(), logUnary(log), rpcerr.UnaryServerInterceptor()}
	streams := []grpc.StreamServerInterceptor{requestid.StreamServerInterceptor(), rpcerr.StreamServerInterceptor()}
	if a.Authenticator != nil {
		unary = append(unary, a.UnaryServerInterceptor(a.Internal))
		streams = append(streams, a.StreamServerInterceptor(a.Internal))
	}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(streams...),
		grpc.MaxRecvMsgSize(8<<20),
	)
	s := grpc.NewServer(opts...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	reflection.Register(s)
	return &GRPCServer{Server: s, Health: h}
}

func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		code := status.Code(rpcerr.ToStatus(err))
		level := slog.LevelDebug
		switch code {
		case codes.OK:
		case codes.Internal, codes.DataLoss: // the server's fault, or the data's
			level = slog.LevelError
		default:
			level = slog.LevelInfo
		}
		if strings.HasPrefix(info.FullMethod, "/grpc.health") {
			return resp, err
		}
		attrs := []any{"method", info.FullMethod, "code", code.String(), "elapsed", time.Since(start), "request_id", requestid.From(ctx)}
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		}
		log.Log(ctx, level, "rpc", attrs...)
		return resp, err
	}
}

// Task is one long-running part of a daemon: it runs until ctx is done and
// then stops gracefully.
type Task func(ctx context.Context) error

// ServeGRPC is a Task serving s on ln, stopping gracefully (at most 10 s).
func ServeGRPC(s *GRPCServer, ln net.Listener) Task {
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- s.Serve(ln) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		s.Health.Shutdown()
		done := make(chan struct{})
		go func() { s.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.Stop()
		}
		return nil
	}
}

// ServeHTTP is a Task serving h on ln, shutting down gracefully.
func ServeHTTP(h http.Handler, ln net.Listener) Task {
	return func(ctx context.Context) error {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// Run runs tasks until ctx is done or one fails, then stops them all.
func Run(ctx context.Context, tasks ...Task) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range tasks {
		g.Go(func() error {
			err := t(ctx)
			if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
				return nil
			}
			return err
		})
	}
	return g.Wait()
}
