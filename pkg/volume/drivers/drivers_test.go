package drivers_test

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/drivers"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/pkg/volume/rbd"
)

// TestFlags: every driver's flags are on the command line, each bound into
// its own settings; the chosen one's come back after parsing.
func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    volume.DriverConfig
		wantErr string // in the error's text
	}{
		{nil, &file.Config{Mode: "auto"}, ""},
		{[]string{"--file-mode", "copy-before-write"}, &file.Config{Mode: "copy-before-write"}, ""},
		{[]string{"--driver", "rbd", "--rbd-pool", "p", "--ceph-conf", "/c", "--ceph-user", "u", "--rbd-namespace", "n", "--file-mode", "reflink"},
			&rbd.Config{Pool: "p", ConfPath: "/c", User: "u", Namespace: "n"}, ""},
		{[]string{"--driver", "nfs"}, nil, `driver "nfs": unknown storage driver: want file or rbd`},
	} {
		fs := flag.NewFlagSet("volume-manager", flag.ContinueOnError)
		name := "file"
		b := drivers.Default().Flags(fs, &name)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		got, err := b.Config()
		if tc.wantErr != "" {
			if !errors.Is(err, drivers.ErrUnknown) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		switch w := tc.want.(type) {
		case *file.Config:
			if g, ok := got.(*file.Config); !ok || *g != *w {
				t.Errorf("%v: %#v, want %#v", tc.args, got, w)
			}
		case *rbd.Config:
			if g, ok := got.(*rbd.Config); !ok || *g != *w {
				t.Errorf("%v: %#v, want %#v", tc.args, got, w)
			}
		}
	}
}

func TestHelp(t *testing.T) {
	fs := flag.NewFlagSet("volume-manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := "file"
	drivers.Default().Flags(fs, &name)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if got := strings.Join(names, " "); got != "ceph-conf ceph-user driver file-mode rbd-namespace rbd-pool" {
		t.Errorf("flags: %s", got)
	}
	want := "storage driver: file (files under data-dir/pool) or rbd (Ceph RBD images; needs a binary built with -tags rbd)"
	if u := fs.Lookup("driver").Usage; u != want {
		t.Errorf("--driver: %q, want %q", u, want)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c  volume.DriverConfig
		ok bool
	}{
		{&file.Config{Mode: "auto"}, true},
		{&file.Config{Mode: "reflink"}, true},
		{&file.Config{Mode: "copy-before-write"}, true},
		{&file.Config{Mode: "fast"}, false},
		{&rbd.Config{Pool: "volumes"}, true},
		{&rbd.Config{}, false},
	} {
		if err := tc.c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%#v: %v", tc.c, err)
		}
	}
}

func TestRegistry(t *testing.T) {
	r := drivers.Default()
	if got := strings.Join(r.Names(), " "); got != "file rbd" {
		t.Errorf("names: %s", got)
	}
	if _, err := r.Config("zfs"); !errors.Is(err, drivers.ErrUnknown) {
		t.Errorf("Config(zfs): %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("two drivers of one name registered")
		}
	}()
	drivers.New(file.Factory(), file.Factory())
}

// TestOpenFile: the file driver opens its pool under the data directory.
func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	c, _ := drivers.Default().Config("file")
	d, err := c.Open(volume.OpenOptions{DataDir: dir, DisableSnapshotOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "file" || d.Capabilities().SnapshotExport {
		t.Errorf("%s: %+v", d.Name(), d.Capabilities())
	}
	if st, err := os.Stat(filepath.Join(dir, "pool", "volumes")); err != nil || !st.IsDir() {
		t.Errorf("no pool under the data directory: %v", err)
	}
}
