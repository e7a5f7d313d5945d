package e2etest

import (
	"context"
	"crypto/rand"
	mrand "math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
)

// BenchmarkLiveRestoreThroughDaemons measures a live restore through the
// three daemons against the ordinary restore of the same backup (a volume
// of random data, BLOCKVAULT_BENCH_SIZE, default here 1 GiB; the stack's
// defaults: the file driver in a temporary directory):
//
//	BLOCKVAULT_BENCH_SIZE=1GiB go test -run '^$' -bench LiveRestoreThroughDaemons -benchtime 1x ./services/e2etest/
//
// It reports restore-MB/s (the ordinary restore, request to backup
// available), ready-ms (the live restore's request to its answer: the
// volume usable), ttfb-ms (request to the first 4 KiB read through an
// attachment), unfilled-4k-p50-ms and -p99-ms (4 KiB reads of regions the
// fill has not reached, each in another chunk: the backup service fetches
// and decodes the chunk, two NBD hops), and fill-MB/s (request to the
// volume being an ordinary one).
func BenchmarkLiveRestoreThroughDaemons(b *testing.B) {
	size := int64(1 << 30)
	if os.Getenv("BLOCKVAULT_BENCH_SIZE") != "" {
		size = benchSize(b)
	}
	for range b.N {
		s := Start(b, Options{})
		ctx := context.Background()
		src, _, dev := attached(b, s, size)
		buf := make([]byte, 16<<20)
		for off := int64(0); off < size; off += int64(len(buf)) {
			rand.Read(buf)
			if _, err := dev.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
				b.Fatal(err)
			}
		}
		dev.Flush()
		id := benchBackup(b, s, src.GetId(), "", false).GetId()

		start := time.Now()
		benchRestore(b, s, id)
		restore := time.Since(start)

		start = time.Now()
		rr, err := s.Backups.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: project, BackupId: id, Restore: &backupv1.RestoreInput{Live: true}})
		if err != nil {
			b.Fatal(err)
		}
		ready := time.Since(start)
		vid := rr.GetRestore().GetVolumeId()
		ar, err := s.Volumes.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: project, Attachment: &volumev1.AttachmentInput{
			VolumeUuid: vid, InstanceUuid: "bench", Connector: &volumev1.Connector{Host: "bench"}}})
		if err != nil {
			b.Fatal(err)
		}
		live := dialExport(b, ar.GetAttachment().GetConnectionInfo())
		p := make([]byte, 4096)
		if _, err := live.ReadAt(p, 0); err != nil {
			b.Fatal(err)
		}
		ttfb := time.Since(start)

		// Reads ahead of the fill: each in a chunk of its own in the last
		// half, counted only when the fill had not reached it.
		filled := func() int64 {
			v, err := s.Volumes.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: project, VolumeId: vid})
			if err != nil {
				b.Fatal(err)
			}
			if l := v.GetVolume().GetLiveRestore(); l != nil {
				return l.GetBytesFilled()
			}
			return size
		}
		const chunk = 4 << 20
		var lat []time.Duration
		rng := mrand.New(mrand.NewPCG(1, 2))
		for _, c := range rng.Perm(int(size / 2 / chunk)) {
			off := size/2 + int64(c)*chunk + rng.Int64N(chunk-4096)&^4095
			if off < filled()+chunk {
				continue
			}
			t0 := time.Now()
			if _, err := live.ReadAt(p, off); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			if len(lat) == 64 {
				break
			}
		}
		for filled() < size {
			time.Sleep(20 * time.Millisecond)
		}
		fill := time.Since(start)
		live.Close()
		s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: ar.GetAttachment().GetId()})

		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(float64(size)/1e6/restore.Seconds(), "restore-MB/s")
		b.ReportMetric(ms(ready), "ready-ms")
		b.ReportMetric(ms(ttfb), "ttfb-ms")
		if len(lat) > 0 {
			b.ReportMetric(ms(lat[len(lat)/2]), "unfilled-4k-p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "unfilled-4k-p99-ms")
		}
		b.ReportMetric(float64(len(lat)), "unfilled-samples")
		b.ReportMetric(float64(size)/1e6/fill.Seconds(), "fill-MB/s")
	}
}
