package nbd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
)

// Broken reports the error that broke the client's connection, or nil
// while it is up.
func (c *Client) Broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Reconnecting is a Device over an NBD export that survives a dropped
// connection: when the connection breaks it dials the export again (with
// backoff) and retries the requests that failed with it. Reads, writes,
// flushes, trims, zeroing and block status are all idempotent on a block
// device, so a retried request does what the lost one would have. Errors
// the server answers (EPERM, EINVAL, EIO...) are returned as they are; a
// connection that stays down past the retry window returns its error.
type Reconnecting struct {
	dial   func(ctx context.Context) (*Client, error)
	window time.Duration

	mu     sync.Mutex
	c      *Client
	gen    int
	closed bool

	reconnects atomic.Int64
}

var _ blockdev.Device = (*Reconnecting)(nil)

// DialReconnecting dials addr like Dial and keeps reconnecting for up to
// window after each break.
func DialReconnecting(ctx context.Context, network, addr string, opts DialOptions, window time.Duration) (*Reconnecting, error) {
	dial := func(ctx context.Context) (*Client, error) { return Dial(ctx, network, addr, opts) }
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	return &Reconnecting{dial: dial, window: window, c: c}, nil
}

// Reconnects counts the connections made again after a break.
func (r *Reconnecting) Reconnects() int64 { return r.reconnects.Load() }

func (r *Reconnecting) current() (*Client, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c, r.gen
}

// redial replaces the broken connection of generation gen (unless another
// caller already has).
func (r *Reconnecting) redial(gen int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.gen != gen {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := r.dial(ctx)
	if err != nil {
		return err
	}
	if nc.Size() != r.c.Size() {
		nc.Close()
		return fmt.Errorf("nbd: the export came back with size %d, was %d", nc.Size(), r.c.Size())
	}
	r.c.Close()
	r.c, r.gen = nc, r.gen+1
	r.reconnects.Add(1)
	return nil
}

// retry runs op, and again on a new connection while the old one broke.
func (r *Reconnecting) retry(op func(c *Client) error) error {
	deadline := time.Now().Add(r.window)
	delay := 100 * time.Millisecond
	for {
		c, gen := r.current()
		err := op(c)
		if err == nil || c.Broken() == nil {
			return err // done, or the server's own answer
		}
		for {
			if time.Now().After(deadline) {
				return fmt.Errorf("%w (no reconnection within %v)", err, r.window)
			}
			rerr := r.redial(gen)
			if rerr == nil {
				break
			}
			if errors.Is(rerr, ErrClosed) || errors.Is(rerr, ErrUnknownExport) {
				// Closed here, or the export is gone for good: no retrying.
				return fmt.Errorf("%w (reconnecting: %w)", err, rerr)
			}
			time.Sleep(delay)
			delay = min(delay*2, 2*time.Second)
		}
	}
}

// Size implements blockdev.Device.
func (r *Reconnecting) Size() int64 { c, _ := r.current(); return c.Size() }

// ReadOnly implements blockdev.Device.
func (r *Reconnecting) ReadOnly() bool { c, _ := r.current(); return c.ReadOnly() }

// ReadAt implements blockdev.Device.
func (r *Reconnecting) ReadAt(p []byte, off int64) (n int, err error) {
	err = r.retry(func(c *Client) error { n, err = c.ReadAt(p, off); return err })
	return n, err
}

// WriteAt implements blockdev.Device.
func (r *Reconnecting) WriteAt(p []byte, off int64) (n int, err error) {
	err = r.retry(func(c *Client) error { n, err = c.WriteAt(p, off); return err })
	return n, err
}

// Flush implements blockdev.Device.
func (r *Reconnecting) Flush() error { return r.retry(func(c *Client) error { return c.Flush() }) }

// Trim implements blockdev.Device.
func (r *Reconnecting) Trim(off, length int64) error {
	return r.retry(func(c *Client) error { return c.Trim(off, length) })
}

// Zero implements blockdev.Device.
func (r *Reconnecting) Zero(off, length int64) error {
	return r.retry(func(c *Client) error { return c.Zero(off, length) })
}

// Extents implements blockdev.Device.
func (r *Reconnecting) Extents(off, length int64) (ext []blockdev.Extent, err error) {
	err = r.retry(func(c *Client) error { ext, err = c.Extents(off, length); return err })
	return ext, err
}

// Close implements blockdev.Device.
func (r *Reconnecting) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.c.Close()
}
