package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// TestRBD runs the non-disruptive backup flows on the rbd driver, against a
// real single-node Ceph cluster: a forced backup of an in-use RBD volume
// under a writer, from an attached RBD snapshot and, with snapshot export
// off, from a temporary RBD clone, each restored as a point in time; and
// incremental backups that read only what RBD's diff reports changed; and a
// backup service killed during a backup and during a restore, and the
// volume manager killed during a backup (its images' exclusive locks are
// taken over by the next one); and a live restore through both daemons'
// crashes (liveRestore). After each,
// the pool holds only the user's images and snapshots (rbd ls and rbd snap
// ls agree with the volume manager's records).
func TestRBD(t *testing.T) {
	c := testenv.StartCeph(t)
	t.Run("NonDisruptiveBackup/attached-snapshot", func(t *testing.T) {
		s := Start(t, Options{Ceph: c})
		checkDriver(t, s, "rbd", "")
		nonDisruptiveBackup(t, s, backupjob.StrategyAttachedSnapshot)
	})
	t.Run("NonDisruptiveBackup/temporary-volume", func(t *testing.T) {
		s := Start(t, Options{Ceph: c, VolumeManagerArgs: []string{"--disable-snapshot-export"}})
		nonDisruptiveBackup(t, s, backupjob.StrategyTemporaryVolume)
	})
	t.Run("ChangedBlockTracking", func(t *testing.T) {
		changedBlockTracking(t, Start(t, Options{Ceph: c, BackupArgs: []string{"--changed-block-tracking"}}))
	})
	t.Run("BackupServiceKilledMidBackup", func(t *testing.T) {
		backupServiceKilledMidBackup(t, Start(t, Options{Ceph: c}))
	})
	t.Run("VolumeManagerKilledMidBackup", func(t *testing.T) {
		volumeManagerKilledMidBackup(t, Start(t, Options{Ceph: c, NoGateway: true}))
	})
	t.Run("LiveRestore", func(t *testing.T) {
		liveRestore(t, Start(t, Options{Ceph: c, VolumeManagerArgs: []string{"--live-fill-rate", fmt.Sprint(liveFillRate)}}))
	})
}

// checkDriver fails the test unless the volume manager reports driver (in
// mode, unless "").
func checkDriver(t *testing.T, s *Stack, driver, mode string) {
	t.Helper()
	r, err := s.Volumes.GetCapabilities(context.Background(), &volumev1.GetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.GetCapabilities(); c.GetDriver() != driver || mode != "" && c.GetMode() != mode {
		t.Fatalf("the volume manager runs driver %q in mode %q, want %q in %q", c.GetDriver(), c.GetMode(), driver, mode)
	}
}

// rbdLeftovers fails the test when the stack's RBD namespace holds an image
// that is not one of the project's non-temporary volumes, or a snapshot
// that is not one of the user's snapshots of that volume: a temporary
// snapshot, a temporary clone or the hidden snapshot a clone hangs from.
func rbdLeftovers(t *testing.T, s *Stack) {
	t.Helper()
	ctx := context.Background()
	vl, err := s.Volumes.ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: project})
	if err != nil {
		t.Fatal(err)
	}
	volumes := map[string]bool{}
	for _, v := range vl.GetVolumes() {
		volumes["volume-"+v.GetId()] = true
	}
	sl, err := s.Volumes.ListSnapshots(ctx, &volumev1.ListSnapshotsRequest{ProjectId: project})
	if err != nil {
		t.Fatal(err)
	}
	snapshots := map[string]bool{}
	for _, x := range sl.GetSnapshots() {
		snapshots["volume-"+x.GetVolumeId()+"@snapshot-"+x.GetId()] = true
	}
	var images []string
	if err := json.Unmarshal([]byte(s.Ceph.RBD(t, "ls", "--format", "json", "--pool", s.Ceph.Pool, "--namespace", s.RBDNamespace)), &images); err != nil {
		t.Fatalf("rbd ls: %v", err)
	}
	for _, img := range images {
		if !volumes[img] {
			t.Errorf("rbd ls: image %s is not a volume of the project (a temporary clone left?)", img)
			continue
		}
		var snaps []struct {
			Name string `json:"name"`
		}
		spec := s.Ceph.Pool + "/" + s.RBDNamespace + "/" + img
		if err := json.Unmarshal([]byte(s.Ceph.RBD(t, "snap", "ls", "--format", "json", spec)), &snaps); err != nil {
			t.Fatalf("rbd snap ls %s: %v", spec, err)
		}
		for _, sn := range snaps {
			if !snapshots[img+"@"+sn.Name] {
				t.Errorf("rbd snap ls %s: snapshot %s is not a user's snapshot (a temporary one left?)", spec, sn.Name)
			}
		}
	}
	t.Logf("rbd ls %s/%s: %s", s.Ceph.Pool, s.RBDNamespace, strings.Join(images, " "))
}

// rbdUsedBytes is what a volume's image takes in the pool (rbd du: the
// objects written, from the object map), -1 when it cannot be read.
func rbdUsedBytes(s *Stack, volumeID string) int64 {
	out, err := s.Ceph.Run(context.Background(), "rbd", "du", "--format", "json", s.Ceph.Pool+"/"+s.RBDNamespace+"/volume-"+volumeID)
	if err != nil {
		return -1
	}
	var du struct {
		Images []struct {
			Name     string `json:"name"`
			Snapshot string `json:"snapshot"`
			Used     int64  `json:"used_size"`
		} `json:"images"`
	}
	if json.Unmarshal([]byte(out), &du) != nil {
		return -1
	}
	for _, img := range du.Images {
		if img.Snapshot == "" {
			return img.Used
		}
	}
	return -1
}

// TestVolumeManagerWithoutRBD: a volume manager built without cgo has no
// rbd driver; asked for it, it stops at start saying so, and on the file
// driver it serves as ever.
func TestVolumeManagerWithoutRBD(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "volume-manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd/volume-manager")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/volume-manager: %v\n%s", err, out)
	}
	args := func(name string) []string {
		return []string{"--listen", FreeAddr(t), "--nbd-listen", FreeAddr(t), "--http-listen", "", "--auth", "noauth",
			"--node-id", "n1", "--data-dir", filepath.Join(dir, name)}
	}
	cmd := exec.Command(bin, append(args("rbd"), "--driver", "rbd", "--rbd-pool", "volumes")...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the rbd driver is not compiled into this binary") {
		t.Fatalf("--driver rbd without cgo: %v, said:\n%s", err, out)
	}
	t.Logf("--driver rbd without cgo: %s", strings.TrimSpace(string(out)))

	a := args("file")
	d := &Daemon{Name: "volume-manager", Bin: bin, Args: a, Addr: a[1], Log: filepath.Join(dir, "file.log"), t: t}
	d.Start()
	t.Cleanup(d.Stop)
	health := filepath.Join(Binaries(t), "blockvault")
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if exec.Command(health, "health", "--address", d.Addr).Run() == nil {
			break
		}
		if !d.Running() || time.Since(start) > testenv.Patience {
			t.Fatalf("the file driver of a binary without cgo did not serve:\n%s", d.Logs())
		}
	}
	if !strings.Contains(d.Logs(), "driver=file") {
		t.Fatalf("the volume manager's log does not say it runs the file driver:\n%s", d.Logs())
	}
}
