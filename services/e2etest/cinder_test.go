package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/cinder/cindertest"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cinderVolumes writes three states of a 6 MiB volume to files: random
// data, a hole, text; then two rounds of changes (one zeroes a stretch).
// It returns their paths and contents.
func cinderVolumes(t *testing.T) ([]string, [][]byte) {
	t.Helper()
	const mib = 1 << 20
	v0 := make([]byte, 6*mib)
	rand.Read(v0[:2*mib])
	copy(v0[4*mib:], bytes.Repeat([]byte("cinder backups stay where they are. "), 2*mib/36))
	v1 := bytes.Clone(v0)
	rand.Read(v1[1*mib : 1*mib+100<<10])
	rand.Read(v1[3*mib : 3*mib+64<<10]) // into the hole
	v2 := bytes.Clone(v1)
	clear(v2[4*mib : 5*mib])
	rand.Read(v2[6*mib-33<<10:])
	dir := t.TempDir()
	var paths []string
	for i, v := range [][]byte{v0, v1, v2} {
		p := filepath.Join(dir, "v"+string(rune('0'+i)))
		if err := os.WriteFile(p, v, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths, [][]byte{v0, v1, v2}
}

// checkRestored restores backup id through the daemons and compares the
// new volume with want (the rest of the volume, Cinder's whole GiB, must
// read zeros).
func checkRestored(t *testing.T, s *Stack, id string, want []byte) {
	t.Helper()
	dev, done := relRestored(t, s, id)
	defer done()
	got := make([]byte, len(want)+1<<20)
	if _, err := dev.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got[:len(want)], want); i >= 0 {
		t.Fatalf("the restore of %s differs from the volume Cinder backed up at byte %d", id, i)
	}
	tail := make([]byte, 1<<20)
	if _, err := dev.ReadAt(tail, dev.Size()-int64(len(tail))); err != nil {
		t.Fatal(err)
	}
	if !isZeros(got[len(want):]) || !isZeros(tail) || dev.Size() != 1<<30 {
		t.Fatalf("the restored volume of %s (%d bytes) is not zeros past the data", id, dev.Size())
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func isZeros(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// TestCinderImportPosix: real Cinder (python3-cinder's PosixBackupDriver,
// zlib) backs up a volume three times, full then two incrementals; the CLI
// imports its export records, naming the directory, and the backups list,
// show (names, descriptions, dates, chain kept), verify and restore byte for
// byte through the daemons. An incremental before its parent, a damaged
// object and deleting a parent are refused or reported with the reason, and
// deleting an imported backup leaves Cinder's files alone.
func TestCinderImportPosix(t *testing.T) {
	paths, vols := cinderVolumes(t)
	chain := cindertest.Backup(t, cindertest.Options{Driver: cindertest.Posix, Compression: "zlib", Backups: []cindertest.Step{
		{Volume: paths[0], Name: "nightly-full", Description: "made by Cinder"}, {Volume: paths[1], Name: "inc-1"}, {Volume: paths[2], Name: "inc-2"}}})
	s := Start(t, Options{NoGateway: true})
	flags := []string{"--volume-manager", s.VolumeManager.Addr, "--backup-service", s.Backup.Addr, "--project", project}
	cli := func(args ...string) (string, string, int) { t.Helper(); return runCLI(t, append(flags, args...)...) }
	dir := t.TempDir()
	var files, ids []string
	for i, r := range chain.Records {
		b, _ := json.Marshal(r)
		f := filepath.Join(dir, "record-"+string(rune('0'+i))+".json")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}

	// An incremental before its parent: refused, naming the parent.
	if out, errOut, code := cli("backup", "import", files[1], "--repository", chain.PosixPath); code == 0 || !strings.Contains(errOut, "import it first") {
		t.Fatalf("importing an incremental before its parent: exit %d, %s%s", code, out, errOut)
	}
	// No repository named, and the service has no --cinder-repository.
	if _, errOut, code := cli("backup", "import", files[0]); code == 0 || !strings.Contains(errOut, "name the repository Cinder wrote it to") {
		t.Fatalf("importing without a repository: exit %d, %s", code, errOut)
	}
	for _, f := range files {
		out, errOut, code := cli("-o", "json", "backup", "import", f, "--repository", chain.PosixPath)
		if code != 0 {
			t.Fatalf("backup import %s: exit %d: %s", f, code, errOut)
		}
		var b map[string]any
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("import output: %v: %s", err, out)
		}
		ids = append(ids, b["id"].(string))
	}
	ctx := context.Background()
	for i, id := range ids {
		g, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
		if err != nil {
			t.Fatal(err)
		}
		b := g.GetBackup()
		wantName := []string{"nightly-full", "inc-1", "inc-2"}[i]
		if b.GetStatus() != "available" || b.GetOrigin() != "cinder-posix" || b.GetName() != wantName || b.GetIsIncremental() != (i > 0) ||
			b.GetSize() != 1 || (i > 0 && b.GetParentId() != ids[i-1]) || (i == 0 && b.GetDescription() != "made by Cinder") {
			t.Fatalf("imported backup %d: %v", i, b)
		}
		if created, err := time.Parse("2006-01-02T15:04:05.000000", b.GetCreatedAt()); err != nil || time.Since(created) > time.Hour || time.Since(created) < 0 {
			t.Fatalf("created_at %q: not Cinder's date (%v)", b.GetCreatedAt(), err)
		}
		if i < 2 && !b.GetHasDependentBackups() {
			t.Fatalf("backup %d does not say it has dependent backups", i)
		}
	}
	if out, _, code := cli("backup", "list"); code != 0 || !strings.Contains(out, "nightly-full") || !strings.Contains(out, "inc-1") || !strings.Contains(out, "inc-2") {
		t.Fatalf("backup list does not list the imported backups: %s", out)
	}
	if out, errOut, code := cli("backup", "verify", ids[2]); code != 0 || !strings.Contains(out, "true") {
		t.Fatalf("verify of the newest incremental: exit %d: %s%s", code, out, errOut)
	}
	for i, id := range ids {
		checkRestored(t, s, id, vols[i])
	}

	// A flipped byte in one of the incremental's objects: verify names it,
	// a restore fails with it and the target is error_restoring; the
	// backup stays available.
	objs, _ := filepath.Glob(filepath.Join(chain.PosixPath, ids[2][:2], ids[2][2:4], ids[2], "*-00001"))
	if len(objs) != 1 {
		t.Fatalf("the incremental's first object: %v", objs)
	}
	orig, err := os.ReadFile(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0xff
	os.WriteFile(objs[0], bad, 0o644)
	vr, err := s.Backups.VerifyBackup(ctx, &backupv1.VerifyBackupRequest{ProjectId: project, BackupId: ids[2]})
	if err != nil || vr.GetOk() || len(vr.GetDamaged()) == 0 || !strings.Contains(vr.GetDamaged()[0].GetChunkId(), filepath.Base(objs[0])) {
		t.Fatalf("verify of a damaged import: %v %v", vr, err)
	}
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: ids[2], Restore: &backupv1.RestoreInput{}})
	if err != nil {
		t.Fatal(err)
	}
	if b := waitBackup(t, s, ids[2], testenv.Patience); b.GetStatus() != "available" || !strings.Contains(b.GetFailReason(), filepath.Base(objs[0])) {
		t.Fatalf("after a restore from a damaged object the backup is %s, %q (want available, naming the object)", b.GetStatus(), b.GetFailReason())
	}
	if v := relWaitVolume(t, s, rr.GetRestore().GetVolumeId(), "error_restoring", testenv.Patience); !strings.Contains(v.GetFailReason(), filepath.Base(objs[0])) {
		t.Fatalf("the target's fail reason %q does not name the object", v.GetFailReason())
	}
	os.WriteFile(objs[0], orig, 0o644)

	// Deleting a parent of imported incrementals is refused; deleting the
	// newest forgets it and leaves Cinder's files.
	if _, errOut, code := cli("backup", "delete", ids[1]); code == 0 || !strings.Contains(errOut, "Incremental backups exist") {
		t.Fatalf("deleting a parent: exit %d, %s", code, errOut)
	}
	if _, errOut, code := cli("backup", "delete", ids[2]); code != 0 {
		t.Fatalf("deleting the newest incremental: exit %d, %s", code, errOut)
	}
	for deadline := time.Now().Add(testenv.Patience); ; time.Sleep(50 * time.Millisecond) {
		_, err := s.Backups.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: project, BackupId: ids[2]})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted backup is still there: %v", err)
		}
	}
	if _, err := os.Stat(objs[0]); err != nil {
		t.Fatalf("deleting an imported backup touched Cinder's repository: %v", err)
	}
	if _, _, code := cli("backup", "import", files[2], "--repository", chain.PosixPath); code != 0 {
		t.Fatalf("importing it again after its delete: exit %d", code)
	}
}

