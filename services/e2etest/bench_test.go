package e2etest

// BenchmarkThroughDaemons and its helpers (bench*_test.go): backups and
// restores measured through the real daemons.

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
)

const (
	// benchSample is how much of each volume the pipeline limit runs on.
	benchSample = 512 << 20
	// benchWriterAlone is how long the writer runs alone, before the
	// backup it runs during.
	benchWriterAlone = 5 * time.Second
	// benchTimeout bounds each backup or restore.
	benchTimeout = 30 * time.Minute
)

// benchVariant is one way of deploying the daemons.
type benchVariant struct {
	name, about string
	options     func(b *testing.B, size int64) Options
}

var benchVariants = []benchVariant{
	{"nbd", "backup service on another node, reads over NBD; volume pool on the ordinary filesystem (copy-before-write snapshots)",
		func(*testing.B, int64) Options { return Options{} }},
	{"local", "both daemons on one node, local-path reads; volume pool on a loop-mounted XFS (reflink snapshots)",
		func(b *testing.B, size int64) Options {
			// Room for the volume, its restore and what the snapshots pin
			// (a sparse image: only what is used takes space).
			return Options{SameNode: true, VolumeManagerDir: testenv.XFSDir(b, 3*size+2<<30)}
		}},
	{"rbd", "volume pool on a single-node Ceph cluster (one bluestore OSD on a sparse file in the temp dir, no replication); RBD snapshots attached over NBD, incrementals read what rbd diff reports",
		func(b *testing.B, size int64) Options {
			// Room for the volume, its restore and the snapshots' copies.
			return Options{Ceph: testenv.StartCephSized(b, 3*size+4<<30)}
		}},
}

// benchVariantsWanted is benchVariants, or those BLOCKVAULT_BENCH_VARIANTS
// names.
func benchVariantsWanted(b testing.TB) []benchVariant {
	return pickByName(b, "BLOCKVAULT_BENCH_VARIANTS", benchVariants, func(v benchVariant) string { return v.name })
}

