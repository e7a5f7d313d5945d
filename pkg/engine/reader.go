package engine

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"golang.org/x/sync/errgroup"
)

// ErrClosed is returned by a BackupReader's reads after Close.
var ErrClosed = errors.New("engine: backup reader is closed")

// ReaderOptions configure a BackupReader.
type ReaderOptions struct {
	// CacheChunks is how many decoded chunks the reader keeps (default
	// 16; at 4 MiB chunks, 64 MiB). Chunks being fetched count on top.
	CacheChunks int
	// ReadAhead is how many chunks a sequential reader has fetched ahead
	// of it in the background (default 4; at most half of CacheChunks, so
	// what is fetched ahead stays cached until it is read; 0 with
	// NoReadAhead).
	ReadAhead int
	// NoReadAhead turns read-ahead off.
	NoReadAhead bool
}

// ReaderStats count what a BackupReader did.
type ReaderStats struct {
	// Fetches counts chunks fetched and decoded (read-ahead included).
	Fetches int64
	// Hits counts chunk reads served from the cache or from a fetch
	// another read had started.
	Hits int64
	// Prefetches counts the fetches read-ahead started.
	Prefetches int64
}

// BackupReader gives random access to one backup's volume: a read-only
// blockdev.Device whose reads fetch, decrypt, decompress and check the
// chunks they touch (see OpenBackup). It is safe for concurrent use.
type BackupReader struct {
	e    *Engine
	c    *container
	m    *Manifest
	cs   int64
	opts ReaderOptions

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // read-ahead fetches

	mu      sync.Mutex
	closed  bool
	entries map[int]*cachedChunk // cached and being fetched
	lru     *list.List           // of *cachedChunk, cached ones, most recent first
	ends    [8]int64             // where recent reads ended, to spot sequential readers
	endsAt  int
	ahead   int // read-ahead fetches running

	fetches, hits, prefetches atomic.Int64
}

// cachedChunk is a chunk's plaintext, or its fetch under way (done open).
type cachedChunk struct {
	i    int
	done chan struct{}
	data []byte
	err  error
	elem *list.Element // in lru once fetched
}

var _ blockdev.Device = (*BackupReader)(nil)

// OpenBackup opens a backup for random access: the returned reader is a
// read-only device of the backup's size whose reads are served from the
// repository. Each chunk a read touches is fetched, decoded and checked
// once and kept in a small cache; a sequential reader has the next chunks
// fetched ahead of it. A missing or damaged chunk fails the reads that
// touch it with a *ChunkError and leaves the reader usable. Close stops
// the read-ahead; ctx only bounds the opening (its values are kept).
func (e *Engine) OpenBackup(ctx context.Context, containerName, backupID string, opts ReaderOptions) (*BackupReader, error) {
	m, err := e.LoadManifest(ctx, containerName, backupID)
	if err != nil {
		return nil, err
	}
	c, err := e.container(ctx, containerName)
	if err != nil {
		return nil, err
	}
	if opts.CacheChunks <= 0 {
		opts.CacheChunks = 16
	}
	if opts.ReadAhead <= 0 {
		opts.ReadAhead = 4
	}
	opts.ReadAhead = min(opts.ReadAhead, opts.CacheChunks/2)
	if opts.NoReadAhead {
		opts.ReadAhead = 0
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &BackupReader{e: e, c: c, m: m, cs: int64(m.ChunkSize), opts: opts, ctx: rctx, cancel: cancel,
		entries: map[int]*cachedChunk{}, lru: list.New()}
	for k := range r.ends {
		r.ends[k] = -1
	}
	return r, nil
}

// Manifest is the backup's manifest.
func (r *BackupReader) Manifest() *Manifest { return r.m }

// Stats counts the reader's fetches and cache hits.
func (r *BackupReader) Stats() ReaderStats {
	return ReaderStats{Fetches: r.fetches.Load(), Hits: r.hits.Load(), Prefetches: r.prefetches.Load()}
}

// Size implements blockdev.Device: the backup's size.
func (r *BackupReader) Size() int64 { return r.m.Size }

// ReadOnly implements blockdev.Device: always true.
func (r *BackupReader) ReadOnly() bool { return true }

// WriteAt implements blockdev.Device: ErrReadOnly.
func (r *BackupReader) WriteAt([]byte, int64) (int, error) { return 0, blockdev.ErrReadOnly }

// Trim implements blockdev.Device: ErrReadOnly.
func (r *BackupReader) Trim(int64, int64) error { return blockdev.ErrReadOnly }

// Zero implements blockdev.Device: ErrReadOnly.
func (r *BackupReader) Zero(int64, int64) error { return blockdev.ErrReadOnly }

// Flush implements blockdev.Device: there is nothing to flush.
func (r *BackupReader) Flush() error { return nil }

// Close stops the read-ahead and drops the cache. Reads after Close
// return ErrClosed.
func (r *BackupReader) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	r.entries, r.lru = map[int]*cachedChunk{}, list.New()
	r.mu.Unlock()
	return nil
}

