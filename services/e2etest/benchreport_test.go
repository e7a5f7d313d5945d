package e2etest

// The report of BenchmarkThroughDaemons and what goes into it: process
// CPU and memory from /proc, the machine, bytes on disk, and the plain
// text tables printed at the end (meant to be committed to docs/).

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ---- processes ---------------------------------------------------------------

// procUse is a process's CPU time (user + system, and system alone) and
// peak resident set.
type procUse struct {
	cpu, sys time.Duration
	peak     int64 // VmHWM, bytes
}

// userHZ is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const userHZ = 100

func (d *Daemon) pid() int { return d.cmd.Process.Pid }

// procUsage reads utime+stime from /proc/<pid>/stat and VmHWM from
// /proc/<pid>/status.
func procUsage(pid int) (procUse, error) {
	var u procUse
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'; utime and stime are fields 14 and 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u.cpu = time.Duration(utime+stime) * time.Second / userHZ
	u.sys = time.Duration(stime) * time.Second / userHZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			u.peak = kb << 10
		}
	}
	return u, nil
}

// ---- disks and the machine ---------------------------------------------------

// duBytes is the apparent size of the regular files under dir (du -sb),
// 0 when dir does not exist.
func duBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// fsOf names the filesystem dir is on ("ext4 on /dev/vda").
func fsOf(dir string) string {
	out, err := exec.Command("findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", dir).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return strings.TrimSpace(string(out))
	}
	return f[0] + " on " + f[1]
}

// machine describes the computer the benchmark runs on.
func benchMachine() []string {
	model := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "unknown"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				mem = benchGiB(kb << 10)
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return []string{
		fmt.Sprintf("cpus:    %d (GOMAXPROCS %d), %s; %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), model, cpuFlags()),
		"memory:  " + mem,
		"kernel:  Linux " + strings.TrimSpace(string(kernel)),
		"go:      " + runtime.Version(),
		"load:    " + loadAverage() + " (1, 5, 15 min) at the start",
	}
}

// cpuFlags names the instruction set extensions the codecs use that this
// CPU has.
func cpuFlags() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	var have []string
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		flags := map[string]bool{}
		for _, f := range strings.Fields(v) {
			flags[f] = true
		}
		for _, f := range []string{"aes", "pclmulqdq", "sha_ni", "avx2", "avx512f"} {
			if flags[f] {
				have = append(have, f)
			}
		}
		break
	}
	return "flags " + strings.Join(have, " ")
}

// ---- numbers -----------------------------------------------------------------

func benchMiB(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func benchGiB(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// mbps is n bytes in d as decimal MB/s.
func benchMBps(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)/1e6/d.Seconds())
}

func benchSecs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// benchCPU is CPU seconds with the system part in parentheses.
func benchCPU(u procUse) string { return fmt.Sprintf("%.2f (%.2f)", u.cpu.Seconds(), u.sys.Seconds()) }

// benchHumanSize is n bytes in MiB or GiB, whichever reads better.
func benchHumanSize(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return benchGiB(n)
}