// BenchmarkThroughDaemons measures backups and restores the way users get
// them: through the real daemons, volumes written and read over NBD. Run
// it alone, once, sized by BLOCKVAULT_BENCH_SIZE (default 8GiB; it needs
// about four times that free in the temporary directory):
//
//	BLOCKVAULT_BENCH_SIZE=8GiB go test -run '^$' -bench BenchmarkThroughDaemons -benchtime 1x -timeout 60m ./services/e2etest
//
// BLOCKVAULT_BENCH_BACKUP_ARGS adds backup-service flags (to compare
// settings, e.g. "--chunk-size 1048576"); BLOCKVAULT_BENCH_RIVALS=off skips
// restic and borg; BLOCKVAULT_BENCH_VARIANTS=rbd runs only the named
// deployments (nbd, local, rbd); BLOCKVAULT_BENCH_VOLUMES=mixed runs only the named
// volumes (space-separated; for a quick look at one, or the 16 GiB memory
// check); BLOCKVAULT_BENCH_PERF=dir records each operation with perf
// (see benchMeter.perf).
//
// It prints a plain text report meant for docs/: each operation's
// throughput, bytes read and stored, the daemons' CPU and memory, a
// writer's slowdown during a backup, the machine's limits for the engine's
// pipeline and the repository's writes, and restic and borg on the same
// data.
func BenchmarkThroughDaemons(b *testing.B) {
	size := benchSize(b)
	bins := Binaries(b)
	tmp := b.TempDir()
	keyFile := filepath.Join(tmp, "repository.key")
	key := make([]byte, 32)
	cryptorand.Read(key)
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		b.Fatal(err)
	}
	// Encrypted, as restic and borg always are.
	args := []string{"--encryption-key-file", keyFile}
	help, _ := exec.Command(filepath.Join(bins, "backup-service"), "--help").CombinedOutput()
	cbt := strings.Contains(string(help), "changed-block-tracking")
	if cbt {
		args = append(args, "--changed-block-tracking")
	}
	// More backup-service flags to compare settings (e.g. --chunk-size).
	extra := strings.Fields(os.Getenv("BLOCKVAULT_BENCH_BACKUP_ARGS"))
	args = append(args, extra...)

	rep := &benchReport{size: size, started: time.Now(), machine: benchMachine(), limits: map[string]pipelineLimit{}, peakReset: true}
	rep.dirs = append(rep.dirs, fmt.Sprintf("temp dir %s: %s", tmp, fsOf(tmp)))
	rep.disk = diskOf(tmp)
	tracking := "off (the flag is not in this build: incrementals read the whole volume)"
	if cbt {
		tracking = "on (--changed-block-tracking: a backup keeps its snapshot, the next incremental reads only the changed ranges)"
	}
	niceness := "as started (no --nice flag in this build)"
	if strings.Contains(string(help), "-nice") {
		niceness = "its --nice default (10) unless the extra flags say otherwise; the volume manager and the writer at nice 0"
	}
	rep.settings = []string{
		"blockvault: 4 MiB chunks (unless the extra flags below say otherwise), keyed BLAKE3 ids, zstd fastest, AES-256-GCM (--encryption-key-file), posix repository",
		"extra backup-service flags (BLOCKVAULT_BENCH_BACKUP_ARGS): " + strings.Join(append([]string{"none"}, extra...)[min(len(extra), 1):], " "),
		"changed-block tracking: " + tracking,
		"backup-service CPU priority: " + niceness,
		"volumes (written through NBD):",
	}
	for _, v := range benchVolumesWanted(b) {
		rep.settings = append(rep.settings, fmt.Sprintf("  %-7s %s", v.name, v.about))
	}
	rep.settings = append(rep.settings, "variants:")
	for _, v := range benchVariantsWanted(b) {
		rep.settings = append(rep.settings, fmt.Sprintf("  %-7s %s", v.name, v.about))
	}
	rep.settings = append(rep.settings, "operations, in this order, the volume attached read-write (in-use) throughout, backups with force, one container per volume:",
		"  full                    a full backup",
		"  inc 1% in 1 MiB runs    an incremental backup (Incremental=true) after 1% of the volume was rewritten through NBD in 1 MiB runs at random 4 KiB-aligned offsets",
		"  inc 1% in 4 KiB writes  the same after 1% was rewritten in scattered 4 KiB writes",
		"  restore full            the full backup restored into a new volume (read back and compared once the source is deleted)",
		"  full + writer           mixed only: a second full backup while a writer writes to the volume (see Writer impact)")

	tools := rivals(tmp)
	for _, t := range tools {
		if t.bin == "" {
			rep.rivalInfo = append(rep.rivalInfo, t.name+": not installed")
			continue
		}
		rep.rivalInfo = append(rep.rivalInfo, fmt.Sprintf("%s (%s): %s", t.name, t.version, t.settings))
	}
	storage := filepath.Join(tmp, "storage")
	if err := os.Mkdir(storage, 0o755); err != nil {
		b.Fatal(err)
	}
	rep.storageWorkers = max(runtime.GOMAXPROCS(0), 2) // the engine's workers
	var err error
	if rep.storage, err = storageRate(storage, min(size, benchSample), rep.storageWorkers); err != nil {
		b.Fatalf("storage limit: %v", err)
	}
	for i, v := range benchVariantsWanted(b) {
		var withRivals []*rival
		if i == 0 {
			withRivals = tools // once: the tools do not depend on the variant
		}
		b.Run(v.name, func(b *testing.B) { runVariant(b, rep, v, size, args, withRivals) })
	}
	rep.print(os.Stdout)
}

