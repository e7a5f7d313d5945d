package daemon

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ReconnectPromptly is the dial option of every gRPC client between the
// daemons (and of the tests' clients): after the server went away, the
// client tries to reconnect at most a second apart. gRPC's default backoff
// grows to two minutes, so a daemon restarted while a caller kept failing
// (a slow restart on a loaded machine) stayed unreachable through that
// caller, the gateway answering 503, long after it was back.
func ReconnectPromptly() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 5 * time.Second,
	})
}
