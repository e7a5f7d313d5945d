package cinder

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/repository"
)

// Restore writes the newest backup of chain (oldest first, as Links of the
// imported records) onto dst, which must hold at least the volume's bytes
// (Inspect's Size). Objects are read several at once and streamed; each
// block is checked against the newest backup's sha256file before it is
// written, and blocks of zeros are written as dst.Zero (holes where dst can
// punch them), as the engine's restore does. Each object's md5 is checked
// once it has been read. A missing or damaged object ends the restore with
// an *ObjectError naming it and its backup; the target is then partly
// written and must not be used. progress, if not nil, is called with the
// bytes written so far (at most every 200 ms, and at the end).
func Restore(ctx context.Context, repo repository.Repository, chain []Link, dst blockdev.Device, progress func(done, total int64)) error {
	c, p, sums, err := prepare(ctx, repo, chain)
	if err != nil {
		return err
	}
	if dst.Size() < p.size {
		return fmt.Errorf("cinder: restore of backup %s: the target has %d bytes, the backup %d", chain[len(chain)-1].BackupID, dst.Size(), p.size)
	}
	report := throttle(progress, p.size)
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	n, md5s := planMD5(len(p.pieces))
	defer md5s.close()
	jobs := make(chan *piece)
	g.Go(func() error {
		defer close(jobs)
		for i := range p.pieces {
			select {
			case jobs <- &p.pieces[i]:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for w := range n {
		g.Go(func() error {
			r := newObjectReader(repo, sums.BlockSize, n, md5s.forWorker(w))
			defer r.close()
			for pc := range jobs {
				check := func(off int64, run []byte) error { return checkBlocks(sums, pc.parts, off, run) }
				use := func(off int64, run []byte) error {
					n, err := writeParts(dst, pc.parts, sums.BlockSize, off, run)
					report(done.Add(n), false)
					return err
				}
				if err := r.read(gctx, c.links[pc.link], pc.obj, check, use); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := dst.Flush(); err != nil {
		return fmt.Errorf("cinder: flush the target: %w", err)
	}
	report(p.size, true)
	return nil
}

// writeParts writes the bytes of run (at volume offset off) that lie in
// parts, block by block: runs of all-zero blocks with dst.Zero, the others
// with WriteAt. It returns the bytes it wrote or zeroed.
func writeParts(dst blockdev.Device, parts []span, bs, off int64, run []byte) (int64, error) {
	end := off + int64(len(run))
	var written int64
	for _, p := range parts {
		a, b := max(p.off, off), min(p.end, end)
		for a < b {
			zero := isZero(run[a-off : min(a+bs, b)-off])
			x := min(a+bs, b)
			for x < b && isZero(run[x-off:min(x+bs, b)-off]) == zero {
				x = min(x+bs, b)
			}
			if zero {
				if err := dst.Zero(a, x-a); err != nil {
					return written, fmt.Errorf("cinder: zero the target at %d: %w", a, err)
				}
			} else if _, err := dst.WriteAt(run[a-off:x-off], a); err != nil {
				return written, fmt.Errorf("cinder: write the target at %d: %w", a, err)
			}
			written += x - a
			a = x
		}
	}
	return written, nil
}

// zeros is compared against by isZero.
var zeros [64 << 10]byte

// isZero reports whether b is all zeros, comparing it against zeros with
// bytes.Equal (vectorised), 64 KiB at a time.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// throttle calls fn with (done, total) at most every 200 ms, and always
// when final.
func throttle(fn func(done, total int64), total int64) func(done int64, final bool) {
	if fn == nil {
		return func(int64, bool) {}
	}
	var mu sync.Mutex
	var last time.Time
	return func(done int64, final bool) {
		mu.Lock()
		defer mu.Unlock()
		if final || time.Since(last) >= 200*time.Millisecond {
			last = time.Now()
			fn(done, total)
		}
	}
}
