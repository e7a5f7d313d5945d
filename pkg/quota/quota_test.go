package quota

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestQuotaFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quotas")
	os.WriteFile(path, []byte("# comment\nteam-a volumes=50 gigabytes=5000\nteam-a backups=-1\n"), 0o600)
	q, err := New(Config{Defaults: DefaultLimits(), File: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		project, resource string
		want              int64
	}{
		{"team-a", Volumes, 50}, {"team-a", Gigabytes, 5000}, {"team-a", Backups, Unlimited},
		{"team-a", Snapshots, 10}, {"team-b", Volumes, 10},
	} {
		if got := q.Limit(c.project, c.resource); got != c.want {
			t.Errorf("%s %s: %d, want %d", c.project, c.resource, got, c.want)
		}
	}
	if err := q.CheckCount("team-b", Volumes, 10); !errors.Is(err, ErrExceeded) || !strings.Contains(err.Error(), "Maximum number of volumes allowed (10)") {
		t.Errorf("11th volume: %v", err)
	}
	if err := q.CheckGigabytes("team-b", Gigabytes, 999, 2); !errors.Is(err, ErrExceeded) {
		t.Errorf("1001 GiB: %v", err)
	}
	if err := CheckUpdate(Limits{"floppies": 1}, []string{Volumes}); !errors.Is(err, ErrInvalidLimits) {
		t.Errorf("an unknown resource: %v", err)
	}
	if err := CheckUpdate(Limits{Volumes: -2}, []string{Volumes}); !errors.Is(err, ErrInvalidLimits) {
		t.Errorf("a limit of -2: %v", err)
	}
	if err := q.CheckCount("team-a", Backups, 1e9); err != nil {
		t.Errorf("unlimited backups refused: %v", err)
	}
	for _, bad := range []string{"team-a volumes\n", "team-a color=3\n", "team-a volumes=-2\n", "team-a volumes=x\n"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := New(Config{File: path}); err == nil {
			t.Errorf("quota file %q accepted", bad)
		}
	}
}
