package cinder

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/blockvault/blockvault/pkg/repository"
)

// loadedChain is a chain's metadata, oldest backup first.
type loadedChain struct {
	links []Link
	metas []*metadata
}

// loadChain reads every backup's metadata and checks that they form a
// chain: the first a full backup, each later one an incremental of the one
// before (an incremental's metadata names only its parent's id; the chain
// itself comes from the caller, who has the records).
func loadChain(ctx context.Context, repo repository.Repository, links []Link) (*loadedChain, error) {
	if len(links) == 0 {
		return nil, fmt.Errorf("%w: no backups", ErrBrokenChain)
	}
	c := &loadedChain{links: links}
	for i, l := range links {
		if err := checkLink(l); err != nil {
			return nil, err
		}
		if l.Kind != links[0].Kind {
			return nil, fmt.Errorf("%w: backup %s was made by the %s driver, %s by the %s driver", ErrBrokenChain, l.BackupID, l.Kind, links[0].BackupID, links[0].Kind)
		}
		m, err := readMetadata(ctx, repo, l)
		if err != nil {
			return nil, err
		}
		switch {
		case i == 0 && m.ParentID != "":
			return nil, fmt.Errorf("%w: backup %s is an incremental of %s: a chain starts with its full backup", ErrBrokenChain, l.BackupID, m.ParentID)
		case i > 0 && m.ParentID != links[i-1].BackupID:
			parent := m.ParentID
			if parent == "" {
				parent = "nothing (a full backup)"
			}
			return nil, fmt.Errorf("%w: backup %s follows %s in the chain, but its parent is %s", ErrBrokenChain, l.BackupID, links[i-1].BackupID, parent)
		}
		c.metas = append(c.metas, m)
	}
	return c, nil
}

func checkLink(l Link) error {
	switch {
	case l.BackupID == "" || l.Container == "" || l.Prefix == "":
		return fmt.Errorf("%w: backup %q lacks its id, container or prefix", ErrInvalidRecord, l.BackupID)
	case l.Kind != Posix && l.Kind != NFS && l.Kind != S3:
		return fmt.Errorf("%w: backup %s: driver kind %q", ErrUnsupported, l.BackupID, l.Kind)
	}
	if err := repository.ValidateName(l.metadataName()); err != nil {
		return fmt.Errorf("backup %s: container %q and prefix %q do not name objects blockvault can read: %w", l.BackupID, l.Container, l.Prefix, err)
	}
	return nil
}

// span is a byte range of the volume, [off, end).
type span struct{ off, end int64 }

// coverage is a sorted set of disjoint, non-adjacent spans.
type coverage []span

// claim adds s to the set and returns the parts of s that were not in it.
func (c *coverage) claim(s span) []span {
	cs := *c
	i := sort.Search(len(cs), func(i int) bool { return cs[i].end > s.off })
	var free []span
	pos := s.off
	j := i
	for ; j < len(cs) && cs[j].off < s.end; j++ {
		if cs[j].off > pos {
			free = append(free, span{pos, cs[j].off})
		}
		pos = max(pos, cs[j].end)
	}
	if pos < s.end {
		free = append(free, span{pos, s.end})
	}
	lo, hi := s.off, s.end
	if i < j {
		lo, hi = min(lo, cs[i].off), max(hi, cs[j-1].end)
	}
	if i > 0 && cs[i-1].end == lo {
		i--
		lo = cs[i].off
	}
	if j < len(cs) && cs[j].off == hi {
		hi = cs[j].end
		j++
	}
	*c = slices.Replace(cs, i, j, span{lo, hi})
	return free
}

// subtract returns the parts of spans (sorted, disjoint) outside c.
func subtract(spans []span, c coverage) []span {
	var out []span
	for _, s := range spans {
		pos := s.off
		i := sort.Search(len(c), func(i int) bool { return c[i].end > s.off })
		for ; i < len(c) && c[i].off < s.end; i++ {
			if c[i].off > pos {
				out = append(out, span{pos, c[i].off})
			}
			pos = max(pos, c[i].end)
		}
		if pos < s.end {
			out = append(out, span{pos, s.end})
		}
	}
	return out
}

// piece is an object of the chain with the parts of it the newest backup's
// view of the volume takes (the rest later backups overwrote).
type piece struct {
	link  int
	obj   *object
	parts []span
}

