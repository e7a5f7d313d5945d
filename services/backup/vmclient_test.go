package backup

import (
	"errors"
	"fmt"
	"testing"

	"github.com/blockvault/blockvault/pkg/backupjob"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVMErr: the volume manager's codes become the sentinels the job
// runner acts on (retry, or take as gone), and keep their message and
// code for whoever reports them.
func TestVMErr(t *testing.T) {
	for _, c := range []struct {
		code                  codes.Code
		notFound, unavailable bool
	}{
		{codes.NotFound, true, false},
		{codes.Unavailable, false, true},
		{codes.DeadlineExceeded, false, true},
		{codes.Aborted, false, true},
		{codes.FailedPrecondition, false, false},
		{codes.Internal, false, false},
	} {
		in := status.Error(c.code, "snapshot s is attached")
		err := fmt.Errorf("delete temporary snapshot s: %w", vmErr(in))
		if got := errors.Is(err, backupjob.ErrNotFound); got != c.notFound {
			t.Errorf("%v: ErrNotFound %v, want %v", c.code, got, c.notFound)
		}
		if got := errors.Is(err, backupjob.ErrUnavailable); got != c.unavailable {
			t.Errorf("%v: ErrUnavailable %v, want %v", c.code, got, c.unavailable)
		}
		if status.Code(err) != c.code || err.Error() != "delete temporary snapshot s: "+in.Error() {
			t.Errorf("%v: became %v %q", c.code, status.Code(err), err)
		}
	}
	if vmErr(nil) != nil {
		t.Error("vmErr(nil) is not nil")
	}
}
