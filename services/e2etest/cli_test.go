package e2etest

import (
	"bufio"
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fillText writes text-like data (compressible, each 4 MiB chunk distinct)
// over the whole device, so a backup of it takes a few seconds of zstd.
func fillText(t *testing.T, dev *nbd.Client) {
	t.Helper()
	var tmpl strings.Builder
	for i := 0; tmpl.Len() < 4<<20; i++ {
		fmt.Fprintf(&tmpl, "%08d the quick brown fox jumps over the lazy dog; block storage with non-disruptive backup %x\n", i, i*7919)
	}
	buf := []byte(tmpl.String())[:4<<20]
	for off := int64(0); off < dev.Size(); off += int64(len(buf)) {
		copy(buf, fmt.Sprintf("chunk at offset %016d\n", off))
		if _, err := dev.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
}

var percentRe = regexp.MustCompile(`\[([#.]{30})\]\s+(\d+)%\s+(\S+ \S+) / (\S+ \S+)\s+(\S+ \S+)/s\s+ETA (\S+)`)

// TestCLIProgressBarAndMetrics: `blockvault backup create --force --wait`
// on a 2 GiB in-use volume draws a bar that moves in a terminal (a tmux
// pane, captured while it runs), prints JSON lines when piped with
// --output json and plain lines when piped without; and the daemons'
// /metrics series move while the backup runs.
func TestCLIProgressBarAndMetrics(t *testing.T) {
	testenv.LookPath(t, "tmux")
	s := Start(t, Options{NoGateway: true})
	vol, _, dev := attached(t, s, 2<<30)
	fillText(t, dev)
	bin := filepath.Join(Binaries(t), "blockvault")
	addrs := fmt.Sprintf("--volume-manager %s --backup-service %s --project %s", s.VolumeManager.Addr, s.Backup.Addr, project)

	okBefore := s.Metric(s.BackupMetrics, `blockvault_jobs_total{operation="backup",result="ok"}`)
	readBefore := s.Metric(s.BackupMetrics, `blockvault_bytes_total{direction="read"}`)

	// In a terminal: a tmux pane 160 columns wide, captured every 100 ms.
	session := fmt.Sprintf("bv%d", os.Getpid())
	status := filepath.Join(t.TempDir(), "exit")
	cmdline := fmt.Sprintf("%s %s backup create %s --force --wait; echo $? > %s; sleep 600", bin, addrs, vol.GetId(), status)
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "20", cmdline).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", session).Run() })

	var frames []string // distinct bar lines, in the order seen
	collect := func(pane []byte) {
		for _, line := range strings.Split(string(pane), "\n") {
			if percentRe.MatchString(line) && (len(frames) == 0 || frames[len(frames)-1] != strings.TrimSpace(line)) {
				frames = append(frames, strings.TrimSpace(line))
			}
		}
	}
	var readSeen []float64
	running, tempSnapshots, exports := false, false, false
	deadline := time.Now().Add(15 * time.Minute) // a hang guard: the wait is for the CLI to end; race-built daemons back 2 GiB up at 3 MiB/s
	for {
		out, err := exec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
		if err != nil {
			t.Fatalf("capture-pane: %v", err)
		}
		collect(out)
		// The metrics while it runs.
		if s.Metric(s.BackupMetrics, "blockvault_jobs_running") == 1 {
			running = true
		}
		if s.Metric(s.BackupMetrics, `blockvault_temporary_resources{kind="snapshot"}`) == 1 {
			tempSnapshots = true
		}
		if s.Metric(s.MetricsAddr, "blockvault_exports") == 2 { // the user's and the temporary snapshot's
			exports = true
		}
		if r := s.Metric(s.BackupMetrics, `blockvault_bytes_total{direction="read"}`); len(readSeen) == 0 || r != readSeen[len(readSeen)-1] {
			readSeen = append(readSeen, r)
		}
		if _, err := os.Stat(status); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CLI did not finish; pane:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, _ := os.ReadFile(status)
	pane, _ := exec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
	// The screen the CLI left: its last frame may have been drawn after
	// the last capture above, just before it exited.
	collect(pane)
	if strings.TrimSpace(string(code)) != "0" {
		t.Fatalf("backup create --force --wait exited %s; pane:\n%s", code, pane)
	}
	t.Logf("%d distinct bar frames; first %q, last %q", len(frames), frames[0], frames[len(frames)-1])

	// The bar moved: at least three different percentages, never going
	// back, with bytes, rate and an ETA while it ran, ending at 100%.
	var percents []int
	sawETA := false
	for _, f := range frames {
		m := percentRe.FindStringSubmatch(f)
		p, _ := strconv.Atoi(m[2])
		if len(percents) > 0 && p < percents[len(percents)-1] {
			t.Fatalf("the bar went back: %v then %d", percents, p)
		}
		if len(percents) == 0 || p != percents[len(percents)-1] {
			percents = append(percents, p)
		}
		if m[4] != "2.0 GiB" {
			t.Fatalf("bar total %q, want 2.0 GiB: %q", m[4], f)
		}
		if p > 0 && p < 100 && m[6] != "-" && strings.HasSuffix(m[6], "s") {
			sawETA = true
		}
	}
	if len(percents) < 3 || percents[len(percents)-1] != 100 {
		t.Fatalf("the bar did not move through at least 3 values to 100%%: %v\nframes:\n%s", percents, strings.Join(frames, "\n"))
	}
	if !sawETA {
		t.Fatalf("no frame showed an ETA while running:\n%s", strings.Join(frames, "\n"))
	}
	// Redrawn in place: one bar line on the screen, not one per update.
	if n := strings.Count(string(pane), "] "); n != 1 {
		t.Fatalf("the pane holds %d bar lines, want 1 redrawn in place:\n%s", n, pane)
	}
	if !strings.Contains(string(pane), "status:       available") {
		t.Fatalf("the pane does not end with the backup available:\n%s", pane)
	}

	// The metrics moved.
	if !running || !tempSnapshots || !exports {
		t.Fatalf("during the backup: jobs_running=1 seen %v, temporary snapshot seen %v, 2 exports seen %v", running, tempSnapshots, exports)
	}
	if len(readSeen) < 3 {
		t.Fatalf("blockvault_bytes_total{direction=\"read\"} took %d values during the backup, want it to climb: %v", len(readSeen), readSeen)
	}
	if got := s.Metric(s.BackupMetrics, `blockvault_bytes_total{direction="read"}`) - readBefore; got < 2<<30 {
		t.Fatalf("bytes read grew by %.0f, want the 2 GiB volume", got)
	}
	if got := s.Metric(s.BackupMetrics, `blockvault_jobs_total{operation="backup",result="ok"}`); got != max(okBefore, 0)+1 {
		t.Fatalf("jobs_total ok = %v, want %v", got, max(okBefore, 0)+1)
	}
	if s.Metric(s.BackupMetrics, `blockvault_job_duration_seconds_count{operation="backup"}`) < 1 {
		t.Fatal("no backup duration observed")
	}
	if s.Metric(s.BackupMetrics, `blockvault_temporary_resources{kind="snapshot"}`) != 0 || s.Metric(s.MetricsAddr, "blockvault_exports") != 1 {
		t.Fatal("temporary snapshot or its export still counted after the backup")
	}

	// Piped with --output json: one JSON object per line, progress climbing,
	// the last one available. A smaller volume does here.
	small, _, sdev := attached(t, s, 512<<20)
	fillText(t, sdev)
	lines := runPiped(t, bin, addrs+" --output json backup create "+small.GetId()+" --force --wait")
	var done []int64
	for i, l := range lines {
		var b struct {
			ID       string `json:"id"`
			Status   string `json:"status"`
			Progress struct {
				BytesDone string `json:"bytes_done"`
			} `json:"progress"`
		}
		if err := json.Unmarshal([]byte(l), &b); err != nil {
			t.Fatalf("line %d is not JSON: %q", i+1, l)
		}
		n, _ := strconv.ParseInt(b.Progress.BytesDone, 10, 64)
		done = append(done, n)
		if i == len(lines)-1 && b.Status != "available" {
			t.Fatalf("last JSON line has status %q, want available", b.Status)
		}
	}
	if len(lines) < 3 || done[len(done)-1] != 512<<20 {
		t.Fatalf("piped JSON: %d lines, bytes_done %v; want several, ending at 512 MiB", len(lines), done)
	}

	// Piped without --output: plain lines, no terminal escapes.
	plain := runPiped(t, bin, addrs+" backup create "+small.GetId()+" --force --wait")
	bars := 0
	for _, l := range plain {
		if strings.ContainsAny(l, "\r\033") {
			t.Fatalf("terminal control characters in piped output: %q", l)
		}
		if percentRe.MatchString(l) {
			bars++
		}
	}
	if bars < 2 {
		t.Fatalf("piped plain output has %d progress lines, want at least 2:\n%s", bars, strings.Join(plain, "\n"))
	}
}

// runPiped runs the CLI with stdout on a pipe and returns its lines; it
// fails the test when the command fails.
func runPiped(t *testing.T, bin, args string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, strings.Fields(args)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("blockvault %s: %v\n%s", args, err, stderr.String())
	}
	return lines
}

// runCLI runs the CLI with args and returns its stdout, its stderr and its
// exit code.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(Binaries(t), "blockvault"), args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("blockvault %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// TestCLISaysWhatItDid: `backup restore --wait` ends with the volume the
// data went to (id, name, status; in the last JSON line with -o json), and
// that volume holds the data; a restore that fails exits 4 and says so;
// `volume extend` and `volume delete` say what they did.
func TestCLISaysWhatItDid(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repository")
	s := Start(t, Options{NoGateway: true, RepositoryDir: repo})
	ctx := context.Background()
	flags := []string{"--volume-manager", s.VolumeManager.Addr, "--backup-service", s.Backup.Addr, "--project", project}
	cli := func(args ...string) (string, string, int) { t.Helper(); return runCLI(t, append(flags, args...)...) }

	vol, att, dev := attached(t, s, 64<<20)
	want := make([]byte, 8<<20)
	cryptorand.Read(want)
	if _, err := dev.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: att.GetId()}); err != nil {
		t.Fatal(err)
	}
	cr, err := s.Backups.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: vol.GetId()}})
	if err != nil {
		t.Fatal(err)
	}
	bk := cr.GetBackup().GetId()
	if b := waitBackup(t, s, bk, time.Minute); b.GetStatus() != "available" {
		t.Fatalf("backup: %s %q", b.GetStatus(), b.GetFailReason())
	}

	// Into a new volume, table output: the last lines name the volume.
	out, errOut, code := cli("backup", "restore", bk, "--wait", "--name", "restored-by-cli")
	if code != 0 {
		t.Fatalf("backup restore --wait exited %d: %s\n%s", code, errOut, out)
	}
	m := regexp.MustCompile(`(?m)^backup ` + bk + ` restored into volume (\S+) \(restored-by-cli\)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("backup restore --wait does not say which volume the data went to:\n%s", out)
	}
	for _, f := range []string{`volume_id:\s+` + m[1], `volume_name:\s+restored-by-cli`, `volume_status:\s+available`} {
		if !regexp.MustCompile(`(?m)^` + f + `$`).MatchString(out) {
			t.Fatalf("backup restore --wait output lacks a line %q:\n%s", f, out)
		}
	}
	t.Logf("restore --wait printed:\n%s", out)
	if v := volumeStatus(t, s, m[1]); v.GetName() != "restored-by-cli" || v.GetStatus() != "available" {
		t.Fatalf("the volume the CLI named is %q %s", v.GetName(), v.GetStatus())
	}
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: m[1], Mode: "ro", Connector: &volumev1.Connector{Host: "checker"}}})
	if err != nil {
		t.Fatal(err)
	}
	rdev := dialExportWith(t, ar.GetAttachment().GetConnectionInfo(), s.TLS)
	got := make([]byte, len(want))
	if _, err := rdev.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	rdev.Close()
	if !bytes.Equal(got, want) {
		t.Fatal("the volume the CLI named does not hold the backup's data")
	}
	if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: ar.GetAttachment().GetId()}); err != nil {
		t.Fatal(err)
	}

	// Into an existing volume, -o json: progress lines, then one object
	// with the restore and the volume.
	target, err := s.Volumes.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: project, Volume: &volumev1.VolumeInput{SizeBytes: 64 << 20, Name: "target"}})
	if err != nil {
		t.Fatal(err)
	}
	tid := target.GetVolume().GetId()
	out, errOut, code = cli("-o", "json", "backup", "restore", bk, "--wait", "--volume", tid)
	if code != 0 {
		t.Fatalf("-o json backup restore --wait --volume exited %d: %s\n%s", code, errOut, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last struct {
		Restore struct {
			BackupID string `json:"backup_id"`
			VolumeID string `json:"volume_id"`
		} `json:"restore"`
		Volume struct {
			ID, Name, Status string
		} `json:"volume"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out)
	}
	if last.Restore.BackupID != bk || last.Restore.VolumeID != tid || last.Volume.ID != tid || last.Volume.Name != "target" || last.Volume.Status != "available" {
		t.Fatalf("last JSON line %+v, want the restore of %s into %s (target, available):\n%s", last, bk, tid, out)
	}
	if len(lines) < 2 {
		t.Fatalf("no progress lines before the result:\n%s", out)
	}

	// A restore that fails (every chunk of the repository damaged): exit
	// code 4, and the volume is named with its status.
	chunks, _ := filepath.Glob(filepath.Join(repo, "backups", "chunks", "*", "*"))
	if len(chunks) == 0 {
		t.Fatalf("no chunk files under %s", repo)
	}
	for _, c := range chunks {
		if err := os.WriteFile(c, []byte("damaged"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code = cli("backup", "restore", bk, "--wait", "--name", "doomed")
	if code != 4 || !regexp.MustCompile(`(?m)^volume_status:\s+error_restoring$`).MatchString(out) ||
		!strings.Contains(out, "(doomed) failed") || !strings.Contains(errOut, "corrupt") {
		t.Fatalf("a failing restore --wait exited %d (want 4); stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("failing restore --wait: stderr %q", errOut)

	// extend and delete say what they did.
	out, errOut, code = cli("volume", "extend", tid, "--size", "1")
	if code != 0 || !strings.HasPrefix(out, "volume "+tid+" extended to 1.0 GiB\n") {
		t.Fatalf("volume extend exited %d, printed:\n%s%s", code, out, errOut)
	}
	if v := volumeStatus(t, s, tid); v.GetSizeBytes() != 1<<30 {
		t.Fatalf("after extend the volume has %d bytes", v.GetSizeBytes())
	}
	out, errOut, code = cli("volume", "delete", tid)
	if code != 0 || out != "volume "+tid+" deleted\n" {
		t.Fatalf("volume delete exited %d, printed:\n%s%s", code, out, errOut)
	}
	if _, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: tid}); status.Code(err) != codes.NotFound {
		t.Fatalf("the deleted volume: %v", err)
	}
	out, errOut, code = cli("-o", "json", "volume", "delete", m[1])
	if code != 0 || strings.TrimSpace(out) != `{"id":"`+m[1]+`","status":"deleted"}` {
		t.Fatalf("-o json volume delete exited %d, printed:\n%s%s", code, out, errOut)
	}
}