// plan is what a restore reads: the volume's size and, by offset, the
// objects that hold some of its newest view.
type plan struct {
	size   int64
	pieces []piece
}

// makePlan lays the chain's objects over each other, later backups over
// earlier ones, as Cinder's restore writes them, and checks that they cover
// the volume and fit the newest backup's sha256file (whose blocks of
// blockSize bytes each object's offset must fall on).
func makePlan(c *loadedChain, sums *sha256File) (*plan, error) {
	var cov coverage
	p := &plan{}
	bs := sums.BlockSize
	for i := len(c.metas) - 1; i >= 0; i-- {
		m := c.metas[i]
		for k := range m.Objects {
			o := &m.Objects[k]
			if o.Offset%bs != 0 {
				return nil, &ObjectError{BackupID: m.BackupID, Object: c.links[i].objectName(o.Name), Err: fmt.Errorf("%w: offset %d is not on a %d-byte block", ErrCorrupt, o.Offset, bs)}
			}
			p.size = max(p.size, o.end())
			if o.Length == 0 {
				continue
			}
			if parts := cov.claim(span{o.Offset, o.end()}); len(parts) > 0 {
				p.pieces = append(p.pieces, piece{link: i, obj: o, parts: parts})
			}
		}
	}
	newest := c.links[len(c.links)-1]
	if len(cov) != 1 || cov[0].off != 0 {
		gap := span{0, p.size}
		if len(cov) > 0 && cov[0].off > 0 {
			gap.end = cov[0].off
		} else if len(cov) > 1 {
			gap = span{cov[0].end, cov[1].off}
		}
		return nil, fmt.Errorf("%w: backup %s: no object of the chain holds bytes [%d, %d) of the volume (is its full backup missing from the chain?)", ErrBrokenChain, newest.BackupID, gap.off, gap.end)
	}
	if want := (p.size + bs - 1) / bs; int64(len(sums.Sums)) != want {
		return nil, &ObjectError{BackupID: newest.BackupID, Object: newest.sha256FileName(), Err: fmt.Errorf("%w: %d block sums, but the chain's objects hold %d bytes, %d blocks of %d", ErrCorrupt, len(sums.Sums), p.size, want, bs)}
	}
	for _, pc := range p.pieces {
		if pc.obj.Length%bs != 0 && pc.obj.end() != p.size {
			return nil, &ObjectError{BackupID: c.links[pc.link].BackupID, Object: c.links[pc.link].objectName(pc.obj.Name), Err: fmt.Errorf("%w: %d bytes, not whole %d-byte blocks, before the end of the volume", ErrCorrupt, pc.obj.Length, bs)}
		}
	}
	sort.Slice(p.pieces, func(a, b int) bool { return p.pieces[a].obj.Offset < p.pieces[b].obj.Offset })
	return p, nil
}

// Info describes a chain's newest view of the volume.
type Info struct {
	// Size is the bytes of the volume the backups hold: the target of a
	// restore needs at least as many (Cinder's volumes are whole GiB, so
	// the record's SizeGB is usually more).
	Size int64
	// BlockSize is the sha256file's block (Cinder's default 32 KiB).
	BlockSize int64
	// Objects counts the data objects of every backup of the chain;
	// ObjectsRead those a restore reads (the others later backups
	// overwrote entirely).
	Objects, ObjectsRead int
}

// Inspect reads a chain's metadata and newest sha256file and checks that
// they fit together, without reading the data.
func Inspect(ctx context.Context, repo repository.Repository, chain []Link) (*Info, error) {
	c, p, sums, err := prepare(ctx, repo, chain)
	if err != nil {
		return nil, err
	}
	info := &Info{Size: p.size, BlockSize: sums.BlockSize, ObjectsRead: len(p.pieces)}
	for _, m := range c.metas {
		info.Objects += len(m.Objects)
	}
	return info, nil
}

// prepare loads a chain and plans its restore.
func prepare(ctx context.Context, repo repository.Repository, chain []Link) (*loadedChain, *plan, *sha256File, error) {
	c, err := loadChain(ctx, repo, chain)
	if err != nil {
		return nil, nil, nil, err
	}
	newest := chain[len(chain)-1]
	sums, err := readSHA256File(ctx, repo, newest)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := makePlan(c, sums)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, p, sums, nil
}
