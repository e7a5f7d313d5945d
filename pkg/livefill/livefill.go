// Package livefill makes a block device usable while it is being filled
// from another: the instant restore of a backup. A Device is served (over
// NBD, say) from the first moment, read-write, over a target device that a
// background fill copies a read-only source onto, region by region.
//
//   - A read of a region the target has is read from the target; of any
//     other region, from the source (and the fill is asked to copy that
//     region next).
//   - A write is never overwritten by the fill: a write into a region not
//     yet filled reads the region from the source, merges the write, writes
//     the whole region to the target and marks it filled, under the
//     region's lock, which the fill takes too.
//   - A state file records which regions are filled and durable on the
//     target. Before a write is acknowledged, every region it touches is
//     durable there: the target is flushed first, then the bitmap's bits
//     are written and fdatasync'd. Concurrent writers share one flush and
//     one fdatasync (group commit). So a crash never loses an acknowledged
//     write to the fill: reopening the state resumes the fill where it
//     was, and the regions written stay as they were written.
//   - Fill copies every region still to fill, several at a time, skipping
//     the source's holes, and persists its progress every SyncEvery bytes;
//     when every region is filled the device passes everything straight
//     to the target.
//
// The package knows nothing of backups: source and target are plain
// blockdev.Device values (an engine.BackupReader or an NBD client to one,
// a driver's volume).
package livefill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"golang.org/x/sync/errgroup"
)

// Errors.
var (
	// ErrBadState: the state file is not one, or is damaged.
	ErrBadState = errors.New("livefill: bad state file")
	// ErrMismatch: the state file is of another fill (another source,
	// size or region size).
	ErrMismatch = errors.New("livefill: the state file is of another fill")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("livefill: device is closed")
	// ErrFillRunning: Fill was called while another Fill runs.
	ErrFillRunning = errors.New("livefill: a fill is already running")
)

// DefaultRegionSize is the default unit of the fill and of its state.
const DefaultRegionSize = 1 << 20

// Options configure a Device.
type Options struct {
	// SourceID identifies the source (a backup's id, say). It is kept in
	// the state file, and a state file of another source is refused with
	// ErrMismatch, so a resumed fill never copies the wrong data.
	SourceID string
	// RegionSize is the unit of the fill (a power of two from 4 KiB to
	// 64 MiB; default DefaultRegionSize). A write into a region not yet
	// filled costs a read of the region from the source and a write of it
	// to the target.
	RegionSize int64
	// TargetZeroed says the target reads all zeros (a fresh volume): a
	// fresh fill does not write the source's holes. A resumed fill writes
	// zeros there anyway, since the target may have been written since.
	TargetZeroed bool
	// Workers is how many regions Fill copies at once (default 4).
	Workers int
	// SyncEvery is how many bytes Fill copies between two flushes of the
	// target and of the state (default 64 MiB): what a crash makes it copy
	// again at most.
	SyncEvery int64
	// RetryFor is how long Fill retries a region whose source read fails
	// (with backoff) before it gives up and returns the error (default one
	// minute).
	RetryFor time.Duration
	// Rate caps the fill at Rate bytes a second (0: full speed), to leave
	// the source and the target to the volume's users. Reads and writes
	// are not paced.
	Rate int64
}

