package engine

import "sort"

// An incremental backup with changed ranges stores a chunk that changed in
// a few small ranges in pieces: each changed range (rounded out to
// pieceAlign) is read and stored as an object of its own, and the rest of
// the chunk is described as ranges of the objects the parent's manifest
// already uses for it. A 1 MiB change at a random offset then costs about
// 1 MiB read and stored instead of one or two whole chunks (4 to 8 MiB).
//
// A chunk changed in so many places or so much of it that the pieces and
// their objects would cost half the chunk or more is read and stored whole
// as before; so is every chunk of a full backup, which is how
// a chain's pieces are folded back into whole chunks.
const (
	// pieceAlign is the granularity of pieces: block-sized reads.
	pieceAlign = 4096
	// pieceMergeGap: changed ranges closer than this are read as one piece
	// (reading the gap costs less than another object).
	pieceMergeGap = 64 << 10
	// pieceCost is what one more object costs, counted in bytes read and
	// stored: a chunk is stored in pieces when their bytes plus pieceCost
	// for each come to less than half the chunk.
	pieceCost = 64 << 10
	// maxPieces bounds how many pieces a chunk may have over a chain of
	// incrementals, so a restore fetches a bounded number of objects per
	// chunk; a chunk that would have more is read whole again.
	maxPieces = 32
	// DefaultMaxManifestPieces bounds the pieces of one manifest (a piece
	// takes about 100 bytes of it, and as much memory while a backup or
	// restore holds it): 2^18 is some 26 MB, about what the chunk list of
	// a 1.5 TiB volume takes. Without a bound, scattered writes all over a
	// large volume could give every chunk maxPieces pieces (3 KB each).
	DefaultMaxManifestPieces = 1 << 18
)

// piecePlan is how a backup stores a chunk in pieces: pieces[k] for each k
// in fresh is read from the source (its ID is filled in once stored, or
// stays "" when it reads all zeros); the others come from the parent.
//
// Once workers fill in IDs, only they touch pieces: what the planner needs
// of the fresh pieces is kept aside (freshAt, freshLen).
type piecePlan struct {
	pieces   []Piece
	fresh    []int
	freshAt  []int64 // where each fresh piece starts in the chunk
	freshLen []int64
}

// freshBytes is how many bytes the plan reads from the source.
func (p *piecePlan) freshBytes() int64 {
	var n int64
	for _, l := range p.freshLen {
		n += l
	}
	return n
}

// piecesOf describes chunk i of the manifest as pieces.
func (m *Manifest) piecesOf(i int, cs int64) []Piece {
	if ps := m.Pieces[i]; ps != nil {
		return ps
	}
	return []Piece{{Length: chunkLength(m.Size, cs, i), ID: m.Chunks[i]}}
}

// setPieces records chunk i as ps, merged: neighbouring zero pieces and
// neighbouring ranges of one object become one piece, and a chunk of
// zeros is "".
func (m *Manifest) setPieces(i int, ps []Piece) {
	var out []Piece
	for _, p := range ps {
		if p.ID == "" {
			p.Offset = 0
		}
		if k := len(out) - 1; k >= 0 && out[k].ID == p.ID && (p.ID == "" || out[k].Offset+out[k].Length == p.Offset) {
			out[k].Length += p.Length
			continue
		}
		out = append(out, p)
	}
	m.Chunks[i] = ""
	if m.Pieces != nil {
		delete(m.Pieces, i)
	}
	if len(out) == 1 && out[0].ID == "" {
		return
	}
	if m.Pieces == nil {
		m.Pieces = map[int][]Piece{}
	}
	m.Pieces[i] = out
}

// planPieces plans a chunk of length bytes, described by the parent as
// base, that changed in the ranges changed (offsets within the chunk). It
// returns nil when the chunk should be read and stored whole.
func planPieces(base []Piece, changed []Range, length int64) *piecePlan {
	rs := make([]Range, 0, len(changed))
	for _, r := range changed {
		lo := max(0, r.Offset) / pieceAlign * pieceAlign
		hi := min(length, (r.Offset+r.Length+pieceAlign-1)/pieceAlign*pieceAlign)
		if hi > lo {
			rs = append(rs, Range{Offset: lo, Length: hi - lo})
		}
	}
	if len(rs) == 0 {
		return nil
	}
	sort.Slice(rs, func(a, b int) bool { return rs[a].Offset < rs[b].Offset })
	merged := rs[:1]
	for _, r := range rs[1:] {
		last := &merged[len(merged)-1]
		if end := last.Offset + last.Length; r.Offset <= end+pieceMergeGap {
			last.Length = max(end, r.Offset+r.Length) - last.Offset
			continue
		}
		merged = append(merged, r)
	}
	var total int64
	for _, r := range merged {
		total += r.Length
	}
	if 2*(total+int64(len(merged))*pieceCost) >= length {
		return nil
	}
	pl := &piecePlan{}
	pos := int64(0)
	for _, r := range merged {
		pl.pieces = appendRange(pl.pieces, base, pos, r.Offset)
		pl.fresh = append(pl.fresh, len(pl.pieces))
		pl.freshAt = append(pl.freshAt, r.Offset)
		pl.freshLen = append(pl.freshLen, r.Length)
		pl.pieces = append(pl.pieces, Piece{Length: r.Length})
		pos = r.Offset + r.Length
	}
	pl.pieces = appendRange(pl.pieces, base, pos, length)
	if len(pl.pieces) > maxPieces {
		return nil
	}
	return pl
}

// boundPieces keeps the manifest an incremental backup will write under
// limit pieces: while the chunks that would be in pieces (planned in
// plans, or kept from the parent where reuse says so) have more than limit
// pieces in all, the chunk with the most pieces (at equal counts the
// first) is read and stored whole instead. The chunks it picks are those
// where pieces save the least.
func boundPieces(parent *Manifest, reuse []bool, plans []*piecePlan, limit int) {
	type cand struct{ i, n int }
	var cands []cand
	total := 0
	for i := range plans {
		n := 0
		switch {
		case plans[i] != nil:
			n = len(plans[i].pieces)
		case reuse[i]:
			n = len(parent.Pieces[i])
		}
		if n > 0 {
			cands = append(cands, cand{i, n})
			total += n
		}
	}
	if total <= limit {
		return
	}
	sort.Slice(cands, func(a, b int) bool {
		if cands[a].n != cands[b].n {
			return cands[a].n > cands[b].n
		}
		return cands[a].i < cands[b].i
	})
	for _, c := range cands {
		if total <= limit {
			return
		}
		plans[c.i], reuse[c.i] = nil, false
		total -= c.n
	}
}

// appendRange appends the pieces that describe bytes [from, to) of a chunk
// described by base.
func appendRange(out, base []Piece, from, to int64) []Piece {
	pos := int64(0)
	for _, p := range base {
		lo, hi := max(from, pos), min(to, pos+p.Length)
		if hi > lo {
			q := Piece{Length: hi - lo, ID: p.ID}
			if p.ID != "" {
				q.Offset = p.Offset + lo - pos
			}
			out = append(out, q)
		}
		pos += p.Length
	}
	return out
}
