package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/repository"
	"golang.org/x/sync/errgroup"
)

// ChunkError names a chunk that is missing or damaged.
type ChunkError struct {
	ChunkID string
	Offset  int64
	Err     error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("chunk %s at offset %d: %v", e.ChunkID, e.Offset, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// readChunk fetches and checks a chunk (fetchChunk, then openChunk).
func (e *Engine) readChunk(ctx context.Context, c *container, id string, off int64) ([]byte, error) {
	obj, err := e.fetchChunk(ctx, c, id, off, nil)
	if err != nil {
		return nil, err
	}
	return e.openChunk(c, id, off, obj, nil)
}

// fetchChunk reads a chunk's object, into objBuf's storage when it fits.
func (e *Engine) fetchChunk(ctx context.Context, c *container, id string, off int64, objBuf []byte) ([]byte, error) {
	obj, err := e.getInto(ctx, chunkName(c, id), objBuf)
	if errors.Is(err, repository.ErrNotFound) {
		return nil, &ChunkError{ChunkID: id, Offset: off, Err: fmt.Errorf("missing from the repository")}
	}
	return obj, err
}

// openChunk decodes a chunk's object and checks it: its plaintext must hash
// to its id. It decrypts in place in obj and may decompress into buf's
// storage (see openObject), so the plaintext may share storage with either.
func (e *Engine) openChunk(c *container, id string, off int64, obj, buf []byte) ([]byte, error) {
	plain, err := c.keys.openObject(e.dec, obj, buf)
	if err != nil {
		return nil, &ChunkError{ChunkID: id, Offset: off, Err: err}
	}
	if got := c.keys.chunkID(c.keys.hasher(), plain); got != id {
		return nil, &ChunkError{ChunkID: id, Offset: off, Err: fmt.Errorf("%w: content does not match its hash", ErrCorrupt)}
	}
	return plain, nil
}

// restoreReadAhead is how many bytes of chunk objects a restore may have
// read ahead of the chunks being decoded and written, beyond one per
// fetcher and one per worker (at least one chunk).
const restoreReadAhead = 32 << 20

// fetchedChunk is a chunk's object read from the repository (nil for a
// chunk of zeros), or for a chunk in pieces the objects its pieces name.
type fetchedChunk struct {
	i      int
	obj    []byte
	pieces map[string][]byte
}

// Restore writes a backup onto dst (at least the backup's size). All-zero
// chunks are written as zeros (punched holes where dst can), so holes stay
// holes. A missing or damaged chunk ends the restore with a *ChunkError.
func (e *Engine) Restore(ctx context.Context, containerName, backupID string, dst blockdev.Device, progress func(Progress)) error {
	m, err := e.LoadManifest(ctx, containerName, backupID)
	if err != nil {
		return err
	}
	c, _ := e.container(ctx, containerName)
	if dst.Size() < m.Size {
		return fmt.Errorf("engine: the target has %d bytes, the backup %d", dst.Size(), m.Size)
	}
	cs := int64(m.ChunkSize)
	var done atomic.Int64
	report := throttle(progress)
	jobs := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for i := range m.Chunks {
			select {
			case jobs <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	// Fetchers read objects, in the order of the chunks, up to
	// restoreReadAhead ahead of the workers, which decode, check and write
	// them: the repository's reads of a stretch of large objects (data
	// that did not compress) overlap the CPU work of the stretch before
	// (data that did). Object buffers go round through free, as in Backup.
	//
	// There is one worker more than Workers: a worker waits for each
	// write it makes (over NBD, for the volume manager's write to its
	// disk), and the spare one keeps the CPU busy meanwhile.
	fetchers, workers := e.opts.Workers, e.opts.Workers+1
	ahead := max(1, restoreReadAhead/int(cs))
	fetched := make(chan fetchedChunk, ahead)
	free := make(chan []byte, fetchers+workers+ahead)
	for range cap(free) {
		free <- nil
	}
	var fetching sync.WaitGroup
	for range fetchers {
		fetching.Add(1)
		g.Go(func() error {
			defer fetching.Done()
			for i := range jobs {
				f := fetchedChunk{i: i}
				if ps := m.Pieces[i]; ps != nil {
					// Pieces are few and far between: their objects get
					// buffers of their own.
					f.pieces = map[string][]byte{}
					for _, p := range ps {
						if _, ok := f.pieces[p.ID]; ok || p.ID == "" {
							continue
						}
						obj, err := e.fetchChunk(gctx, c, p.ID, int64(i)*cs, nil)
						if err != nil {
							return err
						}
						f.pieces[p.ID] = obj
					}
				} else if id := m.Chunks[i]; id != "" {
					var objBuf []byte
					select {
					case objBuf = <-free:
					case <-gctx.Done():
						return gctx.Err()
					}
					obj, err := e.fetchChunk(gctx, c, id, int64(i)*cs, objBuf)
					if err != nil {
						return err
					}
					f.obj = obj
				}
				select {
				case fetched <- f:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		fetching.Wait()
		close(fetched)
		return nil
	})
	for range workers {
		g.Go(func() error {
			// One plaintext buffer per worker, reused chunk after chunk.
			buf := make([]byte, 0, cs)
			var pb pieceBuffers
			for f := range fetched {
				off := int64(f.i) * cs
				length := min(cs, m.Size-off)
				if ps := m.Pieces[f.i]; ps != nil {
					if err := e.restorePieces(c, cs, ps, f.pieces, off, dst, &pb); err != nil {
						return err
					}
				} else if id := m.Chunks[f.i]; id == "" {
					if err := dst.Zero(off, length); err != nil {
						return fmt.Errorf("engine: zero the target at %d: %w", off, err)
					}
				} else {
					plain, err := e.openChunk(c, id, off, f.obj, buf)
					if err != nil {
						return err
					}
					if int64(len(plain)) != length {
						return &ChunkError{ChunkID: id, Offset: off, Err: fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(plain), length)}
					}
					if _, err := dst.WriteAt(plain, off); err != nil {
						return fmt.Errorf("engine: write the target at %d: %w", off, err)
					}
					// Written: the object's buffer is free.
					free <- f.obj
				}
				report(Progress{Done: done.Add(length), Total: m.Size}, false)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := dst.Flush(); err != nil {
		return fmt.Errorf("engine: flush the target: %w", err)
	}
	report(Progress{Done: m.Size, Total: m.Size}, true)
	return nil
}

// pieceBuffers are a restore worker's buffers for chunks stored in pieces,
// made at the first such chunk.
type pieceBuffers struct {
	chunk, plain []byte // plain: only ever passed to openChunk as its buf
}

// restorePieces writes a chunk stored in pieces at off (chunks of cs
// bytes) from objs, the objects its pieces name: each is checked once and
// its ranges copied into place; zero pieces are written as zeros (holes
// where dst can).
func (e *Engine) restorePieces(c *container, cs int64, ps []Piece, objs map[string][]byte, off int64, dst blockdev.Device, pb *pieceBuffers) error {
	if pb.chunk == nil {
		pb.chunk = make([]byte, cs)
		pb.plain = make([]byte, 0, cs)
	}
	var length int64
	for _, p := range ps {
		length += p.Length
	}
	if length > int64(len(pb.chunk)) {
		return fmt.Errorf("%w: the pieces at offset %d cover %d bytes, more than a chunk", ErrCorrupt, off, length)
	}
	chunk := pb.chunk[:length]
	done := make([]bool, len(ps))
	for k, p := range ps {
		if done[k] || p.ID == "" {
			continue
		}
		plain, err := e.openChunk(c, p.ID, off, objs[p.ID], pb.plain)
		if err != nil {
			return err
		}
		// Every piece of this object, here and further on.
		pos := int64(0)
		for q := range ps {
			if !done[q] && ps[q].ID == p.ID {
				if ps[q].Offset+ps[q].Length > int64(len(plain)) {
					return &ChunkError{ChunkID: p.ID, Offset: off + pos, Err: fmt.Errorf("%w: %d bytes, a piece needs %d", ErrCorrupt, len(plain), ps[q].Offset+ps[q].Length)}
				}
				copy(chunk[pos:pos+ps[q].Length], plain[ps[q].Offset:])
				done[q] = true
			}
			pos += ps[q].Length
		}
	}
	// Write runs of data pieces, and zero the zero pieces.
	pos := int64(0)
	for k := 0; k < len(ps); {
		start := pos
		zero := ps[k].ID == ""
		for k < len(ps) && (ps[k].ID == "") == zero {
			pos += ps[k].Length
			k++
		}
		if zero {
			if err := dst.Zero(off+start, pos-start); err != nil {
				return fmt.Errorf("engine: zero the target at %d: %w", off+start, err)
			}
		} else if _, err := dst.WriteAt(chunk[start:pos], off+start); err != nil {
			return fmt.Errorf("engine: write the target at %d: %w", off+start, err)
		}
	}
	return nil
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	ChunksChecked int64
	Damaged       []ChunkError
}

// Verify re-reads every chunk of a backup and checks it.
func (e *Engine) Verify(ctx context.Context, containerName, backupID string) (*VerifyReport, error) {
	m, err := e.LoadManifest(ctx, containerName, backupID)
	if err != nil {
		return nil, err
	}
	c, _ := e.container(ctx, containerName)
	// Each object once, with the bytes its pieces need of it.
	seen := map[string]int{}
	type item struct {
		id   string
		off  int64
		need int64
	}
	var items []item
	add := func(id string, off, need int64) {
		if k, ok := seen[id]; ok {
			items[k].need = max(items[k].need, need)
			return
		}
		seen[id] = len(items)
		items = append(items, item{id, off, need})
	}
	for i, id := range m.Chunks {
		off := int64(i) * int64(m.ChunkSize)
		if id != "" {
			add(id, off, chunkLength(m.Size, int64(m.ChunkSize), i))
		}
		for _, p := range m.Pieces[i] {
			if p.ID != "" {
				add(p.ID, off, p.Offset+p.Length)
			}
		}
	}
	rep := &VerifyReport{}
	results := make([]*ChunkError, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.opts.Workers)
	for k, it := range items {
		g.Go(func() error {
			plain, err := e.readChunk(gctx, c, it.id, it.off)
			if err == nil && int64(len(plain)) < it.need {
				err = &ChunkError{ChunkID: it.id, Offset: it.off, Err: fmt.Errorf("%w: %d bytes, the backup needs %d", ErrCorrupt, len(plain), it.need)}
			}
			var ce *ChunkError
			if errors.As(err, &ce) {
				results[k] = ce
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	rep.ChunksChecked = int64(len(items))
	for _, r := range results {
		if r != nil {
			rep.Damaged = append(rep.Damaged, *r)
		}
	}
	return rep, nil
}

// Delete removes a backup's manifest (and a lock a crashed backup left),
// then collects garbage. Other backups never depend on it: each manifest
// lists every chunk it needs. Deleting an absent backup is not an error.
func (e *Engine) Delete(ctx context.Context, containerName, backupID string) error {
	if err := checkBackupID(backupID); err != nil {
		return err
	}
	c, err := e.container(ctx, containerName)
	if err != nil {
		return err
	}
	if err := e.repo.Delete(ctx, manifestName(c, backupID)); err != nil {
		return fmt.Errorf("engine: delete the manifest: %w", err)
	}
	if err := e.repo.Delete(ctx, lockName(c, backupID)); err != nil {
		return err
	}
	_, err = e.GC(ctx, containerName)
	return err
}

// GCStats is what a collection did.
type GCStats struct {
	Skipped         bool // a backup was running: nothing was collected
	Referenced      int
	Deleted         int
	DeletedBytes    int64
	RunningBackups  int
	ManifestsListed int
}

// lockTTL is how old a backup lock may be before it is taken for a crash's
// leftover and ignored.
const lockTTL = 24 * time.Hour

// GC deletes the chunks no manifest references. While any backup is
// running (a fresh lock exists) it does nothing: a running backup may be
// reusing chunks that no finished manifest references any more.
func (e *Engine) GC(ctx context.Context, containerName string) (GCStats, error) {
	e.gcMu.Lock()
	defer e.gcMu.Unlock()
	var st GCStats
	c, err := e.container(ctx, containerName)
	if err != nil {
		return st, err
	}
	err = e.repo.List(ctx, c.name+"/locks/", func(o repository.ObjectInfo) error {
		if time.Since(o.ModTime) < lockTTL {
			st.RunningBackups++
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if st.RunningBackups > 0 {
		st.Skipped = true
		return st, nil
	}
	ref := map[string]bool{}
	var names []string
	if err := e.repo.List(ctx, c.name+"/manifests/", func(o repository.ObjectInfo) error {
		names = append(names, strings.TrimPrefix(o.Name, c.name+"/manifests/"))
		return nil
	}); err != nil {
		return st, err
	}
	for _, id := range names {
		m, err := e.loadManifest(ctx, c, id)
		if errors.Is(err, ErrNoBackup) {
			continue // deleted since the listing: it references nothing now
		}
		if err != nil {
			return st, fmt.Errorf("engine: gc cannot read manifest %s, so collects nothing: %w", id, err)
		}
		m.eachID(func(id string) { ref[id] = true })
	}
	st.ManifestsListed = len(names)
	st.Referenced = len(ref)
	var garbage []repository.ObjectInfo
	if err := e.repo.List(ctx, c.name+"/chunks/", func(o repository.ObjectInfo) error {
		id := o.Name[strings.LastIndex(o.Name, "/")+1:]
		if !ref[id] {
			garbage = append(garbage, o)
		}
		return nil
	}); err != nil {
		return st, err
	}
	for _, o := range garbage {
		if err := e.repo.Delete(ctx, o.Name); err != nil {
			return st, err
		}
		st.Deleted++
		st.DeletedBytes += o.Size
	}
	return st, nil
}

// Summary is a backup as its manifest tells it.
type Summary struct {
	BackupID, VolumeID, ParentID string
	Size                         int64
	DataChunks                   int64
	Finished                     time.Time
}

// ListBackups lists a container's backups from their manifests alone.
func (e *Engine) ListBackups(ctx context.Context, containerName string) ([]Summary, error) {
	c, err := e.container(ctx, containerName)
	if err != nil {
		return nil, err
	}
	var out []Summary
	err = e.repo.List(ctx, c.name+"/manifests/", func(o repository.ObjectInfo) error {
		m, err := e.loadManifest(ctx, c, strings.TrimPrefix(o.Name, c.name+"/manifests/"))
		if err != nil {
			return err
		}
		out = append(out, Summary{BackupID: m.BackupID, VolumeID: m.VolumeID, ParentID: m.ParentID, Size: m.Size, DataChunks: m.DataChunks, Finished: m.Finished})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Finished.After(out[j].Finished) })
	return out, err
}

// Record is an exported backup record.
type Record struct {
	Format     string `json:"format"`
	Repository string `json:"repository"`
	Container  string `json:"container"`
	BackupID   string `json:"backup_id"`
	VolumeID   string `json:"volume_id"`
	ParentID   string `json:"parent_id,omitempty"`
	Size       int64  `json:"size"`
	DataChunks int64  `json:"data_chunks"`
}

const recordFormat = "blockvault-backup-record/1"

// ExportRecord returns a record another deployment on the same repository
// can import.
func (e *Engine) ExportRecord(ctx context.Context, containerName, backupID string) ([]byte, error) {
	m, err := e.LoadManifest(ctx, containerName, backupID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Record{Format: recordFormat, Repository: e.repo.Location(), Container: containerName,
		BackupID: m.BackupID, VolumeID: m.VolumeID, ParentID: m.ParentID, Size: m.Size, DataChunks: m.DataChunks})
}

// ImportRecord checks a record against this repository (its manifest must
// be here and readable with this engine's key) and returns it.
func (e *Engine) ImportRecord(ctx context.Context, data []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil || r.Format != recordFormat {
		return nil, fmt.Errorf("%w: not a blockvault backup record", repository.ErrInvalidName)
	}
	m, err := e.LoadManifest(ctx, r.Container, r.BackupID)
	if err != nil {
		return nil, fmt.Errorf("engine: the record's backup is not readable in this repository: %w", err)
	}
	if m.VolumeID != r.VolumeID || m.Size != r.Size {
		return nil, fmt.Errorf("%w: the record does not match the manifest", ErrCorrupt)
	}
	return &r, nil
}
