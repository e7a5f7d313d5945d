// Package cindertest makes real Cinder backups for tests: Debian's
// python3-cinder (Cinder 21) runs its own backup manager and chunked backup
// driver, the posix driver on a directory or the S3 driver against an S3
// server (s3test's versitygw), outside a full OpenStack (cinder_backup.py:
// oslo.config set up by hand, a sqlite database made by
// cinder.db.migration.db_sync()). Each backup is exported with the manager's
// own export_record, the record an operator brings from Cinder.
//
// A missing python3-cinder fails the test in CI and skips it elsewhere
// (testenv.Missing).
package cindertest

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/testenv"
)

//go:embed cinder_backup.py
var script []byte

// Python is Debian's interpreter, where python3-cinder is installed (not a
// pyenv shim or a virtualenv found first in PATH).
const Python = "/usr/bin/python3"

// Driver is the Cinder backup driver that makes the backups.
type Driver string

const (
	// Posix is cinder.backup.drivers.posix.PosixBackupDriver: files under
	// backup_posix_path, in <id[0:2]>/<id[2:4]>/<id>/.
	Posix Driver = "posix"
	// S3 is cinder.backup.drivers.s3.S3BackupDriver: keys in a bucket.
	S3 Driver = "s3"
)

// Step is one backup of a chain: the volume's content when it is made.
type Step struct {
	// Volume is the path of a file holding the volume's content.
	Volume      string
	Name        string
	Description string
}

// Options describe a chain of backups of one volume: the first step is a
// full backup, each later one an incremental backup of the one before.
type Options struct {
	Driver Driver
	// PosixPath is the posix driver's backup_posix_path (default: a
	// temporary directory, see Chain.PosixPath).
	PosixPath string
	// Container is the posix driver's backup_container (default: none,
	// so Cinder's <id[0:2]>/<id[2:4]>/<id>).
	Container string
	// S3 is the server and bucket of the S3 driver (s3test.Server.Config).
	S3 s3.Config
	// Compression is backup_compression_algorithm: zlib (the default),
	// gzip, bz2, bzip2, zstd or none.
	Compression string
	// ObjectSize is backup_file_size (posix) or backup_s3_object_size
	// (s3): the volume's bytes per object (default 1 MiB, to keep tests
	// fast; Cinder's defaults are 1999994880 and 52428800).
	ObjectSize int
	// BlockSize is the sha256file's block (backup_sha_block_size_bytes,
	// backup_s3_block_size; default Cinder's 32768).
	BlockSize int
	// AvailabilityZone is storage_availability_zone (default "nova").
	AvailabilityZone string
	// VolumeSizeGB is the volume's size in Cinder's database (default 1):
	// what the export record's size says. The driver backs up the file
	// whatever its size.
	VolumeSizeGB int
	Backups      []Step
}

// ExportRecord is what Cinder's export_record returns for a backup (and
// `cinder backup-export` prints): the driver's class and a base64 JSON of
// the backup's row.
type ExportRecord struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

// Chain is a chain of backups that Cinder made.
type Chain struct {
	// PosixPath is where the posix driver wrote (empty for S3).
	PosixPath string
	// Records are the backups' export records, the full backup first.
	Records []ExportRecord
}

// Backup runs Cinder to make opts.Backups and returns their export
// records. It fails the test when Cinder fails, with Cinder's log.
func Backup(t testing.TB, opts Options) Chain {
	t.Helper()
	Require(t)
	if len(opts.Backups) == 0 {
		t.Fatal("cindertest: no backups to make")
	}
	if opts.Driver == "" {
		opts.Driver = Posix
	}
	if opts.Compression == "" {
		opts.Compression = "zlib"
	}
	if opts.ObjectSize == 0 {
		opts.ObjectSize = 1 << 20
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = 32768
	}
	if opts.AvailabilityZone == "" {
		opts.AvailabilityZone = "nova"
	}
	if opts.VolumeSizeGB == 0 {
		opts.VolumeSizeGB = 1
	}
	work := t.TempDir()
	spec := map[string]any{
		"driver":            string(opts.Driver),
		"work_dir":          work,
		"compression":       opts.Compression,
		"object_size":       opts.ObjectSize,
		"block_size":        opts.BlockSize,
		"availability_zone": opts.AvailabilityZone,
		"volume_size_gb":    opts.VolumeSizeGB,
	}
	switch opts.Driver {
	case Posix:
		if opts.PosixPath == "" {
			opts.PosixPath = t.TempDir()
		}
		spec["posix_path"] = opts.PosixPath
		spec["container"] = opts.Container
	case S3:
		c := opts.S3
		if c.Endpoint == "" || c.Bucket == "" {
			t.Fatal("cindertest: the S3 driver needs opts.S3 (an s3test server's Config)")
		}
		scheme := "http"
		if c.UseTLS {
			scheme = "https"
		}
		region := c.Region
		if region == "" {
			region = "us-east-1"
		}
		spec["s3"] = map[string]string{
			"endpoint_url": scheme + "://" + c.Endpoint,
			"access_key":   c.AccessKey,
			"secret_key":   c.SecretKey,
			"bucket":       c.Bucket,
			"region":       region,
		}
	default:
		t.Fatalf("cindertest: unknown driver %q", opts.Driver)
	}
	var steps []map[string]string
	for _, s := range opts.Backups {
		abs, err := filepath.Abs(s.Volume)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, map[string]string{"file": abs, "name": s.Name, "description": s.Description})
	}
	spec["backups"] = steps
	in, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	scriptPath := filepath.Join(work, "cinder_backup.py")
	if err := os.WriteFile(scriptPath, script, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*testenv.Patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, Python, scriptPath)
	cmd.Dir = work
	cmd.Env = pythonEnv()
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("cindertest: Cinder's %s driver failed (%v) after %v:\n%s", opts.Driver, err, time.Since(start).Round(time.Millisecond), tail(stderr.String(), 4000))
	}
	var recs []ExportRecord
	if err := json.Unmarshal(stdout.Bytes(), &recs); err != nil || len(recs) != len(opts.Backups) {
		t.Fatalf("cindertest: want %d export records, got %q (%v); log:\n%s", len(opts.Backups), stdout.String(), err, tail(stderr.String(), 4000))
	}
	t.Logf("cindertest: Cinder's %s driver made %d backups (%s) in %v", opts.Driver, len(recs), opts.Compression, time.Since(start).Round(time.Millisecond))
	chain := Chain{Records: recs}
	if opts.Driver == Posix {
		chain.PosixPath = opts.PosixPath
	}
	return chain
}

// Require ends the test through testenv.Missing unless Debian's
// python3-cinder can be imported.
func Require(t testing.TB) {
	t.Helper()
	if why := missing(); why != "" {
		testenv.Missing(t, "%s", why)
	}
}

// missing says what of Cinder is missing, once per test process.
var missing = sync.OnceValue(func() string {
	if _, err := os.Stat(Python); err != nil {
		return fmt.Sprintf("%s (Debian's python3, for python3-cinder)", Python)
	}
	cmd := exec.Command(Python, "-c", "import cinder.backup.drivers.posix, cinder.backup.drivers.s3, zstd")
	cmd.Env = pythonEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Sprintf("Debian's python3-cinder (apt-get install python3-cinder; .ci/deps.sh does): %v: %s", err, tail(string(out), 500))
	}
	return ""
})

// pythonEnv is the environment Cinder runs in: the test's, without what
// would send Python elsewhere (a pyenv, a virtualenv, a user site).
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYENV_VERSION":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PYTHONNOUSERSITE=1", "PYTHONDONTWRITEBYTECODE=1")
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