// TestCinderImportS3: real Cinder's S3BackupDriver (zstd) writes a full and
// an incremental backup to the project's S3 test server; the records are
// imported over REST (POST /v3/{project}/backups/import_record, Cinder's
// body) with the repository from the backup service's --cinder-repository,
// and restore byte for byte.
func TestCinderImportS3(t *testing.T) {
	paths, vols := cinderVolumes(t)
	srv := s3test.Start(t)
	c := srv.Config
	chain := cindertest.Backup(t, cindertest.Options{Driver: cindertest.S3, S3: c, Compression: "zstd", Backups: []cindertest.Step{
		{Volume: paths[0], Name: "s3-full"}, {Volume: paths[2], Name: "s3-inc"}}})
	t.Setenv("BLOCKVAULT_S3_SECRET_KEY", c.SecretKey)
	s := Start(t, Options{BackupArgs: []string{"--cinder-repository", "s3://" + c.Endpoint, "--s3-access-key", c.AccessKey, "--s3-region", c.Region}})
	var ids []string
	for _, r := range chain.Records {
		body := map[string]any{"backup-record": map[string]string{"backup_service": r.BackupService, "backup_url": r.BackupURL}}
		code, resp := s.REST("POST", "/v3/"+project+"/backups/import_record", body)
		if code != 201 {
			t.Fatalf("import_record: HTTP %d %v", code, resp)
		}
		if field(resp, "backup", "origin") != "cinder-s3" {
			t.Fatalf("imported: %v", resp)
		}
		ids = append(ids, field(resp, "backup", "id"))
	}
	// A bucket other than the record's is refused, naming both.
	r := chain.Records[0]
	code, resp := s.REST("POST", "/v3/"+project+"/backups/import_record", map[string]any{
		"backup-record": map[string]string{"backup_service": r.BackupService, "backup_url": r.BackupURL}, "repository": "s3://" + c.Endpoint + "/other-bucket"})
	if code != 400 || !strings.Contains(field(resp, "badRequest", "message"), c.Bucket) {
		t.Fatalf("import naming another bucket: HTTP %d %v", code, resp)
	}
	checkRestored(t, s, ids[0], vols[0])
	checkRestored(t, s, ids[1], vols[2])
}
