package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

// Options configure an Engine.
type Options struct {
	// Key is the repository key (32 bytes or more); nil leaves new
	// containers unencrypted and opens only unencrypted ones.
	Key []byte
	// ChunkSize of new containers (default DefaultChunkSize).
	ChunkSize int
	// Workers per backup or restore (default GOMAXPROCS, at least 2; a
	// restore runs one more, since its workers wait for their writes).
	Workers int
	// Retries of a transient repository error (default 4).
	Retries int
	// MaxManifestPieces bounds the pieces one backup's manifest may hold
	// (default DefaultMaxManifestPieces); see boundPieces.
	MaxManifestPieces int
}

// Engine runs backups and restores against one repository.
type Engine struct {
	repo repository.Repository
	opts Options
	dec  *zstd.Decoder

	mu         sync.Mutex
	containers map[string]*container
	// gcMu lets one collection run at a time in this process.
	gcMu sync.Mutex
}

type container struct {
	name string
	cfg  *config
	keys *keys
}

// New returns an Engine on repo.
func New(repo repository.Repository, opts Options) (*Engine, error) {
	if opts.Key != nil && len(opts.Key) < 32 {
		return nil, fmt.Errorf("engine: the repository key must be at least 32 bytes, got %d", len(opts.Key))
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if cs := opts.ChunkSize; cs < MinChunkSize || cs > MaxChunkSize || cs&(cs-1) != 0 {
		return nil, fmt.Errorf("engine: chunk size %d: want a power of two from %d (64 KiB) to %d (64 MiB)", cs, MinChunkSize, MaxChunkSize)
	}
	if opts.Workers <= 0 {
		opts.Workers = max(runtime.GOMAXPROCS(0), 2)
	}
	if opts.Retries <= 0 {
		opts.Retries = 4
	}
	if opts.MaxManifestPieces <= 0 {
		opts.MaxManifestPieces = DefaultMaxManifestPieces
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(128<<20))
	if err != nil {
		return nil, err
	}
	return &Engine{repo: repo, opts: opts, dec: dec, containers: map[string]*container{}}, nil
}

// Repository is the engine's repository.
func (e *Engine) Repository() repository.Repository { return e.repo }

// retry runs op, retrying transient repository errors with capped
// exponential backoff.
func (e *Engine) retry(ctx context.Context, op func() error) error {
	delay := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil || !errors.Is(err, repository.ErrUnavailable) || attempt >= e.opts.Retries {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

func (e *Engine) get(ctx context.Context, name string) ([]byte, error) {
	return e.getInto(ctx, name, nil)
}

// getInto is get, reading into buf's storage where the repository can (see
// repository.BufferGetter).
func (e *Engine) getInto(ctx context.Context, name string, buf []byte) ([]byte, error) {
	var b []byte
	err := e.retry(ctx, func() error {
		var err error
		if bg, ok := e.repo.(repository.BufferGetter); ok {
			b, err = bg.GetInto(ctx, name, buf)
		} else {
			b, err = e.repo.Get(ctx, name)
		}
		return err
	})
	return b, err
}

func (e *Engine) put(ctx context.Context, name string, data []byte) error {
	return e.retry(ctx, func() error { return e.repo.Put(ctx, name, data) })
}

// container opens (creating on first use) a container's config.
func (e *Engine) container(ctx context.Context, name string) (*container, error) {
	if err := repository.ValidateName(name); err != nil || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%w: container %q must be one name segment", repository.ErrInvalidName, name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.containers[name]; c != nil {
		return c, nil
	}
	data, err := e.get(ctx, name+"/config")
	var cfg *config
	var k *keys
	switch {
	case errors.Is(err, repository.ErrNotFound):
		cfg, k, err = newConfig(e.opts.Key, e.opts.ChunkSize)
		if err != nil {
			return nil, err
		}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := e.put(ctx, name+"/config", b); err != nil {
			return nil, fmt.Errorf("engine: create container %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("engine: read container %s: %w", name, err)
	default:
		if cfg, k, err = openConfig(data, e.opts.Key); err != nil {
			return nil, fmt.Errorf("container %s: %w", name, err)
		}
	}
	c := &container{name: name, cfg: cfg, keys: k}
	e.containers[name] = c
	return c, nil
}

func chunkName(c *container, id string) string { return c.name + "/chunks/" + id[:2] + "/" + id }
func manifestName(c *container, id string) string {
	return c.name + "/manifests/" + id
}
func lockName(c *container, id string) string { return c.name + "/locks/" + id }

func checkBackupID(id string) error {
	if err := repository.ValidateName(id); err != nil || strings.Contains(id, "/") {
		return fmt.Errorf("%w: backup id %q", repository.ErrInvalidName, id)
	}
	return nil
}

// Progress of a backup or restore.
type Progress struct {
	Done, Total, Read, Stored int64
}

// Range is a byte range of a volume.
type Range struct{ Offset, Length int64 }

// BackupSpec is one backup to make.
type BackupSpec struct {
	BackupID, VolumeID, ParentID string
	// Changed lists the ranges that may differ from the parent; nil means
	// unknown (everything is read). Only used with a parent.
	Changed []Range
	// ReuseFrom names a backup (of the same container) whose chunks a full
	// backup need not store again: a chunk whose id its manifest lists is
	// referenced, not compressed and written anew. Garbage collection keeps
	// those chunks as it keeps a parent's: they are referenced by a manifest
	// while the backup runs, and by the new manifest after it. A backup
	// that cannot be read (deleted meanwhile) is passed over.
	ReuseFrom string
	Progress  func(Progress)
}

// LoadManifest reads and checks a backup's manifest.
func (e *Engine) LoadManifest(ctx context.Context, containerName, backupID string) (*Manifest, error) {
	if err := checkBackupID(backupID); err != nil {
		return nil, err
	}
	c, err := e.container(ctx, containerName)
	if err != nil {
		return nil, err
	}
	return e.loadManifest(ctx, c, backupID)
}

func (e *Engine) loadManifest(ctx context.Context, c *container, id string) (*Manifest, error) {
	data, err := e.get(ctx, manifestName(c, id))
	if errors.Is(err, repository.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNoBackup, id)
	}
	if err != nil {
		return nil, err
	}
	m, err := c.keys.decodeManifest(e.dec, data)
	if err != nil {
		return nil, fmt.Errorf("manifest of backup %s: %w", id, err)
	}
	return m, nil
}

// throttle calls fn at most every 200 ms, and always with final=true.
func throttle(fn func(Progress)) func(p Progress, final bool) {
	if fn == nil {
		return func(Progress, bool) {}
	}
	var mu sync.Mutex
	var last time.Time
	return func(p Progress, final bool) {
		mu.Lock()
		defer mu.Unlock()
		if final || time.Since(last) >= 200*time.Millisecond {
			last = time.Now()
			fn(p)
		}
	}
}

// Backup reads src into the container and writes the manifest last, once
// every chunk is durable. A failure leaves no manifest (the chunks already
// written are garbage for the next collection).
func (e *Engine) Backup(ctx context.Context, containerName string, src blockdev.Device, spec BackupSpec) (*Manifest, error) {
	if err := checkBackupID(spec.BackupID); err != nil {
		return nil, err
	}
	c, err := e.container(ctx, containerName)
	if err != nil {
		return nil, err
	}
	unlock, err := e.lockBackup(ctx, c, spec.BackupID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	b, err := e.newBackupRun(ctx, c, src, spec)
	if err != nil {
		return nil, err
	}
	if err := b.planRanges(e.opts.MaxManifestPieces); err != nil {
		return nil, err
	}
	if err := b.readSealAndStore(ctx); err != nil {
		return nil, err
	}
	if err := b.writeManifest(ctx); err != nil {
		return nil, err
	}
	b.progress(true)
	return b.m, nil
}

// lockBackup writes the lock that tells garbage collection a backup is
// running; unlock removes it.
func (e *Engine) lockBackup(ctx context.Context, c *container, backupID string) (unlock func(), err error) {
	if err := e.put(ctx, lockName(c, backupID), []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return nil, fmt.Errorf("engine: lock: %w", err)
	}
	return func() { e.repo.Delete(context.WithoutCancel(ctx), lockName(c, backupID)) }, nil
}

// backupRun is one backup under way: its plan, the manifest it fills, and
// its counters.
type backupRun struct {
	e    *Engine
	c    *container
	src  blockdev.Device
	spec BackupSpec
	size int64
	cs   int64 // the chunk size
	n    int   // the number of chunks
	m    *Manifest
	// parent is the manifest of spec.ParentID, nil without one.
	parent *Manifest
	// known holds the ids of the chunks the repository has for sure (the
	// parent's or ReuseFrom's, and those stored so far); knownMu guards it.
	knownMu sync.Mutex
	known   map[string]bool

	// The plan (planRanges): the chunks lying wholly in holes, those kept
	// from the parent (nil: none), and those stored in pieces (nil: none).
	holes []bool
	reuse []bool
	plans []*piecePlan

	done, read, stored, newChunks atomic.Int64
	report                        func(p Progress, final bool)
}

// newBackupRun starts the manifest of a backup and learns the chunks it
// need not store: the parent's, or else ReuseFrom's.
func (e *Engine) newBackupRun(ctx context.Context, c *container, src blockdev.Device, spec BackupSpec) (*backupRun, error) {
	size := src.Size()
	cs := int64(c.cfg.ChunkSize)
	n := int((size + cs - 1) / cs)
	b := &backupRun{e: e, c: c, src: src, spec: spec, size: size, cs: cs, n: n, known: map[string]bool{}, report: throttle(spec.Progress)}
	b.m = &Manifest{Version: FormatVersion, BackupID: spec.BackupID, VolumeID: spec.VolumeID, ParentID: spec.ParentID,
		Size: size, ChunkSize: c.cfg.ChunkSize, Started: time.Now().UTC(), Chunks: make([]string, n)}
	markKnown := func(id string) { b.known[id] = true }
	if spec.ParentID != "" {
		parent, err := e.loadManifest(ctx, c, spec.ParentID)
		if err != nil {
			return nil, fmt.Errorf("engine: parent: %w", err)
		}
		b.parent = parent
		parent.eachID(markKnown)
	} else if spec.ReuseFrom != "" && checkBackupID(spec.ReuseFrom) == nil {
		if ref, err := e.loadManifest(ctx, c, spec.ReuseFrom); err == nil {
			ref.eachID(markKnown)
		}
	}
	return b, nil
}

// progress reports the counters (throttled unless final).
func (b *backupRun) progress(final bool) {
	b.report(Progress{Done: b.done.Load(), Total: b.size, Read: b.read.Load(), Stored: b.stored.Load()}, final)
}

// planRanges decides what to read: where the source has data, and (with a
// parent and changed ranges) where something changed. A chunk that changed
// in a few small ranges is stored in pieces (see planPieces): only those
// ranges are read and stored.
func (b *backupRun) planRanges(maxPieces int) error {
	holes, err := holeChunks(b.src, b.size, b.cs, b.n)
	if err != nil {
		return fmt.Errorf("engine: source allocation: %w", err)
	}
	b.holes = holes
	p := b.parent
	if p == nil || b.spec.Changed == nil || p.ChunkSize != b.c.cfg.ChunkSize || p.Size != b.size {
		return nil
	}
	b.reuse = make([]bool, b.n)
	for i := range b.reuse {
		b.reuse[i] = true
	}
	b.plans = make([]*piecePlan, b.n)
	for i, rs := range b.changedInChunks() {
		b.plans[i] = planPieces(p.piecesOf(i, b.cs), rs, chunkLength(b.size, b.cs, i))
	}
	boundPieces(p, b.reuse, b.plans, maxPieces)
	return nil
}

// changedInChunks cuts the changed ranges at chunk boundaries: for each
// chunk touched, its changed ranges relative to the chunk's start. The
// chunks touched are no longer reused from the parent.
func (b *backupRun) changedInChunks() map[int][]Range {
	cs, size := b.cs, b.size
	changed := map[int][]Range{}
	for _, r := range b.spec.Changed {
		for i := max(r.Offset, 0) / cs; i < int64(b.n) && i*cs < r.Offset+r.Length; i++ {
			b.reuse[i] = false
			lo := max(r.Offset, i*cs)
			hi := min(r.Offset+r.Length, i*cs+chunkLength(size, cs, int(i)))
			if hi > lo {
				changed[int(i)] = append(changed[int(i)], Range{Offset: lo - i*cs, Length: hi - lo})
			}
		}
	}
	return changed
}

// readSealAndStore runs the pipeline: one goroutine turns the plan into
// jobs, workers read, hash and seal chunks, putters store them. Between
// workers and putters a queue of sealed objects lets the workers run ahead
// while the repository is busy (a stretch of incompressible data is bound
// by its writes, one of compressible data by the CPU), so the two overlap.
// Object buffers go round: a worker takes a free one to seal into, a
// putter frees it once stored; there are as many as the workers and
// putters hold plus putAhead, which bounds the memory.
func (b *backupRun) readSealAndStore(ctx context.Context) error {
	workers := b.e.opts.Workers
	putters := workers
	putAhead := max(1, backupPutAhead/int(b.cs))
	jobs := make(chan chunkJob)
	puts := make(chan sealedChunk, putAhead)
	free := make(chan []byte, workers+putters+putAhead)
	for range cap(free) {
		free <- nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		return b.sendJobs(gctx, jobs)
	})
	var sealing sync.WaitGroup
	for range workers {
		sealing.Add(1)
		g.Go(func() error {
			defer sealing.Done()
			return b.readAndSeal(gctx, jobs, free, puts)
		})
	}
	g.Go(func() error {
		sealing.Wait()
		close(puts)
		return nil
	})
	// Small objects (pieces, mostly) go through a batch where the
	// repository has one: made durable together before the manifest,
	// instead of one by one.
	var batch repository.Batch
	if rb, ok := b.e.repo.(repository.Batcher); ok {
		batch = rb.NewBatch()
	}
	for range putters {
		g.Go(func() error { return b.store(gctx, batch, puts, free) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if batch != nil {
		if err := b.e.retry(ctx, func() error { return batch.Sync(ctx) }); err != nil {
			return fmt.Errorf("engine: make the chunks durable: %w", err)
		}
	}
	return nil
}

// sendJobs walks the chunks in order: a hole or a chunk reused from the
// parent is done at once, a chunk with a piece plan sends a job per fresh
// piece, any other chunk a job for the whole chunk.
func (b *backupRun) sendJobs(ctx context.Context, jobs chan<- chunkJob) error {
	send := func(j chunkJob) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := 0; i < b.n; i++ {
		length := chunkLength(b.size, b.cs, i)
		switch {
		case b.holes[i]:
			b.done.Add(length)
		case b.reuse != nil && b.reuse[i]:
			b.m.Chunks[i] = b.parent.Chunks[i]
			if ps := b.parent.Pieces[i]; ps != nil {
				b.m.setPieces(i, ps)
			}
			b.done.Add(length)
		case b.plans != nil && b.plans[i] != nil:
			pl := b.plans[i]
			b.done.Add(length - pl.freshBytes())
			for f, k := range pl.fresh {
				if err := send(chunkJob{i: i, piece: k, off: int64(i)*b.cs + pl.freshAt[f], length: pl.freshLen[f]}); err != nil {
					return err
				}
			}
			continue
		default:
			if err := send(chunkJob{i: i, piece: -1, off: int64(i) * b.cs, length: length}); err != nil {
				return err
			}
			continue
		}
		b.progress(false)
	}
	return nil
}

// readAndSeal is one worker: it reads each job's range, names it by its
// hash, and seals (compresses, encrypts) into a free buffer what the
// repository does not have yet, for the putters.
func (b *backupRun) readAndSeal(ctx context.Context, jobs <-chan chunkJob, free chan []byte, puts chan<- sealedChunk) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return err
	}
	defer enc.Close()
	keys := b.c.keys
	h := keys.hasher()
	buf := make([]byte, b.cs)
	var scratch []byte // the compressed form of a chunk, reused
	for j := range jobs {
		off, length := j.off, j.length
		data := buf[:length]
		if _, err := b.src.ReadAt(data, off); err != nil {
			return fmt.Errorf("engine: read the source at %d: %w", off, err)
		}
		b.read.Add(length)
		if isZero(data) {
			b.done.Add(length)
			b.progress(false)
			continue
		}
		id := keys.chunkID(h, data)
		if j.piece < 0 {
			b.m.Chunks[j.i] = id
		} else {
			// Each job has its own piece: no other goroutine touches
			// this element until the workers are done.
			b.plans[j.i].pieces[j.piece].ID = id
		}
		if b.isKnown(id) {
			b.done.Add(length)
			b.progress(false)
			continue
		}
		var objBuf []byte
		select {
		case objBuf = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		obj, sc := keys.sealObject(enc, scratch, objBuf, data)
		scratch = sc
		select {
		case puts <- sealedChunk{id: id, obj: obj, length: length}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// isKnown reports whether chunk id is known (stored, or being stored), and
// makes it known.
func (b *backupRun) isKnown(id string) bool {
	b.knownMu.Lock()
	defer b.knownMu.Unlock()
	dup := b.known[id]
	b.known[id] = true
	return dup
}

// store is one putter: it puts each sealed chunk (small ones through
// batch, when there is one) and frees its buffer.
func (b *backupRun) store(ctx context.Context, batch repository.Batch, puts <-chan sealedChunk, free chan<- []byte) error {
	for p := range puts {
		put := b.e.repo.Put
		if batch != nil && len(p.obj) < batchedObjectMax {
			put = batch.Put
		}
		name := chunkName(b.c, p.id)
		if err := b.e.retry(ctx, func() error { return put(ctx, name, p.obj) }); err != nil {
			return fmt.Errorf("engine: store chunk %s: %w", p.id, err)
		}
		// Put is done with the object: its buffer is free.
		free <- p.obj
		b.stored.Add(int64(len(p.obj)))
		b.newChunks.Add(1)
		b.done.Add(p.length)
		b.progress(false)
	}
	return nil
}

// writeManifest completes the manifest (the pieces of the chunks stored in
// pieces, the counts) and writes it, the backup's last object.
func (b *backupRun) writeManifest(ctx context.Context) error {
	m := b.m
	for i, pl := range b.plans {
		if pl != nil && !b.holes[i] {
			m.setPieces(i, pl.pieces)
		}
	}
	for i := range m.Chunks {
		if m.hasData(i) {
			m.DataChunks++
		}
	}
	m.Finished = time.Now().UTC()
	m.NewChunks, m.NewBytes = b.newChunks.Load(), b.stored.Load()
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	obj, err := b.c.keys.encodeManifest(enc, m)
	enc.Close()
	if err != nil {
		return err
	}
	if err := b.e.put(ctx, manifestName(b.c, m.BackupID), obj); err != nil {
		return fmt.Errorf("engine: write the manifest: %w", err)
	}
	return nil
}

// backupPutAhead is how many bytes of sealed chunks a backup may hold
// waiting for the repository, beyond one per worker and one per putter (at
// least one chunk).
const backupPutAhead = 32 << 20

// chunkJob is a range of the source for a worker to read and store: a
// whole chunk (piece -1) or one piece of a chunk's plan.
type chunkJob struct {
	i, piece    int
	off, length int64
}

// batchedObjectMax: chunk objects smaller than this are put through the
// repository's batch (see repository.Batcher), larger ones one by one,
// durable as each put returns, and dropped from the page cache at once.
const batchedObjectMax = 256 << 10

// sealedChunk is a chunk ready to store.
type sealedChunk struct {
	id     string
	obj    []byte
	length int64
}

// holeChunks marks the chunks that lie wholly in holes of the source.
func holeChunks(src blockdev.Device, size, cs int64, n int) ([]bool, error) {
	holes := make([]bool, n)
	if size == 0 {
		return holes, nil
	}
	exts, err := src.Extents(0, size)
	if err != nil {
		return nil, err
	}
	for _, x := range exts {
		if !x.Hole && !x.Zero {
			continue
		}
		for i := (x.Offset + cs - 1) / cs; i < int64(n) && min((i+1)*cs, size) <= x.End(); i++ {
			holes[i] = true
		}
	}
	return holes, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