func (o *Options) setDefaults() error {
	if o.RegionSize == 0 {
		o.RegionSize = DefaultRegionSize
	}
	if rs := o.RegionSize; rs < 4096 || rs > 64<<20 || rs&(rs-1) != 0 {
		return fmt.Errorf("livefill: region size %d: want a power of two from 4 KiB to 64 MiB", rs)
	}
	if len(o.SourceID) > MaxSourceIDLen {
		return fmt.Errorf("livefill: source identity of %d bytes, at most %d", len(o.SourceID), MaxSourceIDLen)
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.SyncEvery <= 0 {
		o.SyncEvery = 64 << 20
	}
	if o.RetryFor <= 0 {
		o.RetryFor = time.Minute
	}
	return nil
}

// Device is a blockdev.Device over a target being filled from a source.
// It is safe for concurrent use, with Fill running.
type Device struct {
	target, source blockdev.Device
	opts           Options
	size           int64 // the target's
	fillSize       int64 // the source's: the bytes the fill copies
	rs             int64
	n              int64 // regions
	state          *os.File
	resumed        bool
	bufs           sync.Pool

	complete atomic.Bool
	filling  atomic.Bool
	closed   atomic.Bool

	mu         sync.Mutex
	cond       *sync.Cond // signalled when a commit ends or a region unlocks
	filled     []byte     // bitmap: the region's content is on the target
	durable    []byte     // bitmap: ... and recorded in the state file
	nFilled    int64
	nDurable   int64
	busy       map[int64]bool // regions locked
	pending    []int64        // filled, not yet durable
	gen        uint64         // the commit that new marks go to
	durableGen uint64         // the marks of commits < durableGen are durable
	committing bool
	commitErr  error // sticky: the state can no longer be made durable

	disk  []byte // the bitmap as written; only the committer uses it
	hints chan int64

	fillMu     sync.Mutex
	fillCancel context.CancelFunc // of the Fill running
	fillDone   sync.WaitGroup
}

var _ blockdev.Device = (*Device)(nil)

// Open returns a Device over target that fills it from source, with its
// state in the file at statePath: a fresh fill when there is no file
// there, else the fill that file records (resumed where it was durable).
// source may be nil when the state says the fill is complete. Source and
// target stay the caller's: Close closes neither.
func Open(target, source blockdev.Device, statePath string, opts Options) (*Device, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if target.ReadOnly() {
		return nil, fmt.Errorf("livefill: the target: %w", blockdev.ErrReadOnly)
	}
	d := &Device{target: target, source: source, opts: opts, size: target.Size(), rs: opts.RegionSize,
		busy: map[int64]bool{}, hints: make(chan int64, 64)}
	d.cond = sync.NewCond(&d.mu)
	d.bufs.New = func() any { b := make([]byte, d.rs); return &b }

	f, err := os.OpenFile(statePath, os.O_RDWR, 0)
	switch {
	case err == nil:
		h, bm, err := readState(f)
		if err == nil {
			err = d.checkState(h, source)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", statePath, err)
		}
		d.state, d.resumed, d.fillSize, d.filled = f, true, h.fillSize, bm
	case errors.Is(err, os.ErrNotExist):
		if source == nil {
			return nil, fmt.Errorf("livefill: a new fill needs a source")
		}
		d.fillSize = source.Size()
		if d.fillSize > d.size {
			return nil, fmt.Errorf("livefill: the target has %d bytes, the source %d", d.size, d.fillSize)
		}
		h := header{fillSize: d.fillSize, regionSize: d.rs, regions: regionsOf(d.fillSize, d.rs), sourceID: opts.SourceID}
		if d.state, err = createState(statePath, h); err != nil {
			return nil, err
		}
		d.filled = make([]byte, bitmapLen(h.regions))
	default:
		return nil, fmt.Errorf("livefill: open the state file: %w", err)
	}
	d.n = regionsOf(d.fillSize, d.rs)
	d.durable = append([]byte(nil), d.filled...)
	d.disk = append([]byte(nil), d.filled...)
	d.nFilled = countBits(d.filled)
	d.nDurable = d.nFilled
	d.complete.Store(d.nDurable == d.n)
	if !d.complete.Load() && source == nil {
		d.state.Close()
		return nil, fmt.Errorf("livefill: the fill is not complete and needs a source")
	}
	return d, nil
}

func (d *Device) checkState(h header, source blockdev.Device) error {
	switch {
	case h.sourceID != d.opts.SourceID:
		return fmt.Errorf("%w: it fills from %q, not %q", ErrMismatch, h.sourceID, d.opts.SourceID)
	case h.regionSize != d.rs:
		return fmt.Errorf("%w: regions of %d bytes, not %d", ErrMismatch, h.regionSize, d.rs)
	case source != nil && h.fillSize != source.Size():
		return fmt.Errorf("%w: a source of %d bytes, not %d", ErrMismatch, h.fillSize, source.Size())
	case h.fillSize > d.size:
		return fmt.Errorf("%w: a source of %d bytes, more than the target's %d", ErrMismatch, h.fillSize, d.size)
	}
	return nil
}

// Complete says whether every region is filled and durable: the device
// then passes everything straight to the target, and the state file may
// be removed.
func (d *Device) Complete() bool { return d.complete.Load() }

// Progress is how many bytes of the source are filled on the target, of
// how many.
func (d *Device) Progress() (done, total int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.filledBytesLocked(), d.fillSize
}

func (d *Device) filledBytesLocked() int64 {
	done := d.nFilled * d.rs
	if d.n > 0 && bitSet(d.filled, d.n-1) {
		done -= d.n*d.rs - d.fillSize // the last region is short
	}
	return done
}

func bitSet(bm []byte, i int64) bool { return bm[i/8]&(1<<(i%8)) != 0 }
func setBit(bm []byte, i int64)      { bm[i/8] |= 1 << (i % 8) }

// regionRange is region i's bytes.
func (d *Device) regionRange(i int64) (off, length int64) {
	off = i * d.rs
	return off, min(d.rs, d.fillSize-off)
}

// Size implements blockdev.Device: the target's size.
func (d *Device) Size() int64 { return d.size }

// ReadOnly implements blockdev.Device: false.
func (d *Device) ReadOnly() bool { return false }

// isFilled says whether region i's content is on the target.
func (d *Device) isFilled(i int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bitSet(d.filled, i)
}

// runs splits [off, off+length) into runs of regions that are all filled
// (or lie past the source: the target's alone) or all not, and calls fn
// for each in order.
func (d *Device) runs(off, length int64, fn func(lo, hi int64, filled bool) error) error {
	end := off + length
	for off < end {
		if off >= d.fillSize {
			return fn(off, end, true)
		}
		i := off / d.rs
		f := d.isFilled(i)
		hi := min(end, (i+1)*d.rs)
		for hi < end && hi < d.fillSize && d.isFilled(hi/d.rs) == f {
			hi = min(end, hi+d.rs)
		}
		if hi > d.fillSize && !f {
			hi = d.fillSize
		}
		if err := fn(off, hi, f); err != nil {
			return err
		}
		off = hi
	}
	return nil
}

// ReadAt implements blockdev.Device. Filled regions are read from the
// target, the others from the source; a source error fails this read only.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if d.complete.Load() {
		return d.target.ReadAt(p, off)
	}
	if err := blockdev.CheckRange(d.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	err := d.runs(off, int64(len(p)), func(lo, hi int64, filled bool) error {
		b := p[lo-off : hi-off]
		if filled {
			if _, err := d.target.ReadAt(b, lo); err != nil {
				return fmt.Errorf("livefill: read the target at %d: %w", lo, err)
			}
			return nil
		}
		d.hint(lo / d.rs)
		if _, err := d.source.ReadAt(b, lo); err != nil {
			return fmt.Errorf("livefill: read the source at %d: %w", lo, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// hint asks a running fill to copy region i soon.
func (d *Device) hint(i int64) {
	if !d.filling.Load() {
		return
	}
	select {
	case d.hints <- i:
	default:
	}
}

// op is a change to the device: data written, or a range zeroed or
// trimmed (data nil).
type op struct {
	data []byte
	trim bool
}

// WriteAt implements blockdev.Device. It returns once the regions it
// touches are durable in the state: a crash after it returned never lets
// the fill overwrite it.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := d.modify(off, int64(len(p)), op{data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Zero implements blockdev.Device, like WriteAt.
func (d *Device) Zero(off, length int64) error { return d.modify(off, length, op{}) }

// Trim implements blockdev.Device, like WriteAt: later reads return zeros.
func (d *Device) Trim(off, length int64) error { return d.modify(off, length, op{trim: true}) }

// apply does o's part [lo, hi) (absolute offsets; o.data starts at base)
// on the target.
func (d *Device) apply(o op, base, lo, hi int64) error {
	var err error
	switch {
	case o.data != nil:
		_, err = d.target.WriteAt(o.data[lo-base:hi-base], lo)
	case o.trim:
		err = d.target.Trim(lo, hi-lo)
	default:
		err = d.target.Zero(lo, hi-lo)
	}
	if err != nil {
		return fmt.Errorf("livefill: write the target at %d: %w", lo, err)
	}
	return nil
}

func (d *Device) modify(off, length int64, o op) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if err := blockdev.CheckRange(d.size, off, length); err != nil {
		return err
	}
	if d.complete.Load() {
		return d.apply(o, off, off, off+length)
	}
	wait := false
	for pos := off; pos < off+length; {
		if pos >= d.fillSize {
			if err := d.apply(o, off, pos, off+length); err != nil {
				return err
			}
			break
		}
		i := pos / d.rs
		rOff, rLen := d.regionRange(i)
		hi := min(off+length, rOff+rLen)
		durable, err := d.modifyRegion(i, o, off, pos, hi)
		if err != nil {
			return err
		}
		wait = wait || !durable
		pos = hi
	}
	if !wait {
		return nil
	}
	d.mu.Lock()
	g := d.gen
	d.mu.Unlock()
	return d.commit(g)
}

// modifyRegion does o's part [lo, hi) within region i, filling the region
// first (source merged with the change, under the region's lock) when it
// is not yet. It says whether the region was durable already.
func (d *Device) modifyRegion(i int64, o op, base, lo, hi int64) (durable bool, err error) {
	d.mu.Lock()
	if d.commitErr != nil {
		err := d.commitErr
		d.mu.Unlock()
		return false, err
	}
	if bitSet(d.filled, i) {
		durable = bitSet(d.durable, i)
		d.mu.Unlock()
		return durable, d.apply(o, base, lo, hi)
	}
	d.mu.Unlock()

	d.lock(i)
	defer d.unlock(i)
	if d.isFilled(i) { // the fill or another write was first
		return false, d.apply(o, base, lo, hi)
	}
	rOff, rLen := d.regionRange(i)
	if lo == rOff && hi == rOff+rLen && o.data == nil {
		// Zeroed or trimmed whole: nothing of the source is needed.
		if err := d.apply(o, base, lo, hi); err != nil {
			return false, err
		}
	} else {
		bp := d.bufs.Get().(*[]byte)
		defer d.bufs.Put(bp)
		buf := (*bp)[:rLen]
		if lo > rOff || hi < rOff+rLen {
			if _, err := d.source.ReadAt(buf, rOff); err != nil {
				return false, fmt.Errorf("livefill: read the source at %d: %w", rOff, err)
			}
		}
		if o.data != nil {
			copy(buf[lo-rOff:], o.data[lo-base:hi-base])
		} else {
			clear(buf[lo-rOff : hi-rOff])
		}
		if _, err := d.target.WriteAt(buf, rOff); err != nil {
			return false, fmt.Errorf("livefill: write the target at %d: %w", rOff, err)
		}
	}
	d.markFilled(i)
	return false, nil
}

// lock takes region i's lock.
func (d *Device) lock(i int64) {
	d.mu.Lock()
	for d.busy[i] {
		d.cond.Wait()
	}
	d.busy[i] = true
	d.mu.Unlock()
}

func (d *Device) unlock(i int64) {
	d.mu.Lock()
	delete(d.busy, i)
	d.cond.Broadcast()
	d.mu.Unlock()
}

// markFilled records that region i's content is on the target; the next
// commit makes that durable.
func (d *Device) markFilled(i int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !bitSet(d.filled, i) {
		setBit(d.filled, i)
		d.nFilled++
		d.pending = append(d.pending, i)
	}
}

// commit returns once the marks of commit g (and before) are durable: it
// runs a commit itself when none is running, else waits for the one that
// is and then, if that did not cover g, runs or waits for the next. A
// commit flushes the target, then writes the new bits of the bitmap and
// fdatasyncs the state file; the marks made meanwhile go to the next.
func (d *Device) commit(g uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.durableGen <= g {
		if d.commitErr != nil {
			return d.commitErr
		}
		if d.committing {
			d.cond.Wait()
			continue
		}
		d.committing = true
		regs := d.pending
		d.pending = nil
		this := d.gen
		d.gen++
		d.mu.Unlock()
		err := d.persist(regs)
		d.mu.Lock()
		d.committing = false
		if err != nil {
			d.commitErr = err
		} else {
			for _, i := range regs {
				setBit(d.durable, i)
			}
			d.nDurable += int64(len(regs))
			d.durableGen = this + 1
			if d.nDurable == d.n {
				d.complete.Store(true)
			}
		}
		d.cond.Broadcast()
	}
	return nil
}

// persist makes regions durable in the state: the target flushed first,
// then their bits written and fdatasync'd.
func (d *Device) persist(regs []int64) error {
	if len(regs) == 0 {
		return nil
	}
	if err := d.target.Flush(); err != nil {
		return fmt.Errorf("livefill: flush the target: %w", err)
	}
	lo, hi := int64(len(d.disk)), int64(0)
	for _, i := range regs {
		setBit(d.disk, i)
		lo, hi = min(lo, i/8), max(hi, i/8+1)
	}
	return writeBitmap(d.state, d.disk, lo, hi)
}

// Flush implements blockdev.Device: the target's flush (every write
// returned has its regions durable in the state already).
func (d *Device) Flush() error {
	if d.closed.Load() {
		return ErrClosed
	}
	return d.target.Flush()
}

// Extents implements blockdev.Device: the target's allocation where it is
// filled, the source's elsewhere.
func (d *Device) Extents(off, length int64) ([]blockdev.Extent, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if d.complete.Load() {
		return d.target.Extents(off, length)
	}
	if err := blockdev.CheckRange(d.size, off, length); err != nil {
		return nil, err
	}
	var out []blockdev.Extent
	err := d.runs(off, length, func(lo, hi int64, filled bool) error {
		dev := d.source
		if filled {
			dev = d.target
		}
		xs, err := dev.Extents(lo, hi-lo)
		if err != nil {
			return err
		}
		for _, x := range xs {
			if n := len(out); n > 0 && out[n-1].Hole == x.Hole && out[n-1].Zero == x.Zero && out[n-1].End() == x.Offset {
				out[n-1].Length += x.Length
				continue
			}
			out = append(out, x)
		}
		return nil
	})
	return out, err
}

// Close commits what is filled and closes the state file; a Fill running
// returns ErrClosed. It closes neither the target nor the source.
func (d *Device) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	d.fillMu.Lock()
	if d.fillCancel != nil {
		d.fillCancel()
	}
	d.fillMu.Unlock()
	d.fillDone.Wait()
	d.mu.Lock()
	g := d.gen
	d.mu.Unlock()
	err := d.commit(g)
	d.mu.Lock()
	for d.committing {
		d.cond.Wait()
	}
	d.mu.Unlock()
	return errors.Join(err, d.state.Close())
}

// Fill copies every region not yet filled from the source to the target,
// Workers at a time (the regions reads asked for first), and persists its
// progress every SyncEvery bytes; progress, when not nil, is called with
// the bytes filled (at most every 200 ms, and at the end), one call at a
// time. Regions the
// source reports as holes are zeroed, or only marked on a fresh fill with
// TargetZeroed. A source read that fails is retried with backoff for
// RetryFor, then Fill returns its error, having committed what it filled.
// It returns nil once every region is filled and durable: the device is
// Complete.
func (d *Device) Fill(ctx context.Context, progress func(done, total int64)) error {
	if d.complete.Load() {
		report(progress, d)
		return nil
	}
	if d.filling.Swap(true) {
		return ErrFillRunning
	}
	defer d.filling.Store(false)
	d.fillMu.Lock()
	if d.closed.Load() {
		d.fillMu.Unlock()
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.fillCancel = cancel
	d.fillDone.Add(1)
	defer d.fillDone.Done()
	d.fillMu.Unlock()
	var sinceSync atomic.Int64
	var lastReport atomic.Int64
	var reportMu sync.Mutex // workers report one at a time
	started, paced := time.Now(), &atomic.Int64{}
	jobs := make(chan int64)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		return d.sendRegions(gctx, jobs)
	})
	for range d.opts.Workers {
		g.Go(func() error {
			for i := range jobs {
				if d.closed.Load() {
					return ErrClosed
				}
				n, err := d.fillRegion(gctx, i)
				if err != nil {
					return err
				}
				if err := d.pace(gctx, started, paced.Add(n)); err != nil {
					return err
				}
				if sinceSync.Add(n) >= d.opts.SyncEvery {
					sinceSync.Store(0)
					d.mu.Lock()
					gen := d.gen
					d.mu.Unlock()
					if err := d.commit(gen); err != nil {
						return err
					}
				}
				if now := time.Now().UnixNano(); now-lastReport.Load() >= int64(200*time.Millisecond) {
					lastReport.Store(now)
					reportMu.Lock()
					report(progress, d)
					reportMu.Unlock()
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if d.closed.Load() {
		return ErrClosed
	}
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	if cerr := d.commit(gen); err == nil {
		err = cerr
	}
	report(progress, d)
	if err != nil {
		return err
	}
	if !d.complete.Load() {
		done, total := d.Progress()
		return fmt.Errorf("livefill: the fill ended with %d of %d bytes filled", done, total)
	}
	return nil
}

// pace waits until filling copied bytes since started keeps to
// Options.Rate.
func (d *Device) pace(ctx context.Context, started time.Time, copied int64) error {
	if d.opts.Rate <= 0 {
		return nil
	}
	due := started.Add(time.Duration(float64(copied) / float64(d.opts.Rate) * float64(time.Second)))
	if w := time.Until(due); w > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w):
		}
	}
	return nil
}

func report(progress func(done, total int64), d *Device) {
	if progress != nil {
		progress(d.Progress())
	}
}

// sendRegions sends the regions to fill: those reads asked for first,
// then the rest in order, each once it is known not filled.
func (d *Device) sendRegions(ctx context.Context, jobs chan<- int64) error {
	next := int64(0)
	for {
		var i int64
		select {
		case i = <-d.hints:
		default:
			for next < d.n && d.isFilled(next) {
				next++
			}
			if next >= d.n {
				return nil
			}
			i = next
			next++
		}
		if d.isFilled(i) {
			continue
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fillRegion copies region i from the source unless it is filled, and
// returns the bytes it wrote.
func (d *Device) fillRegion(ctx context.Context, i int64) (int64, error) {
	if d.isFilled(i) {
		return 0, nil
	}
	rOff, rLen := d.regionRange(i)
	hole, err := d.sourceHole(ctx, rOff, rLen)
	if err != nil {
		return 0, err
	}
	var bp *[]byte
	if !hole {
		// The source never changes: read it before taking the lock,
		// so a write into this region waits only for the target's write.
		bp = d.bufs.Get().(*[]byte)
		defer d.bufs.Put(bp)
		if err := d.retry(ctx, rOff, func() error {
			_, err := d.source.ReadAt((*bp)[:rLen], rOff)
			return err
		}); err != nil {
			return 0, err
		}
	}
	d.lock(i)
	defer d.unlock(i)
	if d.isFilled(i) {
		return 0, nil
	}
	switch {
	case hole && d.opts.TargetZeroed && !d.resumed:
	case hole:
		if err := d.target.Zero(rOff, rLen); err != nil {
			return 0, fmt.Errorf("livefill: zero the target at %d: %w", rOff, err)
		}
	default:
		if _, err := d.target.WriteAt((*bp)[:rLen], rOff); err != nil {
			return 0, fmt.Errorf("livefill: write the target at %d: %w", rOff, err)
		}
	}
	d.markFilled(i)
	return rLen, nil
}

// sourceHole says whether the source reads zeros over [off, off+length).
func (d *Device) sourceHole(ctx context.Context, off, length int64) (bool, error) {
	var xs []blockdev.Extent
	err := d.retry(ctx, off, func() error {
		var err error
		xs, err = d.source.Extents(off, length)
		return err
	})
	if err != nil {
		return false, err
	}
	for _, x := range xs {
		if !x.Zero && !x.Hole {
			return false, nil
		}
	}
	return true, nil
}

// retry runs op until it succeeds, with backoff, for RetryFor at most.
func (d *Device) retry(ctx context.Context, off int64, op func() error) error {
	start := time.Now()
	delay := 50 * time.Millisecond
	for {
		err := op()
		if err == nil {
			return nil
		}
		left := d.opts.RetryFor - time.Since(start)
		if errors.Is(err, blockdev.ErrOutOfRange) || left <= 0 || d.closed.Load() {
			return fmt.Errorf("livefill: read the source at %d: %w", off, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(delay, left)):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