// ratio is a/b with two decimals, "-" when either is unknown.
func benchRatio(a, b float64) string {
	if a < 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// ---- the report ----------------------------------------------------------------

// benchOp is one measured operation of blockvault.
type benchOp struct {
	variant, volume, op string
	size                int64 // volume bytes
	wall                time.Duration
	// From the backup service's blockvault_bytes_total, differences.
	read, stored int64
	// repoGrowth is the growth of the container's directory (du).
	repoGrowth int64
	bs, vm     procUse // CPU used during the operation, peak RSS
	// disk is what the temp dir's block device did meanwhile (diskOK:
	// there is one).
	disk   diskStat
	diskOK bool
	note   string
}

// restoreCheck is what the restored volume was compared with.
type restoreCheck struct {
	variant, volume      string
	identical            bool
	srcNBD, srcFile      int64 // allocated bytes of the source (NBD block status, pool file)
	restNBD, restFile    int64 // and of the restored volume
	srcVolume, restoreOf string
}

// writerRun is a writer's figures over one period.
type writerRun struct {
	bytes   int64
	elapsed time.Duration
	lat     relLatencies
}

// writerImpact is the writer alone and during a full backup.
type writerImpact struct {
	variant     string
	region      int64
	alone, with writerRun
}

// rivalOp is one operation of another backup tool.
type rivalOp struct {
	tool, volume, op string
	size             int64
	wall             time.Duration
	stored           int64 // repository growth (du)
	cpu              time.Duration
	peak             int64 // max RSS
	note             string
}

type benchReport struct {
	size      int64
	started   time.Time
	machine   []string
	settings  []string
	dirs      []string // the directories used and their filesystems
	peakReset bool
	builds    []string
	ops       []benchOp
	checks    []restoreCheck
	writers   []writerImpact
	limits    map[string]pipelineLimit // by volume
	// storage is the repository filesystem's write rate (storageRate).
	storage        float64
	storageWorkers int
	// disk is the stat file of the temp dir's block device (diskOf).
	disk      string
	rivals    []rivalOp
	rivalInfo []string
	notes     []string
}

func (r *benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "\n==== BlockVault through the daemons: %s volumes, %s ====\n\n", benchHumanSize(r.size), r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintln(w, "Machine")
	for _, l := range append(r.machine, "load:    "+loadAverage()+" (1, 5, 15 min) at the end") {
		fmt.Fprintln(w, "  "+l)
	}
	for _, d := range r.dirs {
		fmt.Fprintln(w, "  "+d)
	}
	fmt.Fprintln(w, "\nSettings")
	for _, l := range r.settings {
		fmt.Fprintln(w, "  "+l)
	}
	fmt.Fprintln(w, "\nVolumes built")
	for _, l := range r.builds {
		fmt.Fprintln(w, "  "+l)
	}
	r.printOps(w)
	r.printChecks(w)
	r.printWriters(w)
	r.printLimits(w)
	r.printRivals(w)
	if len(r.notes) > 0 {
		fmt.Fprintln(w, "\nNotes")
		for _, n := range r.notes {
			fmt.Fprintln(w, "  - "+n)
		}
	}
	fmt.Fprintf(w, "\nThe run took %v.\n\n", time.Since(r.started).Round(time.Second))
}

func (r *benchReport) printOps(w io.Writer) {
	rss := "peak RSS during the step (VmHWM, reset before it)"
	if !r.peakReset {
		rss = "peak RSS since the daemon started (VmHWM; it could not be reset)"
	}
	fmt.Fprintln(w, "\nOperations")
	fmt.Fprintln(w, "  MB/s = volume bytes / wall time (holes included); read, stored = the backup service's blockvault_bytes_total{direction}")
	fmt.Fprintln(w, "  (stored counts every chunk put, also one the repository already held); repo+ = growth of the container's directory;")
	fmt.Fprintln(w, "  CPU = seconds of user+system time during the step (system alone in parentheses); RSS = "+rss)
	fmt.Fprintln(w, "  disk = the temp dir's block device during the step: busy = share of the wall time with I/O in flight (io_ticks),")
	fmt.Fprintln(w, "  r/w = MiB read / written (what the page cache did not absorb; the loop-mounted XFS image of local writes through it)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tvolume\toperation\tMB/s\twall\tread\tstored\trepo+\tbackup CPU\tbackup RSS\tvm CPU\tvm RSS\tdisk busy\tdisk r/w\t note")
	for _, o := range r.ops {
		read, stored := benchMiB(o.read), benchMiB(o.stored)
		if strings.HasPrefix(o.op, "restore") {
			read, stored = "-", "-"
		}
		busy, rw := "-", "-"
		if o.diskOK && o.wall > 0 {
			busy = fmt.Sprintf("%.0f%%", 100*o.disk.busy.Seconds()/o.wall.Seconds())
			rw = fmt.Sprintf("%.0f/%.0f", float64(o.disk.read)/(1<<20), float64(o.disk.written)/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t %s\n", o.variant, o.volume, o.op, benchMBps(o.size, o.wall), benchSecs(o.wall),
			read, stored, benchMiB(o.repoGrowth), benchCPU(o.bs), benchMiB(o.bs.peak), benchCPU(o.vm), benchMiB(o.vm.peak), busy, rw, o.note)
	}
	tw.Flush()
}

func (r *benchReport) printChecks(w io.Writer) {
	fmt.Fprintln(w, "\nRestores of the full backup, read back through NBD (allocated = not holes: by NBD block status / by the pool file's blocks)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tvolume\tidentical to the source\tsource allocated\trestored allocated\t")
	for _, c := range r.checks {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s / %s\t%s / %s\t\n", c.variant, c.volume, c.identical, benchMiB(c.srcNBD), benchMiB(c.srcFile), benchMiB(c.restNBD), benchMiB(c.restFile))
	}
	tw.Flush()
}

func (r *benchReport) printWriters(w io.Writer) {
	fmt.Fprintf(w, "\nWriter impact (sequential 1 MiB writes through NBD over the start of the mixed volume: alone for %v, then during a full backup)\n", benchWriterAlone)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tregion\talone MB/s\tduring MB/s\tratio\talone p99 / max latency\tduring p99 / max latency\t")
	for _, x := range r.writers {
		a := float64(x.alone.bytes) / x.alone.elapsed.Seconds()
		d := float64(x.with.bytes) / x.with.elapsed.Seconds()
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%s\t%v / %v\t%v / %v\t\n", x.variant, benchMiB(x.region), a/1e6, d/1e6, benchRatio(d, a),
			benchQuantile(x.alone.lat, 0.99), benchQuantile(x.alone.lat, 1), benchQuantile(x.with.lat, 0.99), benchQuantile(x.with.lat, 1))
	}
	tw.Flush()
}

func (r *benchReport) printLimits(w io.Writer) {
	fmt.Fprintln(w, "\nMachine limits")
	fmt.Fprintln(w, "  pipeline: the engine's per-chunk work (zero check, keyed BLAKE3, zstd fastest, AES-256-GCM) in memory on the start of each volume, no I/O;")
	fmt.Fprintf(w, "  after a sync, one worker then all in turn, %d times; the best run of each counts (every run under the table)\n", pipelineRounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "volume\tsample\t1 core MB/s\tall cores MB/s\tfull backup MB/s (% of all cores)\t")
	for _, v := range benchVolumes {
		l, ok := r.limits[v.name]
		if !ok {
			continue
		}
		var fulls []string
		for _, o := range r.ops {
			if o.volume == v.name && o.op == "full" {
				got := float64(o.size) / o.wall.Seconds()
				fulls = append(fulls, fmt.Sprintf("%s %.0f (%.0f%%)", o.variant, got/1e6, 100*got/l.allCores))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f (%d workers)\t%s\t\n", v.name, benchMiB(l.sample), l.oneCore/1e6, l.allCores/1e6, l.workers, strings.Join(fulls, ", "))
	}
	tw.Flush()
	for _, v := range benchVolumes {
		if l, ok := r.limits[v.name]; ok {
			fmt.Fprintf(w, "    %s runs, MB/s: 1 core %s; all cores %s\n", v.name, benchRates(l.oneRuns), benchRates(l.allRuns))
		}
	}
	if r.storage > 0 {
		fmt.Fprintf(w, "  storage: 4 MiB objects written the way the posix repository puts them (fsync, rename, directory fsync), %d writers, on the repositories' filesystem: %.0f MB/s\n",
			r.storageWorkers, r.storage/1e6)
		for _, o := range r.ops {
			if o.op == "full" && o.stored > 0 {
				got := float64(o.stored) / o.wall.Seconds()
				fmt.Fprintf(w, "    %s/%s full backup stored %.0f MB/s: %.0f%% of it\n", o.variant, o.volume, got/1e6, 100*got/r.storage)
			}
		}
	}
}

// printRivals prints the other tools' operations and the ratios of
// blockvault's to theirs.
func (r *benchReport) printRivals(w io.Writer) {
	fmt.Fprintln(w, "\nOther tools on the same data (an image file of each volume exported through NBD from blockvault's restore of the full backup;")
	fmt.Fprintln(w, "  repositories on the filesystem of blockvault's; the same changes applied to the file; stored = growth of the repository directory)")
	for _, l := range r.rivalInfo {
		fmt.Fprintln(w, "  "+l)
	}
	if len(r.rivals) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tool\tvolume\toperation\tMB/s\twall\tstored\tCPU\tpeak RSS\t note")
	for _, o := range r.rivals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t %s\n", o.tool, o.volume, o.op, benchMBps(o.size, o.wall), benchSecs(o.wall), benchMiB(o.stored), o.cpu.Seconds(), benchMiB(o.peak), o.note)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nRatios blockvault / other tool (wall time, and repository growth for backups; below 1 = blockvault faster or smaller)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "volume\toperation\tblockvault\tvs\twall\tstored\t")
	for _, o := range r.ops {
		for _, x := range r.rivals {
			if x.volume != o.volume || x.op != o.op {
				continue
			}
			stored := benchRatio(float64(o.repoGrowth), float64(x.stored))
			if strings.HasPrefix(o.op, "restore") {
				stored = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", o.volume, o.op, o.variant, x.tool, benchRatio(o.wall.Seconds(), x.wall.Seconds()), stored)
		}
	}
	tw.Flush()
}

// loadAverage is /proc/loadavg's first three fields: the machine is
// shared, and other work there blurs the figures.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func benchQuantile(l relLatencies, f float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l.quantile(f).Round(10 * time.Microsecond)
}

// benchRates formats rates in bytes per second as MB/s.
func benchRates(rates []float64) string {
	var out []string
	for _, r := range rates {
		out = append(out, fmt.Sprintf("%.0f", r/1e6))
	}
	return strings.Join(out, ", ")
}
