package engine_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
)

// BenchmarkBackupReader: random access to a backup of a 1 GiB mixed image
// (encrypted, posix repository in the temporary directory) against the
// restore of the same backup:
//
//	go test -run '^$' -bench BackupReader -benchtime 1x ./pkg/engine/
//
// It reports ttfb-ms (OpenBackup and a first 4 KiB read of a chunk with
// data), cold-4k-p50-ms and cold-4k-p99-ms (4 KiB reads, each of a chunk
// not read before), seq-MB/s (one reader, 1 MiB reads in order, with
// read-ahead) and restore-MB/s (Engine.Restore onto a file).
func BenchmarkBackupReader(b *testing.B) {
	for range b.N {
		img := makeImage(b, "mixed", gib)
		e, _ := newEngine(b, key)
		m := backup(b, e, openFile(b, img, true), "b", "")
		ctx := context.Background()
		var data []int
		for i, id := range m.Chunks {
			if id != "" {
				data = append(data, i)
			}
		}
		rng := rand.New(rand.NewPCG(3, 4))
		rng.Shuffle(len(data), func(i, j int) { data[i], data[j] = data[j], data[i] })
		buf := make([]byte, 4096)

		start := time.Now()
		r, err := e.OpenBackup(ctx, "backups", "b", engine.ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadAt(buf, int64(data[0])*chunk+12288); err != nil {
			b.Fatal(err)
		}
		ttfb := time.Since(start)
		var lat []time.Duration
		for _, i := range data[1:] {
			off := int64(i)*chunk + rng.Int64N(chunk/4096)*4096
			t0 := time.Now()
			if _, err := r.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		r.Close()
		slices.Sort(lat)

		r, err = e.OpenBackup(ctx, "backups", "b", engine.ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		big := make([]byte, mib)
		start = time.Now()
		for off := int64(0); off < gib; off += mib {
			if _, err := r.ReadAt(big, off); err != nil {
				b.Fatal(err)
			}
		}
		seq := time.Since(start)
		r.Close()

		dst := openFile(b, emptyTarget(b, gib), false)
		start = time.Now()
		if err := e.Restore(ctx, "backups", "b", dst, nil); err != nil {
			b.Fatal(err)
		}
		restore := time.Since(start)

		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(ms(ttfb), "ttfb-ms")
		b.ReportMetric(ms(lat[len(lat)/2]), "cold-4k-p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "cold-4k-p99-ms")
		b.ReportMetric(float64(gib)/seq.Seconds()/1e6, "seq-MB/s")
		b.ReportMetric(float64(gib)/restore.Seconds()/1e6, "restore-MB/s")
		b.Logf("%d cold reads of chunks with data", len(lat))
	}
}