// benchSize is BLOCKVAULT_BENCH_SIZE: bytes, or a number with KiB, MiB or
// GiB; a multiple of 4 MiB.
func benchSize(b testing.TB) int64 {
	v := strings.TrimSpace(os.Getenv("BLOCKVAULT_BENCH_SIZE"))
	if v == "" {
		return 8 << 30
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(v, suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, suffix)), m
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n*mult%benchPiece != 0 {
		b.Fatalf("BLOCKVAULT_BENCH_SIZE=%q: want a positive multiple of 4 MiB, in bytes or with KiB, MiB or GiB", os.Getenv("BLOCKVAULT_BENCH_SIZE"))
	}
	return n * mult
}

// runVariant starts a stack and runs every volume through it; the stack
// and its data go when the sub-benchmark ends.
func runVariant(b *testing.B, rep *benchReport, v benchVariant, size int64, backupArgs []string, tools []*rival) {
	opts := v.options(b, size)
	opts.NoGateway = true
	opts.RepositoryDir = filepath.Join(b.TempDir(), "repository")
	opts.BackupArgs = backupArgs
	s := Start(b, opts)
	pool := fmt.Sprintf("%s: volume pool %s: %s", v.name, s.PoolDir, fsOf(s.PoolDir))
	if s.Ceph != nil {
		pool = fmt.Sprintf("%s: volume pool: RBD pool %s, namespace %s, of the cluster in %s (its OSD's block file: %s)",
			v.name, s.Ceph.Pool, s.RBDNamespace, s.Ceph.Dir, fsOf(s.Ceph.Dir))
	}
	rep.dirs = append(rep.dirs, pool,
		fmt.Sprintf("%s: repository %s: %s", v.name, opts.RepositoryDir, fsOf(filepath.Dir(opts.RepositoryDir))))
	for _, vol := range benchVolumesWanted(b) {
		runVolume(b, rep, s, v.name, vol, size, tools)
	}
}

// benchVolumesWanted is benchVolumes, or those BLOCKVAULT_BENCH_VOLUMES
// names.
func benchVolumesWanted(b testing.TB) []benchVolume {
	return pickByName(b, "BLOCKVAULT_BENCH_VOLUMES", benchVolumes, func(v benchVolume) string { return v.name })
}

// pickByName is all, or the ones the environment variable names
// (space-separated, in its order); a name not among them fails b.
func pickByName[T any](b testing.TB, env string, all []T, name func(T) string) []T {
	names := strings.Fields(os.Getenv(env))
	if len(names) == 0 {
		return all
	}
	var known []string
	var picked []T
	for _, v := range all {
		known = append(known, name(v))
	}
	for _, n := range names {
		i := slices.Index(known, n)
		if i < 0 {
			b.Fatalf("%s=%q: no %q (there are %s)", env, os.Getenv(env), n, strings.Join(known, ", "))
		}
		picked = append(picked, all[i])
	}
	return picked
}

// runVolume builds one volume and runs the operations on it, then removes
// it; with tools, it then runs them on an image of the volume.
func runVolume(b *testing.B, rep *benchReport, s *Stack, variant string, vol benchVolume, size int64, tools []*rival) {
	created, att, dev := attached(b, s, size)
	id := created.GetId()
	src := buildVolume(b, rep, s, variant, vol, dev, id, tools != nil)

	m := &benchMeter{b: b, rep: rep, s: s, variant: variant, volume: vol.name, size: size, repo: filepath.Join(s.repositoryDir(), vol.name)}
	var backups []string
	var full *backupv1.Backup
	o := m.measure("full", func() string {
		full = benchBackup(b, s, id, vol.name, false)
		backups = append(backups, full.GetId())
		return full.GetStrategy()
	})
	b.ReportMetric(float64(size)/1e6/o.wall.Seconds(), vol.name+"-full-MB/s")
	for _, c := range benchChanges {
		if _, err := c.apply(dev, size); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		if err := dev.Flush(); err != nil {
			b.Fatal(err)
		}
		m.measure(c.name, func() string {
			inc := benchBackup(b, s, id, vol.name, true)
			backups = append(backups, inc.GetId())
			return inc.GetStrategy()
		})
	}
	var restored string
	m.measure("restore full", func() string {
		restored = benchRestore(b, s, full.GetId())
		return "into a new volume"
	})
	if vol.withWriter {
		rep.writers = append(rep.writers, writerTest(m, dev, id, &backups))
	}
	// The source and its backups go before the restored volume is read
	// back (and exported): the disk holds one volume's data fewer.
	removeVolume(b, s, id, att, dev, backups)
	var image string
	if tools != nil {
		image = filepath.Join(b.TempDir(), imageName)
	}
	rep.checks = append(rep.checks, checkRestore(b, s, variant, vol.name, restored, src, image))
	if tools != nil {
		runRivals(b, rep, tools, vol, image, size, src.sum)
	}
}

