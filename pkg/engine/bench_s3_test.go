package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
)

// onePutAtATime hides a repository's batch, so every object is its own put.
type onePutAtATime struct{ repository.Repository }

// BenchmarkIncrementalPiecesS3: incremental backups, each after 1% of a
// 1 GiB random image was rewritten in scattered 4 KiB writes (about ten
// per chunk: every chunk in pieces), to a real S3 server on loopback
// (versitygw), with the S3 repository's batch (concurrent uploads of the
// small objects) and without it (one put at a time per putter):
//
//	go test -run '^$' -bench IncrementalPiecesS3 -benchtime 5x ./pkg/engine/
func BenchmarkIncrementalPiecesS3(b *testing.B) {
	for _, batched := range []bool{true, false} {
		name := "batch"
		if !batched {
			name = "one-put-at-a-time"
		}
		b.Run(name, func(b *testing.B) {
			srv := s3test.Start(b)
			s3repo, err := s3.New(context.Background(), srv.Config)
			if err != nil {
				b.Fatal(err)
			}
			var repo repository.Repository = s3repo
			if !batched {
				repo = onePutAtATime{s3repo}
			}
			e, err := engine.New(repo, engine.Options{Key: key})
			if err != nil {
				b.Fatal(err)
			}
			const size = 1024 * mib
			img := makeImage(b, "random", size)
			ctx := context.Background()
			if _, err := e.Backup(ctx, "c", openFile(b, img, true), engine.BackupSpec{BackupID: "b0", VolumeID: "v"}); err != nil {
				b.Fatal(err)
			}
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			rng := rand.New(rand.NewPCG(1, 2))
			page := make([]byte, 4096)
			var wall time.Duration
			var objects int64
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				b.StopTimer()
				var changed []engine.Range
				for _, p := range rng.Perm(int(size / 4096))[:size/4096/100] {
					for k := range page {
						page[k] = byte(rng.Uint32())
					}
					f.WriteAt(page, int64(p)*4096)
					changed = append(changed, engine.Range{Offset: int64(p) * 4096, Length: 4096})
				}
				b.StartTimer()
				start := time.Now()
				m, err := e.Backup(ctx, "c", openFile(b, img, true), engine.BackupSpec{
					BackupID: fmt.Sprint("b", i), VolumeID: "v", ParentID: fmt.Sprint("b", i-1), Changed: changed})
				if err != nil {
					b.Fatal(err)
				}
				wall += time.Since(start)
				objects += m.NewChunks
			}
			b.ReportMetric(wall.Seconds()/float64(b.N), "s/incremental")
			b.ReportMetric(float64(objects)/float64(b.N), "objects/incremental")
		})
	}
}
