// Package rpcerr decides, in one place, which gRPC code a domain error gets,
// and gives handlers constructors for the errors they raise themselves (bad
// input, wrong status). The gateway derives HTTP codes from these codes.
package rpcerr

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/volume"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors handlers raise themselves; wrap them with a message a user can act on.
var (
	// ErrInvalidArgument: the request is malformed (InvalidArgument, 400).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the resource is in the wrong state (FailedPrecondition, 400).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrOverQuota: a quota or a size limit is exceeded (ResourceExhausted, 413).
	ErrOverQuota = errors.New("over quota")
	// ErrPermissionDenied: the caller may not do this (PermissionDenied, 403).
	ErrPermissionDenied = errors.New("permission denied")
)

// Invalid returns an InvalidArgument error with the formatted message.
func Invalid(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: ErrInvalidArgument}
}

// Precondition returns a FailedPrecondition error with the formatted message.
func Precondition(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: ErrFailedPrecondition}
}

// userError carries a complete user-facing message.
type userError struct {
	msg  string
	kind error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.kind }

// Code is the gRPC code of err.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, volume.ErrInvalidArgument),
		errors.Is(err, repository.ErrInvalidName), errors.Is(err, blockdev.ErrOutOfRange):
		return codes.InvalidArgument
	case errors.Is(err, store.ErrNotFound), errors.Is(err, volume.ErrNotFound), errors.Is(err, repository.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, volume.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrFailedPrecondition), errors.Is(err, store.ErrConflict), errors.Is(err, volume.ErrInUse),
		errors.Is(err, lifecycle.ErrInvalidTransition), errors.Is(err, volume.ErrInvalidTransition), errors.Is(err, blockdev.ErrReadOnly):
		return codes.FailedPrecondition
	case errors.Is(err, ErrOverQuota), errors.Is(err, volume.ErrNoSpace), errors.Is(err, repository.ErrNoSpace):
		return codes.ResourceExhausted
	case errors.Is(err, ErrPermissionDenied):
		return codes.PermissionDenied
	case errors.Is(err, volume.ErrUnsupported):
		return codes.Unimplemented
	case errors.Is(err, repository.ErrUnavailable), errors.Is(err, store.ErrUnavailable):
		return codes.Unavailable
	}
	return codes.Internal
}

// ToStatus converts err to a gRPC status error; a status error passes
// through unchanged.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}

// Unimplemented is the answer of an RPC whose engine is not built yet.
func Unimplemented(rpc, what string) error {
	return status.Errorf(codes.Unimplemented, "%s is not implemented yet: %s", rpc, what)
}

// UnaryServerInterceptor maps every handler error to its gRPC status.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, ToStatus(err)
	}
}

// StreamServerInterceptor maps every stream handler error to its gRPC status.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return ToStatus(handler(srv, ss))
	}
}
