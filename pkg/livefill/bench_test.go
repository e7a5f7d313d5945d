package livefill_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/livefill"
)

// BenchmarkLiveRestore: a live restore of a backup of a 1 GiB image (see
// makeImage; encrypted, posix repository in the temporary directory)
// against the ordinary restore of the same backup:
//
//	go test -run '^$' -bench LiveRestore -benchtime 1x ./pkg/livefill/
//
// It reports ttfb-ms (OpenBackup, livefill.Open with a fresh state, and a
// first 4 KiB read), unfilled-4k-p50-ms and unfilled-4k-p99-ms (4 KiB
// reads of regions not filled, each in a chunk not read before),
// fill-MB/s (Fill of the whole volume, from a fresh reader) and
// restore-MB/s (Engine.Restore onto a file).
func BenchmarkLiveRestore(b *testing.B) {
	const size = 1 << 30
	for range b.N {
		fx := newFixture(b, size, bytes.Repeat([]byte("k"), 32))
		ctx := context.Background()
		cs := int64(engine.DefaultChunkSize)
		buf := make([]byte, 4096)
		rng := rand.New(rand.NewPCG(5, 6))

		start := time.Now()
		r, err := fx.e.OpenBackup(ctx, "backups", "b", engine.ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		target := emptyFile(b, filepath.Join(fx.dir, "t1.img"), size)
		d, err := livefill.Open(target, r, filepath.Join(fx.dir, "s1"), livefill.Options{SourceID: "b", TargetZeroed: true})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.ReadAt(buf, cs+8192); err != nil {
			b.Fatal(err)
		}
		ttfb := time.Since(start)
		var lat []time.Duration
		for i := int64(2); i < size/cs; i++ {
			if i%4 == 0 {
				continue // the image's holes
			}
			off := i*cs + rng.Int64N(cs/4096)*4096
			t0 := time.Now()
			if _, err := d.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		d.Close()
		r.Close()

		r, err = fx.e.OpenBackup(ctx, "backups", "b", engine.ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		target = emptyFile(b, filepath.Join(fx.dir, "t2.img"), size)
		d, err = livefill.Open(target, r, filepath.Join(fx.dir, "s2"), livefill.Options{SourceID: "b", TargetZeroed: true})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if err := d.Fill(ctx, nil); err != nil {
			b.Fatal(err)
		}
		fill := time.Since(start)
		d.Close()

		dst := emptyFile(b, filepath.Join(fx.dir, "t3.img"), size)
		start = time.Now()
		if err := fx.e.Restore(ctx, "backups", "b", dst, nil); err != nil {
			b.Fatal(err)
		}
		restore := time.Since(start)

		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(ms(ttfb), "ttfb-ms")
		b.ReportMetric(ms(lat[len(lat)/2]), "unfilled-4k-p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "unfilled-4k-p99-ms")
		b.ReportMetric(size/fill.Seconds()/1e6, "fill-MB/s")
		b.ReportMetric(size/restore.Seconds()/1e6, "restore-MB/s")
	}
}
