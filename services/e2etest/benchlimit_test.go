package e2etest

// The machine's limit for the backup engine: how fast this CPU runs the
// engine's per-chunk pipeline (zero check, keyed BLAKE3 chunk id, zstd,
// AES-256-GCM) on a sample of a volume, with no I/O at all. The codecs are
// unexported in pkg/engine, so this makes the same library calls with the
// same parameters (pkg/engine/engine.go Backup, format.go sealObject).

import (
	"crypto/aes"
	"crypto/cipher"
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// pipelineLimit is the pipeline's throughput, in volume bytes per second
// (zero chunks count at the cost of the zero check, as in a backup): the
// best of pipelineRounds rounds, each run given in the *Runs fields.
type pipelineLimit struct {
	sample            int64
	oneCore, allCores float64
	oneRuns, allRuns  []float64
	workers           int
}

// pipelineRounds is how many times each rate is measured. The machine is
// shared and the kernel may still be writing back what was written before,
// so one run can come out low; a limit is what the machine can do, so the
// best run counts.
const pipelineRounds = 3

// measurePipeline runs the pipeline over sample with one worker and with
// GOMAXPROCS workers, in turn, pipelineRounds times, after a sync so that
// writeback of the volume just built is not part of it.
func measurePipeline(sample []byte) (pipelineLimit, error) {
	l := pipelineLimit{sample: int64(len(sample)), workers: runtime.GOMAXPROCS(0)}
	syscall.Sync()
	for range pipelineRounds {
		one, err := pipelineRate(sample, 1)
		if err != nil {
			return l, err
		}
		all, err := pipelineRate(sample, l.workers)
		if err != nil {
			return l, err
		}
		l.oneRuns, l.allRuns = append(l.oneRuns, one), append(l.allRuns, all)
		l.oneCore, l.allCores = max(l.oneCore, one), max(l.allCores, all)
	}
	return l, nil
}

// pipelineRate passes over sample in engine chunks, shared among workers,
// until at least two seconds went by, and returns bytes per second.
func pipelineRate(sample []byte, workers int) (float64, error) {
	hashKey, dataKey := make([]byte, 32), make([]byte, 32)
	cryptorand.Read(hashKey)
	cryptorand.Read(dataKey)
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return 0, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return 0, err
	}
	cs := engine.DefaultChunkSize
	chunks := (len(sample) + cs - 1) / cs
	var done int64
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := newPipelineWorker(hashKey, aead)
				if err != nil {
					errs <- err
					return
				}
				defer w.enc.Close()
				for i := int(next.Add(1)) - 1; i < chunks; i = int(next.Add(1)) - 1 {
					w.chunk(sample[i*cs : min((i+1)*cs, len(sample))])
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, err
		}
		done += int64(len(sample))
	}
	return float64(done) / time.Since(start).Seconds(), nil
}

// pipelineWorker is one engine worker's codecs.
type pipelineWorker struct {
	enc     *zstd.Encoder
	hasher  *blake3.Hasher
	aead    cipher.AEAD
	scratch []byte
}

func newPipelineWorker(hashKey []byte, aead cipher.AEAD) (*pipelineWorker, error) {
	// The engine's worker encoder, option for option.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	h, err := blake3.NewKeyed(hashKey)
	if err != nil {
		return nil, err
	}
	return &pipelineWorker{enc: enc, hasher: h, aead: aead}, nil
}

// chunk does what the engine does to one chunk it read: skip it when all
// zeros, else compute its id and seal it (compressed when smaller,
// encrypted with a random nonce).
func (w *pipelineWorker) chunk(b []byte) string {
	if allZero(b) {
		return ""
	}
	w.hasher.Reset()
	w.hasher.Write(b)
	var sum [32]byte
	w.hasher.Sum(sum[:0])
	id := hex.EncodeToString(sum[:])

	hdr := []byte{1, 0}
	w.scratch = w.enc.EncodeAll(b, w.scratch[:0])
	body := b
	if len(w.scratch) < len(b) {
		hdr[1] |= 1
		body = w.scratch
	}
	hdr[1] |= 2
	ns := w.aead.NonceSize()
	obj := make([]byte, 2+ns, 2+ns+len(body)+w.aead.Overhead())
	copy(obj, hdr)
	cryptorand.Read(obj[2 : 2+ns])
	w.aead.Seal(obj, obj[2:2+ns], body, hdr)
	return id
}

// storageRate writes total bytes of 4 MiB objects into dir the way
// pkg/repository/posix puts one (a temporary file written, fsynced, renamed
// into place, the directory fsynced), with workers writers, and returns
// bytes per second: the repository filesystem's limit for a backup. It
// removes dir.
func storageRate(dir string, total int64, workers int) (float64, error) {
	var next atomic.Int64
	errs := make(chan error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, engine.DefaultChunkSize)
			rand.NewChaCha8([32]byte{byte(w)}).Read(buf)
			for i := next.Add(1) - 1; i*int64(len(buf)) < total; i = next.Add(1) - 1 {
				if err := putObject(dir, fmt.Sprintf("object-%d", i), buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(total) / elapsed.Seconds(), os.RemoveAll(dir)
}

func putObject(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, ".tmp-"+name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
