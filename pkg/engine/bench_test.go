package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
)

// Backup and restore of 1 GiB images, posix repository in the temporary
// directory, one run each:
//
//	go test -run '^$' -bench . -benchtime 1x ./pkg/engine/
//
// MB/s is of the volume, holes included. Each benchmark also reports:
//
//   - peak-heap-MiB: the largest Go heap in use (runtime/metrics
//     /memory/classes/heap/objects + /memory/classes/heap/unused, which is
//     runtime.MemStats.HeapInuse) sampled every millisecond during the
//     timed backup or restore, after a GC before it;
//   - peak-rss-MiB: the test process's peak resident set (VmHWM of
//     /proc/self/status, reset through /proc/self/clear_refs just before the
//     run): heap, stacks, runtime and binary, not the page cache. Not
//     reported where the reset is not allowed.
//
// A backup also reports stored-MiB, what it put in the repository.

var benchKinds = []string{"sparse", "random", "text", "mixed"}

func BenchmarkBackup(b *testing.B) {
	for _, kind := range benchKinds {
		for _, encrypted := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/encrypted=%v", kind, encrypted), func(b *testing.B) {
				img := makeImage(b, kind, gib)
				src := openFile(b, img, true)
				var peak memPeak
				var stored int64
				b.SetBytes(gib)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					e, dir := newEngine(b, keyIf(encrypted))
					peak.start()
					b.StartTimer()
					m, err := e.Backup(context.Background(), "backups", src, engine.BackupSpec{BackupID: "b", VolumeID: "v"})
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					peak.stop()
					stored = m.NewBytes
					if err := os.RemoveAll(dir); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.StopTimer()
				peak.report(b)
				b.ReportMetric(float64(stored)/float64(mib), "stored-MiB")
			})
		}
	}
}

func BenchmarkRestore(b *testing.B) {
	for _, kind := range benchKinds {
		for _, encrypted := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/encrypted=%v", kind, encrypted), func(b *testing.B) {
				img := makeImage(b, kind, gib)
				e, _ := newEngine(b, keyIf(encrypted))
				backup(b, e, openFile(b, img, true), "b", "")
				var peak memPeak
				target := timedRestores(b, e, "b", &peak)
				sameFiles(b, img, target)
				peak.report(b)
			})
		}
	}
}

// timedRestores restores backup id of a 1 GiB volume b.N times into one
// target, emptied before each run (outside the timer), and returns the
// target's path. peak, when not nil, samples each run's memory.
func timedRestores(b *testing.B, e *engine.Engine, id string, peak *memPeak) string {
	target := emptyTarget(b, gib)
	dst := openFile(b, target, false)
	b.SetBytes(gib)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := dst.Zero(0, gib); err != nil {
			b.Fatal(err)
		}
		if peak != nil {
			peak.start()
		}
		b.StartTimer()
		if err := e.Restore(context.Background(), "backups", id, dst, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if peak != nil {
			peak.stop()
		}
		b.StartTimer()
	}
	b.StopTimer()
	return target
}

// memPeak samples the peak memory of the runs between start and stop.
type memPeak struct {
	heap, rss   uint64
	rssOK       bool
	stopc, done chan struct{}
}

func (p *memPeak) start() {
	runtime.GC()
	debug.FreeOSMemory()
	p.rssOK = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	p.stopc, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			p.heap = max(p.heap, s[0].Value.Uint64()+s[1].Value.Uint64())
			select {
			case <-p.stopc:
				return
			case <-tick.C:
			}
		}
	}()
}

func (p *memPeak) stop() {
	close(p.stopc)
	<-p.done
	if !p.rssOK {
		return
	}
	hwm, err := peakRSS()
	if err != nil {
		p.rssOK = false
		return
	}
	p.rss = max(p.rss, hwm)
}

func (p *memPeak) report(b *testing.B) {
	b.ReportMetric(float64(p.heap)/float64(mib), "peak-heap-MiB")
	if p.rssOK {
		b.ReportMetric(float64(p.rss)/float64(mib), "peak-rss-MiB")
	}
}

// peakRSS reads VmHWM from /proc/self/status.
func peakRSS() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 3 && string(f[0]) == "VmHWM:" && string(f[2]) == "kB" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// BenchmarkRestorePieces restores, from a 1 GiB mixed image, the full
// backup and an incremental taken after 1% of the image was rewritten in
// scattered 4 KiB writes (about ten per 4 MiB chunk, so nearly every chunk
// with data is stored in pieces): what pieces cost a restore.
func BenchmarkRestorePieces(b *testing.B) {
	img := makeImage(b, "mixed", gib)
	e, _ := newEngine(b, key)
	backup(b, e, openFile(b, img, true), "full", "")
	rng := rand.New(rand.NewPCG(9, 9))
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	blk := make([]byte, 4096)
	var changed []engine.Range
	for range gib / 100 / 4096 {
		off := rng.Int64N(gib/4096) * 4096
		for i := range blk {
			blk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(blk, off); err != nil {
			b.Fatal(err)
		}
		changed = append(changed, engine.Range{Offset: off, Length: 4096})
	}
	f.Close()
	inc, err := e.Backup(context.Background(), "backups", openFile(b, img, true), engine.BackupSpec{BackupID: "inc", VolumeID: "vol", ParentID: "full", Changed: changed})
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range []string{"full", "inc"} {
		b.Run(id, func(b *testing.B) {
			target := timedRestores(b, e, id, nil)
			if id == "inc" {
				sameFiles(b, img, target)
				b.ReportMetric(float64(len(inc.Pieces)), "chunks-in-pieces")
			}
		})
	}
}
