// Package rpcerr decides, in one place, which gRPC code a domain error gets,
// and gives handlers constructors for the errors they raise themselves (bad
// input, wrong status, a duplicate). The gateway derives HTTP codes from
// these codes. Domain packages return their sentinels (wrapped with %w, or
// in an error type whose Unwrap returns one) and never build a status
// themselves; a test lists every exported Err* of the domain packages and
// fails on one this table has no decision for.
//
// The table (domain below, in the order Code tries it):
//
//	context.Canceled, DeadlineExceeded             Canceled, DeadlineExceeded
//	engine.ErrNoBackup                             NotFound
//	engine.ErrCorrupt                              DataLoss
//	engine.ErrWrongKey                             FailedPrecondition
//	engine.ErrClosed (a backup reader read after Close)   FailedPrecondition
//	cinder.ErrCorrupt                              DataLoss
//	cinder.ErrMissing                              NotFound
//	cinder.ErrInvalidRecord, ErrUnsupported        InvalidArgument
//	cinder.ErrBrokenChain                          FailedPrecondition
//	auth.ErrNoToken, ErrBadToken, ErrExpired       Unauthenticated
//	auth.ErrPermissionDenied                       PermissionDenied
//	quota.ErrExceeded                              ResourceExhausted
//	quota.ErrInvalidLimits                         InvalidArgument
//	ErrInvalidArgument, volume.ErrInvalidArgument,
//	  repository.ErrInvalidName, blockdev.ErrOutOfRange   InvalidArgument
//	store.ErrNotFound, volume.ErrNotFound,
//	  repository.ErrNotFound, backupjob.ErrNotFound   NotFound
//	ErrAlreadyExists, volume.ErrAlreadyExists      AlreadyExists
//	ErrFailedPrecondition, store.ErrConflict, volume.ErrInUse,
//	  lifecycle.ErrInvalidTransition, blockdev.ErrReadOnly   FailedPrecondition
//	volume.ErrNoSpace, repository.ErrNoSpace       ResourceExhausted
//	volume.ErrUnsupported                          Unimplemented
//	ErrUnavailable, repository.ErrUnavailable, store.ErrUnavailable,
//	  backupjob.ErrUnavailable                     Unavailable
//	auth.ErrNoSource, anything else                Internal
//
// The engine's errors are what an operator acts on, so each has the code
// that says what to do: ErrNoBackup (the repository has no manifest of the
// backup; an imported record naming a backup this repository lacks) is
// NotFound, like any missing object; ErrCorrupt (an object failed its hash,
// MAC or decoding) is DataLoss, the code gRPC keeps for unrecoverable
// corruption, so it is not taken for a passing fault and retried; ErrWrongKey
// (the backup service's --encryption-key-file does not open the container)
// is FailedPrecondition: the request is fine and retrying it will not help
// until an operator gives the service the right key. PermissionDenied would
// send them looking at the caller's token and roles, which are not the
// problem. Auth's errors ran before as statuses built in pkg/auth; a token
// file the server cannot read is now Internal (it was Unauthenticated,
// which blamed the caller's token).
package rpcerr

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/quota"
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
	// ErrAlreadyExists: what the request would create is there already (AlreadyExists, 409).
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable: something the request needs cannot be reached for
	// now; retrying later may work (Unavailable, 503).
	ErrUnavailable = errors.New("unavailable")
)

// domain is every domain error with its code, in the order Code tries them:
// an error that wraps two gets the first one's code.
var domain = []struct {
	err  error
	code codes.Code
}{
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},

	{engine.ErrNoBackup, codes.NotFound},
	{engine.ErrCorrupt, codes.DataLoss},
	{engine.ErrWrongKey, codes.FailedPrecondition},
	{engine.ErrClosed, codes.FailedPrecondition},

	{cinder.ErrCorrupt, codes.DataLoss},
	{cinder.ErrMissing, codes.NotFound},
	{cinder.ErrInvalidRecord, codes.InvalidArgument},
	{cinder.ErrUnsupported, codes.InvalidArgument},
	{cinder.ErrBrokenChain, codes.FailedPrecondition},

	{auth.ErrNoToken, codes.Unauthenticated},
	{auth.ErrBadToken, codes.Unauthenticated},
	{auth.ErrExpired, codes.Unauthenticated},
	{auth.ErrPermissionDenied, codes.PermissionDenied},
	{auth.ErrNoSource, codes.Internal}, // start-up only

	{quota.ErrExceeded, codes.ResourceExhausted},
	{quota.ErrInvalidLimits, codes.InvalidArgument},

	{ErrInvalidArgument, codes.InvalidArgument},
	{volume.ErrInvalidArgument, codes.InvalidArgument},
	{repository.ErrInvalidName, codes.InvalidArgument},
	{blockdev.ErrOutOfRange, codes.InvalidArgument},

	{store.ErrNotFound, codes.NotFound},
	{volume.ErrNotFound, codes.NotFound},
	{repository.ErrNotFound, codes.NotFound},
	{backupjob.ErrNotFound, codes.NotFound},

	{ErrAlreadyExists, codes.AlreadyExists},
	{volume.ErrAlreadyExists, codes.AlreadyExists},

	{ErrFailedPrecondition, codes.FailedPrecondition},
	{store.ErrConflict, codes.FailedPrecondition},
	{volume.ErrInUse, codes.FailedPrecondition},
	{lifecycle.ErrInvalidTransition, codes.FailedPrecondition},
	{blockdev.ErrReadOnly, codes.FailedPrecondition},

	{volume.ErrNoSpace, codes.ResourceExhausted},
	{repository.ErrNoSpace, codes.ResourceExhausted},

	{volume.ErrUnsupported, codes.Unimplemented},

	{ErrUnavailable, codes.Unavailable},
	{repository.ErrUnavailable, codes.Unavailable},
	{store.ErrUnavailable, codes.Unavailable},
	{backupjob.ErrUnavailable, codes.Unavailable},
}

// Invalid returns an InvalidArgument error with the formatted message.
func Invalid(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: ErrInvalidArgument}
}

// Precondition returns a FailedPrecondition error with the formatted message.
func Precondition(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: ErrFailedPrecondition}
}

// Exists returns an AlreadyExists error with the formatted message.
func Exists(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: ErrAlreadyExists}
}

// Unavailable returns an Unavailable error with the formatted message.
func Unavailable(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: ErrUnavailable}
}

// userError carries a complete user-facing message.
type userError struct {
	msg  string
	kind error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.kind }

// Code is the gRPC code of err: a status error's own, else the code of the
// first domain error err wraps, else Internal.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	for _, d := range domain {
		if errors.Is(err, d.err) {
			return d.code
		}
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