// sourceInfo is what the built volume held.
type sourceInfo struct {
	sum                 [32]byte
	allocNBD, allocFile int64 // allocated bytes: NBD block status, pool file
}

// buildVolume writes vol's content through dev and reads it back (its
// hash, and with limits the sample the pipeline limit is measured on).
func buildVolume(b *testing.B, rep *benchReport, s *Stack, variant string, vol benchVolume, dev *nbd.Client, id string, limits bool) sourceInfo {
	ctx := context.Background()
	size := dev.Size()
	start := time.Now()
	if err := writeVolume(ctx, dev, size, vol); err != nil {
		b.Fatalf("build the %s volume: %v", vol.name, err)
	}
	if err := dev.Flush(); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	var sampleLen int64
	if limits {
		sampleLen = benchSample
	}
	start = time.Now()
	read, err := readVolume(ctx, dev, size, nil, sampleLen)
	if err != nil {
		b.Fatalf("read the %s volume back: %v", vol.name, err)
	}
	readBack := time.Since(start)
	src := sourceInfo{sum: read.sum, allocFile: poolFileBytes(s, id)}
	if src.allocNBD, err = allocatedNBD(dev); err != nil {
		b.Fatal(err)
	}
	rep.builds = append(rep.builds, fmt.Sprintf("%s/%s: written through NBD at %s MB/s, read back at %s MB/s; allocated %s (pool file %s)",
		variant, vol.name, benchMBps(size, built), benchMBps(size, readBack), benchMiB(src.allocNBD), benchMiB(src.allocFile)))
	if limits {
		l, err := measurePipeline(read.sample)
		if err != nil {
			b.Fatal(err)
		}
		rep.limits[vol.name] = l
	}
	return src
}

// repositoryDir is the backup service's repository directory.
func (s *Stack) repositoryDir() string {
	for i, a := range s.Backup.Args {
		if a == "--repository" && i+1 < len(s.Backup.Args) {
			return s.Backup.Args[i+1]
		}
	}
	return filepath.Join(s.Dir, "bs", "repository")
}

// poolFileBytes is the disk space of a volume's file in the pool (its
// allocated blocks), -1 when it cannot be read.
func poolFileBytes(s *Stack, volumeID string) int64 {
	if s.Ceph != nil {
		return rbdUsedBytes(s, volumeID)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.PoolDir, "volumes", volumeID+".img"), &st); err != nil {
		return -1
	}
	return st.Blocks * 512
}

// ---- measuring -----------------------------------------------------------------

// benchMeter measures operations on one volume of one stack.
type benchMeter struct {
	b               testing.TB
	rep             *benchReport
	s               *Stack
	variant, volume string
	size            int64
	repo            string // the volume's container directory
}

