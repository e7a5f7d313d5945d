package location_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockvault/blockvault/pkg/repository/location"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/spf13/cobra"
)

func TestDirectory(t *testing.T) {
	for _, tc := range []struct {
		url, dir string
		ok       bool
	}{
		{"/srv/backups", "/srv/backups", true},
		{"relative/dir", "relative/dir", true},
		{"file:///srv/backups", "/srv/backups", true},
		{"file://localhost/srv/backups", "/srv/backups", true},
		{"file://otherhost/srv/backups", "", false},
		{"s3://127.0.0.1:9000/bucket/prefix", "", false},
		{"s3s://127.0.0.1:9000/bucket", "", false},
		{"", "", false},
	} {
		dir, ok := location.Directory(tc.url)
		if dir != tc.dir || ok != tc.ok {
			t.Errorf("Directory(%q) = %q, %v; want %q, %v", tc.url, dir, ok, tc.dir, tc.ok)
		}
	}
}

func TestOpenPosix(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, u := range []string{filepath.Join(dir, "a"), "file://" + filepath.Join(dir, "b")} {
		r, err := location.Open(ctx, location.Config{URL: u})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if err := r.Put(ctx, "x", []byte("y")); err != nil {
			t.Fatal(err)
		}
		want, _ := location.Directory(u)
		if r.Location() != want {
			t.Errorf("%s: location %s, want %s", u, r.Location(), want)
		}
		if _, err := os.Stat(filepath.Join(want, "x")); err != nil {
			t.Errorf("%s: the object is not in the directory: %v", u, err)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url     string
		unknown bool
	}{
		{"", false},
		{"gs://bucket/x", true},
		{"s3://127.0.0.1:9000", false},
		{"s3:///bucket", false},
		{"file://otherhost/x", false},
	} {
		_, err := location.Open(ctx, location.Config{URL: tc.url})
		if err == nil {
			t.Errorf("%q opened", tc.url)
			continue
		}
		if errors.Is(err, location.ErrUnknownScheme) != tc.unknown {
			t.Errorf("%q: %v (unknown scheme: want %v)", tc.url, err, tc.unknown)
		}
	}
}

func TestOpenS3(t *testing.T) {
	srv := s3test.Start(t)
	c := srv.Config
	ctx := context.Background()
	r, err := location.Open(ctx, location.Config{URL: "s3://" + c.Endpoint + "/" + c.Bucket + "/pre",
		S3AccessKey: c.AccessKey, S3SecretKey: c.SecretKey, S3Region: c.Region})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "x", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if want := "s3://" + c.Endpoint + "/" + c.Bucket + "/pre/"; r.Location() != want {
		t.Errorf("location %s, want %s", r.Location(), want)
	}
	// Wrong credentials are refused by the server: the URL alone is not enough.
	if _, err := location.Open(ctx, location.Config{URL: "s3://" + c.Endpoint + "/" + c.Bucket, S3AccessKey: "nobody",
		S3SecretKey: "wrong", S3Region: c.Region}); err == nil {
		t.Error("an S3 repository opened with wrong credentials")
	}
}

// TestFlags: the same flags on the daemons' flag sets and the CLI's.
func TestFlags(t *testing.T) {
	args := []string{"--repository", "s3://h:1/b", "--s3-access-key", "a", "--s3-secret-key", "s", "--s3-region", "r"}
	want := location.Config{URL: "s3://h:1/b", S3AccessKey: "a", S3SecretKey: "s", S3Region: "r"}

	var c location.Config
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	location.Flags(fs, &c, "<data-dir>/repository")
	if err := fs.Parse(args); err != nil || c != want {
		t.Errorf("flag: %+v, %v", c, err)
	}
	c = location.Config{}
	pfs := (&cobra.Command{}).Flags() // the CLI's: a *pflag.FlagSet
	location.Flags(pfs, &c, "")
	if err := pfs.Parse(args); err != nil || c != want {
		t.Errorf("pflag: %+v, %v", c, err)
	}
}
