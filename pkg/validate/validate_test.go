package validate

import (
	"errors"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/rpcerr"
)

func TestValidate(t *testing.T) {
	bad := []error{
		UUID("volume_id", ""),
		UUID("volume_id", "not-a-uuid"),
		UUID("volume_id", "../../etc/passwd"),
		UUID("volume_id", "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"),
		Project(""),
		Project("a/b"),
		Text("name", strings.Repeat("x", 256)),
		Text("name", "a\x00b"),
		Metadata(map[string]string{"": "x"}),
	}
	for i, err := range bad {
		if !errors.Is(err, rpcerr.ErrInvalidArgument) {
			t.Errorf("case %d: got %v, want InvalidArgument", i, err)
		}
	}
	good := []error{
		UUID("volume_id", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
		OptionalUUID("snapshot_id", ""),
		Project("demo_project-1"),
		Text("name", strings.Repeat("é", 255)),
	}
	for i, err := range good {
		if err != nil {
			t.Errorf("good case %d: %v", i, err)
		}
	}
	if err := UUID("volume_id", "nope"); !strings.Contains(err.Error(), "volume_id") {
		t.Errorf("message does not name the field: %v", err)
	}
}