// measure runs fn (which returns a note) and records its wall time, the
// backup service's byte counters, the container's growth and both
// daemons' CPU time and peak RSS over it.
func (m *benchMeter) measure(op string, fn func() string) benchOp {
	m.b.Helper()
	bs0, vm0 := m.usage()
	osd0, osdOK := m.osdUsage()
	if !relResetPeakRSS(m.s.Backup) || !relResetPeakRSS(m.s.VolumeManager) {
		m.rep.peakReset = false
	}
	read0, stored0 := m.counter("read"), m.counter("stored")
	du0 := duBytes(m.repo)
	disk0, diskOK := readDiskStat(m.rep.disk)
	stopPerf := m.perf(op)
	start := time.Now()
	note := fn()
	stopPerf()
	o := benchOp{variant: m.variant, volume: m.volume, op: op, size: m.size, wall: time.Since(start), note: note}
	bs1, vm1 := m.usage()
	o.read, o.stored = m.counter("read")-read0, m.counter("stored")-stored0
	o.repoGrowth = duBytes(m.repo) - du0
	if disk1, ok := readDiskStat(m.rep.disk); ok && diskOK {
		o.disk, o.diskOK = disk1.sub(disk0), true
	}
	o.bs = procUse{cpu: bs1.cpu - bs0.cpu, sys: bs1.sys - bs0.sys, peak: bs1.peak}
	o.vm = procUse{cpu: vm1.cpu - vm0.cpu, sys: vm1.sys - vm0.sys, peak: vm1.peak}
	if strings.HasPrefix(op, "inc") {
		o.note = fmt.Sprintf("%s, read %.0f%% of the volume", note, 100*float64(o.read)/float64(o.size))
	}
	if osd1, ok := m.osdUsage(); ok && osdOK {
		o.note = fmt.Sprintf("%s; ceph-osd CPU %.2f (%.2f)", o.note, (osd1.cpu - osd0.cpu).Seconds(), (osd1.sys - osd0.sys).Seconds())
	}
	m.rep.ops = append(m.rep.ops, o)
	m.b.Logf("%s %s %s: %s MB/s, %s, read %s, stored %s", o.variant, o.volume, o.op, benchMBps(o.size, o.wall), benchSecs(o.wall), benchMiB(o.read), benchMiB(o.stored))
	return o
}

// perf starts a system-wide `perf record -g` of op when
// BLOCKVAULT_BENCH_PERF names a directory (the data goes there, one file per
// variant, volume and operation) and returns what stops it.
func (m *benchMeter) perf(op string) func() {
	dir := os.Getenv("BLOCKVAULT_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	out := filepath.Join(dir, strings.NewReplacer(" ", "-", "%", "pct").Replace(m.variant+"-"+m.volume+"-"+op)+".perf.data")
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "499", "-o", out)
	if err := cmd.Start(); err != nil {
		m.b.Fatalf("BLOCKVAULT_BENCH_PERF: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // perf is recording
	return func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			m.b.Logf("perf record: %v", err)
		}
	}
}

// osdUsage is the Ceph OSD's CPU use (rbd variant; ok false elsewhere):
// the volume manager's I/O is done there, outside its own process.
func (m *benchMeter) osdUsage() (procUse, bool) {
	if m.s.Ceph == nil {
		return procUse{}, false
	}
	b, err := os.ReadFile(filepath.Join(m.s.Ceph.Dir, "run", "osd.0.pid"))
	if err != nil {
		return procUse{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return procUse{}, false
	}
	u, err := procUsage(pid)
	return u, err == nil
}

func (m *benchMeter) usage() (bs, vm procUse) {
	m.b.Helper()
	var err1, err2 error
	bs, err1 = procUsage(m.s.Backup.pid())
	vm, err2 = procUsage(m.s.VolumeManager.pid())
	if err := errors.Join(err1, err2); err != nil {
		m.b.Fatalf("daemon usage: %v", err)
	}
	return bs, vm
}

// counter is blockvault_bytes_total{direction=...} of the backup service
// (absent until the first backup: 0).
func (m *benchMeter) counter(direction string) int64 {
	return int64(max(m.s.Metric(m.s.BackupMetrics, `blockvault_bytes_total{direction="`+direction+`"}`), 0))
}

// ---- backups and restores ------------------------------------------------------

// benchBackup backs the attached volume up into container and waits for
// the backup to be available.
func benchBackup(b testing.TB, s *Stack, volumeID, container string, incremental bool) *backupv1.Backup {
	b.Helper()
	cr, err := s.Backups.CreateBackup(context.Background(), &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{
		VolumeId: volumeID, Container: container, Incremental: incremental, Force: true}})
	if err != nil {
		b.Fatalf("create backup: %v", err)
	}
	got := benchWait(b, s, cr.GetBackup().GetId())
	if got.GetStatus() != "available" {
		b.Fatalf("backup %s ended %s: %s", got.GetId(), got.GetStatus(), got.GetFailReason())
	}
	if got.GetIsIncremental() != incremental {
		b.Fatalf("backup %s: incremental %v, asked %v", got.GetId(), got.GetIsIncremental(), incremental)
	}
	return got
}

