package cinder_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/cinder/cindertest"
	"github.com/blockvault/blockvault/pkg/repository"
)

// benchDir holds the benchmark's backups across its runs.
var benchDir string

// benchVolume writes a sparse volume file of size bytes in 512 KiB
// stretches, as volumes does, without holding it: a quarter text, a
// quarter random, a quarter holes, a quarter half random, half zeros.
func benchVolume(b *testing.B, size int64) string {
	b.Helper()
	p := filepath.Join(benchDir, fmt.Sprintf("volume-%d", size))
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(size), 23))
	buf := make([]byte, 512<<10)
	var text []byte
	for len(text) < len(buf)+4096 {
		text = fmt.Appendf(text, "blockvault imports Cinder backups, line %d\n", rng.IntN(1000))
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		switch (off / int64(len(buf))) % 4 {
		case 0:
			// The text, shifted: no two stretches alike.
			k := rng.IntN(4096)
			copy(buf, text[k:k+len(buf)])
		case 1:
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
		case 2:
			continue
		case 3:
			clear(buf)
			for i := range buf[:len(buf)/2] {
				buf[i] = byte(rng.Uint32())
			}
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkRestore restores a 1 GiB volume (a quarter text, a quarter
// random, a quarter holes, a quarter half random) from a backup that
// Cinder's posix driver made, with objects of the posix driver's default
// size (one object: no parallelism to be had) and of the S3 driver's
// (50 MiB), into a sparse file. Making the backup (Cinder, in Python) takes
// a while and is not timed. BENCH_CINDER_SIZE (bytes) changes the volume's
// size; BENCH_CINDER_DIR, a directory, keeps the backups there for the
// next run, even of another build (to compare two builds on the same
// backups). Besides MB/s it reports the CPU time (user and system) of the
// restores, which other work on a shared machine changes less than MB/s.
func BenchmarkRestore(b *testing.B) {
	benchBackups(b, func(b *testing.B, repo repository.Repository, chain []cinder.Link, size int64) {
		dstPath := filepath.Join(b.TempDir(), "dst")
		var cpu time.Duration
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			os.Remove(dstPath)
			if err := os.WriteFile(dstPath, nil, 0o644); err != nil {
				b.Fatal(err)
			}
			os.Truncate(dstPath, size)
			dst, err := blockdev.OpenFileForBulkWrites(dstPath)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t0 := cpuTime()
			if err := cinder.Restore(context.Background(), repo, chain, dst, nil); err != nil {
				b.Fatal(err)
			}
			cpu += cpuTime() - t0
			b.StopTimer()
			dst.Close()
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	})
}

// BenchmarkVerify verifies the backups of BenchmarkRestore.
func BenchmarkVerify(b *testing.B) {
	benchBackups(b, func(b *testing.B, repo repository.Repository, chain []cinder.Link, size int64) {
		var cpu time.Duration
		b.ResetTimer()
		for range b.N {
			t0 := cpuTime()
			rep, err := cinder.Verify(context.Background(), repo, chain, nil)
			if err != nil {
				b.Fatal(err)
			}
			if len(rep.Damaged) > 0 {
				b.Fatalf("damaged: %v", rep.Damaged)
			}
			cpu += cpuTime() - t0
		}
		b.StopTimer()
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	})
}

// benchBackups runs bench on each of BenchmarkRestore's backups, as a
// sub-benchmark, with the bytes of the volume set.
func benchBackups(b *testing.B, bench func(b *testing.B, repo repository.Repository, chain []cinder.Link, size int64)) {
	dir := os.Getenv("BENCH_CINDER_DIR")
	if dir == "" {
		d, err := os.MkdirTemp("", "cinder-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	benchDir = dir
	size := int64(1 << 30)
	if s := os.Getenv("BENCH_CINDER_SIZE"); s != "" {
		fmt.Sscan(s, &size)
	}
	for _, bc := range []struct {
		compression string
		objectSize  int
	}{
		{"zlib", 61035 * 32768}, // backup_file_size's default
		{"zlib", 52428800},      // backup_s3_object_size's default
		{"zstd", 52428800},
	} {
		// The backup is made once, before the first run of the benchmark
		// function, and kept for the next (b.N grows).
		var (
			once  sync.Once
			repo  repository.Repository
			chain []cinder.Link
		)
		b.Run(fmt.Sprintf("%s/%dMiB-objects", bc.compression, bc.objectSize>>20), func(b *testing.B) {
			once.Do(func() {
				posixPath := filepath.Join(benchDir, "repo")
				saved := filepath.Join(benchDir, fmt.Sprintf("%s-%d-%d.record", bc.compression, bc.objectSize, size))
				rec, err := os.ReadFile(saved)
				if err != nil {
					vol := benchVolume(b, size)
					c := cindertest.Backup(b, cindertest.Options{Driver: cindertest.Posix, PosixPath: posixPath, Compression: bc.compression, ObjectSize: bc.objectSize, Backups: []cindertest.Step{{Volume: vol}}})
					os.Remove(vol)
					rec = []byte(c.Records[0].BackupService + "\n" + c.Records[0].BackupURL)
					os.WriteFile(saved, rec, 0o644)
				}
				service, url, _ := strings.Cut(string(rec), "\n")
				r, err := cinder.ParseExportRecord(service, url)
				if err != nil {
					b.Fatal(err)
				}
				repo = openPosix(b, posixPath)
				chain = []cinder.Link{r.Link()}
			})
			if repo == nil {
				b.Fatal("no backup")
			}
			b.SetBytes(size)
			bench(b, repo, chain, size)
			var ru syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss-MiB")
		})
	}
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
