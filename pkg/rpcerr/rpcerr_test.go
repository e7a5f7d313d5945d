package rpcerr

import (
	"context"
	"fmt"
	"testing"

	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/volume"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("volume x: %w", store.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", volume.ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", store.ErrConflict), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", volume.ErrUnsupported), codes.Unimplemented},
		{fmt.Errorf("x: %w", repository.ErrInvalidName), codes.InvalidArgument},
		{fmt.Errorf("x: %w", repository.ErrUnavailable), codes.Unavailable},
		{Invalid("size must be positive"), codes.InvalidArgument},
		{Precondition("volume is in-use"), codes.FailedPrecondition},
		{context.Canceled, codes.Canceled},
		{status.Error(codes.AlreadyExists, "x"), codes.AlreadyExists},
		{fmt.Errorf("disk exploded"), codes.Internal},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if s, _ := status.FromError(ToStatus(Invalid("size must be positive"))); s.Message() != "size must be positive" {
		t.Errorf("message not kept: %q", s.Message())
	}
}
