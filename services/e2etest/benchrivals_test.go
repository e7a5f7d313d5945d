package e2etest

// restic and borg on the same data as blockvault: an image file of the
// volume, backed up full, then after the same two 1% changes, and the full
// backup restored; in fresh repositories that are removed at the end.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rival is another backup tool. Its commands run in a directory holding
// the image as imageName (backups) or in the restore target (restores).
type rival struct {
	name, bin, version, settings string
	versionArg                   string
	env                          []string
	initArgs                     func(repo string) []string
	backupArgs                   func(repo, name string) []string
	restoreArgs                  func(repo, name string) []string
}

const imageName = "image.raw"

// rivals returns restic and borg, with bin "" when not installed; their
// caches and configuration live under dir, not in the home directory.
func rivals(dir string) []*rival {
	rs := []*rival{
		{
			name:       "restic",
			versionArg: "version",
			settings:   "repository version 2, --compression auto (zstd; restic has no fastest level), AES-256-CTR + Poly1305, content-defined chunks; restore without holes (no --sparse before 0.15)",
			env:        []string{"RESTIC_PASSWORD=benchmark-password", "RESTIC_CACHE_DIR=" + filepath.Join(dir, "restic-cache")},
			initArgs:   func(repo string) []string { return []string{"init", "--repo", repo, "--repository-version", "2"} },
			backupArgs: func(repo, name string) []string {
				return []string{"backup", "--repo", repo, "--host", "bench", "--tag", name, imageName}
			},
			restoreArgs: func(repo, name string) []string {
				return []string{"restore", "--repo", repo, "latest", "--host", "bench", "--tag", name, "--target", "."}
			},
		},
		{
			name:       "borg",
			versionArg: "--version",
			settings:   "borg init -e repokey (AES-256-CTR + HMAC-SHA256), --compression zstd,1 (blockvault: zstd fastest), default buzhash chunker, extract --sparse",
			env:        []string{"BORG_PASSPHRASE=benchmark-password", "BORG_BASE_DIR=" + filepath.Join(dir, "borg-base")},
			initArgs:   func(repo string) []string { return []string{"init", "-e", "repokey", repo} },
			backupArgs: func(repo, name string) []string {
				return []string{"create", "--compression", "zstd,1", repo + "::" + name, imageName}
			},
			restoreArgs: func(repo, name string) []string { return []string{"extract", "--sparse", repo + "::" + name} },
		},
	}
	for _, r := range rs {
		if os.Getenv("BLOCKVAULT_BENCH_RIVALS") == "off" {
			continue // reported as not installed
		}
		if p, err := exec.LookPath(r.name); err == nil {
			r.bin = p
			out, _ := exec.Command(p, r.versionArg).CombinedOutput()
			r.version = strings.TrimSpace(string(out))
		}
	}
	return rs
}

// toolRun is one command's cost.
type toolRun struct {
	wall time.Duration
	cpu  time.Duration // user + system, children included
	peak int64         // peak RSS (VmHWM)
}

func (r *rival) run(dir string, args ...string) (toolRun, error) {
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), r.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return toolRun{}, fmt.Errorf("%s %s: %w", r.name, args[0], err)
	}
	// The child's rusage max RSS would count the test process's own (the
	// kernel carries the high-water mark across exec): poll its VmHWM.
	var run toolRun
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if u, err := procUsage(cmd.Process.Pid); err == nil {
				run.peak = max(run.peak, u.peak)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	run.wall = time.Since(start)
	close(done)
	<-polled
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		run.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err != nil {
		return run, fmt.Errorf("%s %s: %v\n%s", r.name, args[0], err, tail(out.String(), 20))
	}
	return run, nil
}

// rivalRun is the tools' work on one volume's image.
type rivalRun struct {
	b      testing.TB
	rep    *benchReport
	volume string
	size   int64
	image  string   // the image file, in a directory of its own
	want   [32]byte // SHA-256 of the volume at the full backup
}