// Extents implements blockdev.Device: all-zero chunks (and the zero pieces
// of chunks in pieces) are holes, everything else data.
func (r *BackupReader) Extents(off, length int64) ([]blockdev.Extent, error) {
	if err := blockdev.CheckRange(r.m.Size, off, length); err != nil {
		return nil, err
	}
	var out []blockdev.Extent
	add := func(lo, hi int64, hole bool) {
		lo, hi = max(lo, off), min(hi, off+length)
		if hi <= lo {
			return
		}
		if n := len(out); n > 0 && out[n-1].Hole == hole && out[n-1].End() == lo {
			out[n-1].Length += hi - lo
			return
		}
		out = append(out, blockdev.Extent{Offset: lo, Length: hi - lo, Hole: hole, Zero: hole})
	}
	for i := int(off / r.cs); int64(i)*r.cs < off+length; i++ {
		start := int64(i) * r.cs
		if ps := r.m.Pieces[i]; ps != nil {
			pos := start
			for _, p := range ps {
				add(pos, pos+p.Length, p.ID == "")
				pos += p.Length
			}
			continue
		}
		add(start, start+chunkLength(r.m.Size, r.cs, i), r.m.Chunks[i] == "")
	}
	return out, nil
}

// ReadAt implements blockdev.Device.
func (r *BackupReader) ReadAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckRange(r.m.Size, off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	if r.sequential(off, end) {
		r.readAhead(int((end-1)/r.cs) + 1)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		i := int(pos / r.cs)
		within := pos - int64(i)*r.cs
		k := int(min(int64(len(p)-n), r.cs-within))
		if !r.m.hasData(i) {
			clear(p[n : n+k])
			n += k
			continue
		}
		data, err := r.chunk(i)
		if err != nil {
			return n, err
		}
		copy(p[n:n+k], data[within:])
		n += k
	}
	return n, nil
}

// sequential records a read of [off, end) and reports whether it starts
// where a recent read ended.
func (r *BackupReader) sequential(off, end int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq := false
	for _, e := range r.ends {
		if e == off {
			seq = true
			break
		}
	}
	r.ends[r.endsAt] = end
	r.endsAt = (r.endsAt + 1) % len(r.ends)
	return seq
}

// readAhead starts background fetches of the chunks with data from chunk
// first on, up to ReadAhead of them running at once.
func (r *BackupReader) readAhead(first int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := first; i < first+r.opts.ReadAhead && i < len(r.m.Chunks) && r.ahead < r.opts.ReadAhead && !r.closed; i++ {
		if !r.m.hasData(i) {
			continue
		}
		if _, ok := r.entries[i]; ok {
			continue
		}
		ent := r.startLocked(i)
		r.ahead++
		r.prefetches.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.fetch(ent)
			r.mu.Lock()
			r.ahead--
			r.mu.Unlock()
		}()
	}
}