// benchRestore restores a backup into a new volume and returns its id once
// the restore is done.
func benchRestore(b testing.TB, s *Stack, backupID string) string {
	b.Helper()
	ctx := context.Background()
	rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: backupID, Restore: &backupv1.RestoreInput{Name: "restored"}})
	if err != nil {
		b.Fatalf("restore: %v", err)
	}
	if got := benchWait(b, s, backupID); got.GetStatus() != "available" {
		b.Fatalf("after the restore the backup is %s: %s", got.GetStatus(), got.GetFailReason())
	}
	id := rr.GetRestore().GetVolumeId()
	v, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: id})
	if err != nil || v.GetVolume().GetStatus() != "available" {
		b.Fatalf("the restored volume: %v %s", err, v.GetVolume().GetStatus())
	}
	return id
}

// benchWait polls a backup until it leaves the transient statuses, often
// enough (20 ms) not to blur short operations.
func benchWait(b testing.TB, s *Stack, id string) *backupv1.Backup {
	b.Helper()
	deadline := time.Now().Add(benchTimeout)
	for {
		r, err := s.Backups.GetBackup(context.Background(), &backupv1.GetBackupRequest{ProjectId: project, BackupId: id})
		if err != nil {
			b.Fatalf("get backup: %v", err)
		}
		switch r.GetBackup().GetStatus() {
		case "creating", "restoring", "deleting":
		default:
			return r.GetBackup()
		}
		if time.Now().After(deadline) {
			b.Fatalf("backup %s still %s after %v", id, r.GetBackup().GetStatus(), benchTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkRestore reads the restored volume back through NBD (into image
// too, when not ""), compares it with the source's hash and allocation,
// and deletes it.
func checkRestore(b testing.TB, s *Stack, variant, volume, id string, src sourceInfo, image string) restoreCheck {
	b.Helper()
	ctx := context.Background()
	ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: id, Mode: "ro", Connector: &volumev1.Connector{Host: "checker"}}})
	if err != nil {
		b.Fatal(err)
	}
	dev := dialExport(b, ar.GetAttachment().GetConnectionInfo())
	var f *os.File
	if image != "" {
		if f, err = os.Create(image); err != nil {
			b.Fatal(err)
		}
	}
	got, err := readVolume(ctx, dev, dev.Size(), f, 0)
	if err != nil {
		b.Fatalf("read the restored volume: %v", err)
	}
	if f != nil {
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	c := restoreCheck{variant: variant, volume: volume, identical: got.sum == src.sum, srcNBD: src.allocNBD, srcFile: src.allocFile, restFile: poolFileBytes(s, id)}
	if c.restNBD, err = allocatedNBD(dev); err != nil {
		b.Fatal(err)
	}
	dev.Close()
	if !c.identical {
		b.Errorf("%s/%s: the restored volume differs from the source", variant, volume)
	}
	if c.restNBD > c.srcNBD {
		b.Errorf("%s/%s: the restored volume has %s allocated, the source %s: holes were filled", variant, volume, benchMiB(c.restNBD), benchMiB(c.srcNBD))
	}
	if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: ar.GetAttachment().GetId()}); err != nil {
		b.Errorf("detach the restored volume: %v", err)
	}
	if _, err := s.Volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: id}); err != nil {
		b.Errorf("delete the restored volume: %v", err)
	}
	return c
}