// runRivals runs each installed tool in turn on the image (the volume as
// at its full backup): a full backup, the two changes blockvault's
// incrementals saw each followed by a backup, and a restore of the full
// backup, checked. The changes are undone before the next tool; the
// repositories and the image are removed.
func runRivals(b testing.TB, rep *benchReport, tools []*rival, v benchVolume, image string, size int64, want [32]byte) {
	defer os.Remove(image)
	x := &rivalRun{b: b, rep: rep, volume: v.name, size: size, image: image, want: want}
	for _, t := range tools {
		if t.bin != "" {
			x.runTool(t)
		}
	}
}

// runTool runs one tool's backups and restore in a fresh repository; the
// image is as it was when it returns.
func (x *rivalRun) runTool(t *rival) {
	repo := filepath.Join(x.b.TempDir(), t.name+"-repository")
	defer os.RemoveAll(repo)
	if _, err := t.run(filepath.Dir(repo), t.initArgs(repo)...); err != nil {
		x.fail(t, err)
		return
	}
	f, err := os.OpenFile(x.image, os.O_RDWR, 0)
	if err != nil {
		x.b.Fatal(err)
	}
	defer f.Close()
	var undo []func() error
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](); err != nil {
				x.b.Fatalf("undo a change of the image: %v", err)
			}
		}
	}()
	if !x.backup(t, repo, "full", "full") {
		return
	}
	for i, c := range benchChanges {
		u, err := c.applyUndoable(f, x.size)
		undo = append(undo, u)
		if err != nil {
			x.b.Fatalf("apply %q to the image: %v", c.name, err)
		}
		if !x.backup(t, repo, c.name, fmt.Sprintf("inc%d", i+1)) {
			return
		}
	}
	x.restore(t, repo)
}

// backup runs the tool's backup of the image as archive or tag name; it
// reports whether it worked.
func (x *rivalRun) backup(t *rival, repo, op, name string) bool {
	before := duBytes(repo)
	run, err := t.run(filepath.Dir(x.image), t.backupArgs(repo, name)...)
	if err != nil {
		x.fail(t, err)
		return false
	}
	x.add(rivalOp{tool: t.name, op: op, wall: run.wall, stored: duBytes(repo) - before, cpu: run.cpu, peak: run.peak})
	return true
}

// restore extracts the full backup into an empty directory and compares
// the file with the volume.
func (x *rivalRun) restore(t *rival, repo string) {
	target := filepath.Join(filepath.Dir(x.image), t.name+"-restore")
	if err := os.Mkdir(target, 0o755); err != nil {
		x.b.Fatal(err)
	}
	defer os.RemoveAll(target)
	run, err := t.run(target, t.restoreArgs(repo, "full")...)
	if err != nil {
		x.fail(t, err)
		return
	}
	// restic recreates the image's absolute path under the target.
	var file string
	filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == imageName && d.Type().IsRegular() {
			file = p
		}
		return nil
	})
	note := "restored file not found"
	if file != "" {
		sum, err := hashFile(file)
		var st syscall.Stat_t
		syscall.Stat(file, &st)
		same := err == nil && sum == x.want
		note = fmt.Sprintf("identical: %v, file allocated %s", same, benchMiB(st.Blocks*512))
		if !same {
			x.rep.notes = append(x.rep.notes, fmt.Sprintf("%s's restore of the %s image differs from the volume (%v): its figures compare nothing", t.name, x.volume, err))
		}
	}
	x.add(rivalOp{tool: t.name, op: "restore full", wall: run.wall, stored: -1, cpu: run.cpu, peak: run.peak, note: note})
}

func (x *rivalRun) add(o rivalOp) {
	o.volume, o.size = x.volume, x.size
	x.rep.rivals = append(x.rep.rivals, o)
	x.b.Logf("%s %s %s: %s, stored %s", o.tool, o.volume, o.op, benchSecs(o.wall), benchMiB(o.stored))
}

// fail records a tool's failure in the report; blockvault's figures stand
// without it.
func (x *rivalRun) fail(t *rival, err error) {
	x.b.Logf("%v", err)
	x.rep.notes = append(x.rep.notes, fmt.Sprintf("%s failed on the %s volume: %s", t.name, x.volume, strings.SplitN(err.Error(), "\n", 2)[0]))
}