// startLocked registers the fetch of chunk i, which the caller then runs.
func (r *BackupReader) startLocked(i int) *cachedChunk {
	ent := &cachedChunk{i: i, done: make(chan struct{})}
	r.entries[i] = ent
	return ent
}

// chunk returns chunk i's plaintext: from the cache, from a fetch under
// way, or fetched now. The slice is never written to afterwards.
func (r *BackupReader) chunk(i int) ([]byte, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	ent, ok := r.entries[i]
	if ok {
		if ent.elem != nil {
			r.lru.MoveToFront(ent.elem)
		}
		r.mu.Unlock()
		r.hits.Add(1)
		<-ent.done
		return ent.data, ent.err
	}
	ent = r.startLocked(i)
	r.mu.Unlock()
	r.fetch(ent)
	return ent.data, ent.err
}

// fetch fetches and decodes ent's chunk, then caches it (evicting the
// least recently used chunk beyond CacheChunks) or, on an error, forgets
// it so that the next read tries again.
func (r *BackupReader) fetch(ent *cachedChunk) {
	r.fetches.Add(1)
	ent.data, ent.err = r.decode(ent.i)
	r.mu.Lock()
	if ent.err != nil || r.closed {
		if r.entries[ent.i] == ent {
			delete(r.entries, ent.i)
		}
	} else {
		ent.elem = r.lru.PushFront(ent)
		for r.lru.Len() > r.opts.CacheChunks {
			old := r.lru.Remove(r.lru.Back()).(*cachedChunk)
			delete(r.entries, old.i)
		}
	}
	r.mu.Unlock()
	close(ent.done)
}

// decode fetches chunk i's object (or the objects its pieces name) and
// returns its checked plaintext, of the chunk's length.
func (r *BackupReader) decode(i int) ([]byte, error) {
	off := int64(i) * r.cs
	length := chunkLength(r.m.Size, r.cs, i)
	ps := r.m.Pieces[i]
	if ps == nil {
		id := r.m.Chunks[i]
		plain, err := r.e.readChunk(r.ctx, r.c, id, off)
		if err != nil {
			return nil, fmt.Errorf("engine: read backup %s at %d: %w", r.m.BackupID, off, err)
		}
		if int64(len(plain)) != length {
			return nil, &ChunkError{ChunkID: id, Offset: off, Err: fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(plain), length)}
		}
		return plain, nil
	}
	// A chunk in pieces: each object it names is fetched and checked
	// once, a few at a time, and its ranges copied into place.
	var ids []string
	seen := map[string]bool{}
	for _, p := range ps {
		if p.ID != "" && !seen[p.ID] {
			seen[p.ID] = true
			ids = append(ids, p.ID)
		}
	}
	plains := make([][]byte, len(ids))
	g, gctx := errgroup.WithContext(r.ctx)
	g.SetLimit(4)
	for k, id := range ids {
		g.Go(func() error {
			plain, err := r.e.readChunk(gctx, r.c, id, off)
			plains[k] = plain
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("engine: read backup %s at %d: %w", r.m.BackupID, off, err)
	}
	byID := make(map[string][]byte, len(ids))
	for k, id := range ids {
		byID[id] = plains[k]
	}
	chunk := make([]byte, length)
	pos := int64(0)
	for _, p := range ps {
		if pos+p.Length > length {
			return nil, fmt.Errorf("%w: the pieces at offset %d cover more than the chunk", ErrCorrupt, off)
		}
		if p.ID != "" {
			plain := byID[p.ID]
			if p.Offset+p.Length > int64(len(plain)) {
				return nil, &ChunkError{ChunkID: p.ID, Offset: off + pos, Err: fmt.Errorf("%w: %d bytes, a piece needs %d", ErrCorrupt, len(plain), p.Offset+p.Length)}
			}
			copy(chunk[pos:pos+p.Length], plain[p.Offset:])
		}
		pos += p.Length
	}
	return chunk, nil
}
