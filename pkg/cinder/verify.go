package cinder

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/blockvault/blockvault/pkg/repository"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	// Objects counts the data objects read and checked; Bytes their
	// decompressed bytes.
	Objects int
	Bytes   int64
	// Damaged lists the objects (data, metadata or sha256file) missing or
	// damaged, each naming its backup and object. Empty: the chain is
	// whole.
	Damaged []ObjectError
}

// Verify reads every object of every backup of chain (oldest first) and
// checks it: its md5, its length, and each of its blocks against its own
// backup's sha256file; and that the chain's metadata fit together as a
// restore needs. A missing or damaged object is listed in the report; the
// error is for what stops the check itself (the repository unreachable, a
// cancelled ctx, backups that do not form a chain). progress, if not nil,
// is called with the bytes checked so far.
func Verify(ctx context.Context, repo repository.Repository, chain []Link, progress func(done, total int64)) (*VerifyReport, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no backups", ErrBrokenChain)
	}
	rep := &VerifyReport{}
	var mu sync.Mutex
	addDamaged := func(err error) bool {
		if !damaged(err) {
			return false
		}
		var oe *ObjectError
		errors.As(err, &oe)
		mu.Lock()
		rep.Damaged = append(rep.Damaged, *oe)
		mu.Unlock()
		return true
	}
	// Each backup's metadata and sha256file.
	c := &loadedChain{links: chain, metas: make([]*metadata, len(chain))}
	allSums := make([]*sha256File, len(chain))
	for i, l := range chain {
		if err := checkLink(l); err != nil {
			return nil, err
		}
		m, err := readMetadata(ctx, repo, l)
		if err != nil && !addDamaged(err) {
			return nil, err
		}
		c.metas[i] = m
		if m != nil && i == 0 && m.ParentID != "" {
			return nil, fmt.Errorf("%w: backup %s is an incremental of %s: a chain starts with its full backup", ErrBrokenChain, l.BackupID, m.ParentID)
		}
		if m != nil && i > 0 && m.ParentID != chain[i-1].BackupID {
			return nil, fmt.Errorf("%w: backup %s follows %s in the chain, but its parent is %q", ErrBrokenChain, l.BackupID, chain[i-1].BackupID, m.ParentID)
		}
		s, err := readSHA256File(ctx, repo, l)
		if err != nil && !addDamaged(err) {
			return nil, err
		}
		allSums[i] = s
	}
	newest := allSums[len(chain)-1]
	for i, s := range allSums {
		if s != nil && newest != nil && s.BlockSize != newest.BlockSize {
			addDamaged(&ObjectError{BackupID: chain[i].BackupID, Object: chain[i].sha256FileName(), Err: fmt.Errorf("%w: %d-byte blocks, the newest backup's are %d", ErrCorrupt, s.BlockSize, newest.BlockSize)})
			allSums[i] = nil // its objects are checked by md5 alone
		}
	}
	// The chain as a restore lays it out, when all its metadata are there.
	whole := newest != nil
	for _, m := range c.metas {
		whole = whole && m != nil
	}
	if whole {
		if _, err := makePlan(c, newest); err != nil && !addDamaged(err) {
			return nil, err
		}
	}
	// Every object, several at once. An object's blocks are checked
	// against its own backup's sha256file, and against each later one's
	// where no backup between overwrote them: each backup's sums describe
	// the volume as the chain up to it restores.
	covs := make([]coverage, len(chain))
	for i, m := range c.metas {
		if m == nil {
			continue
		}
		for _, o := range m.Objects {
			if o.Length > 0 {
				covs[i].claim(span{o.Offset, o.end()})
			}
		}
	}
	type check struct {
		sums  *sha256File
		parts []span // nil: the whole object
	}
	type job struct {
		link   int
		obj    *object
		checks []check
	}
	var jobs []job
	var total int64
	for i, m := range c.metas {
		if m == nil {
			continue
		}
		for k := range m.Objects {
			o := &m.Objects[k]
			j := job{link: i, obj: o}
			if allSums[i] != nil {
				j.checks = append(j.checks, check{sums: allSums[i]})
			}
			visible := []span{{o.Offset, o.end()}}
			for later := i + 1; later < len(chain) && len(visible) > 0 && c.metas[later] != nil; later++ {
				visible = subtract(visible, covs[later])
				if len(visible) > 0 && allSums[later] != nil {
					j.checks = append(j.checks, check{sums: allSums[later], parts: visible})
				}
			}
			jobs = append(jobs, j)
			total += o.Length
		}
	}
	report := throttle(progress, total)
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan job)
	g.Go(func() error {
		defer close(next)
		for _, j := range jobs {
			select {
			case next <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	n, md5s := planMD5(len(jobs))
	defer md5s.close()
	for w := range n {
		g.Go(func() error {
			bs := int64(32 << 10)
			if newest != nil {
				bs = newest.BlockSize
			}
			r := newObjectReader(repo, bs, n, md5s.forWorker(w))
			defer r.close()
			for j := range next {
				// Where a sha256file is damaged (and listed), the md5
				// still counts.
				check := func(off int64, run []byte) error {
					for _, c := range j.checks {
						if err := checkBlocks(c.sums, c.parts, off, run); err != nil {
							return err
						}
					}
					return nil
				}
				use := func(off int64, run []byte) error {
					report(done.Add(int64(len(run))), false)
					return nil
				}
				err := r.read(gctx, chain[j.link], j.obj, check, use)
				if err != nil && !addDamaged(err) {
					return err
				}
				mu.Lock()
				rep.Objects++
				if err == nil {
					rep.Bytes += j.obj.Length
				}
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	report(done.Load(), true)
	sort.Slice(rep.Damaged, func(a, b int) bool {
		x, y := rep.Damaged[a], rep.Damaged[b]
		return x.BackupID < y.BackupID || x.BackupID == y.BackupID && x.Object < y.Object
	})
	return rep, nil
}