// removeVolume deletes the volume's backups (newest first) and the volume,
// so the next volume has the disk space.
func removeVolume(b testing.TB, s *Stack, id string, att *volumev1.Attachment, dev *nbd.Client, backups []string) {
	b.Helper()
	ctx := context.Background()
	for i := len(backups) - 1; i >= 0; i-- {
		if _, err := s.Backups.DeleteBackup(ctx, &backupv1.DeleteBackupRequest{ProjectId: project, BackupId: backups[i]}); err != nil {
			b.Errorf("delete backup %s: %v", backups[i], err)
			continue
		}
		waitGone(b, s, backups[i], benchTimeout)
	}
	dev.Close()
	if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: att.GetId()}); err != nil {
		b.Errorf("detach: %v", err)
	}
	if _, err := s.Volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: id}); err != nil {
		b.Errorf("delete volume: %v", err)
	}
}

// ---- the writer ------------------------------------------------------------------

// writerTest runs a writer alone, then during a full backup (recorded as
// an operation, its backup added to backups).
func writerTest(m *benchMeter, dev *nbd.Client, volumeID string, backups *[]string) writerImpact {
	m.b.Helper()
	x := writerImpact{variant: m.variant, region: min(m.size/2, 1<<30)}
	// The steps before left dirty pages and freed files behind: write them
	// out first, so that the writer alone is not slowed by their writeback
	// (in one run it was, and kept "131%" during the backup).
	syscall.Sync()
	stop := make(chan struct{})
	time.AfterFunc(benchWriterAlone, func() { close(stop) })
	var err error
	if x.alone, err = runWriter(dev, x.region, stop); err != nil {
		m.b.Fatalf("writer alone: %v", err)
	}
	stop = make(chan struct{})
	stopWriter := sync.OnceFunc(func() { close(stop) })
	defer stopWriter() // also when the backup fails
	type result struct {
		run writerRun
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := runWriter(dev, x.region, stop)
		done <- result{r, err}
	}()
	m.measure("full + writer", func() string {
		bk := benchBackup(m.b, m.s, volumeID, m.volume, false)
		*backups = append(*backups, bk.GetId())
		return bk.GetStrategy() + ", a writer running"
	})
	stopWriter()
	r := <-done
	if r.err != nil {
		m.b.Fatalf("writer during the backup: %v", r.err)
	}
	x.with = r.run
	return x
}

// runWriter writes 1 MiB pieces in order over [0, region) of dev, round
// after round, until stop is closed, timing each write.
func runWriter(dev *nbd.Client, region int64, stop <-chan struct{}) (writerRun, error) {
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{'w'}).Read(buf)
	var r writerRun
	start := time.Now()
	for round := uint64(1); ; round++ {
		for off := int64(0); off < region; off += int64(len(buf)) {
			select {
			case <-stop:
				r.elapsed = time.Since(start)
				return r, nil
			default:
			}
			// Every 4 KiB differs from every other, in this round and
			// the others: nothing of it deduplicates.
			for i := 0; i < len(buf); i += 4096 {
				binary.LittleEndian.PutUint64(buf[i:], uint64(off)+uint64(i))
				binary.LittleEndian.PutUint64(buf[i+8:], round)
			}
			t := time.Now()
			if _, err := dev.WriteAt(buf, off); err != nil {
				return r, err
			}
			r.lat = append(r.lat, time.Since(t))
			r.bytes += int64(len(buf))
		}
	}
}
