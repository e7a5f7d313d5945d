package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"golang.org/x/sync/errgroup"
)

// DialOptions configure a client connection.
type DialOptions struct {
	// ExportName is the export to attach (its name is its credential).
	ExportName string
	// TLSConfig, when set, upgrades the connection with NBD_OPT_STARTTLS.
	TLSConfig *tls.Config
	// MaxRequest caps one request's payload (default 4 MiB); larger reads
	// and writes are split and pipelined.
	MaxRequest int
	// StallTimeout, when set, breaks the connection when requests are
	// waiting and the server has sent nothing for that long (since the
	// last byte received or the last request sent): a server that hangs
	// then fails its requests (and a Reconnecting device dials again)
	// instead of holding its callers for ever. Slow transfers are not
	// stalls: every byte received counts.
	StallTimeout time.Duration
}

// Client is an NBD client attached to one export; it is a blockdev.Device.
// All methods are safe for concurrent use: requests from many goroutines
// are in flight at once on the one connection.
type Client struct {
	nc       net.Conn
	r        *bufio.Reader
	wmu      sync.Mutex
	w        *bufio.Writer
	size     int64
	flags    uint16
	metaID   uint32
	maxReq   int
	cookie   atomic.Uint64
	mu       sync.Mutex
	pending  map[uint64]*call
	err      error // set when the connection broke
	done     chan struct{}
	closeOne sync.Once
	// active is when a byte was last received or a request last sent
	// (unix nanoseconds), for the stall watchdog.
	active atomic.Int64
}

var _ blockdev.Device = (*Client)(nil)

type call struct {
	typ  uint16
	off  uint64
	buf  []byte // READ destination
	exts []blockdev.Extent
	err  error
	done chan struct{}
}

// Dial connects to addr and attaches the export.
func Dial(ctx context.Context, network, addr string, opts DialOptions) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial %s: %w", addr, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		nc.SetDeadline(deadline)
	}
	c := &Client{nc: nc, pending: map[uint64]*call{}, done: make(chan struct{}), maxReq: opts.MaxRequest}
	if c.maxReq <= 0 {
		c.maxReq = 4 << 20
	}
	c.use(nc)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	err = c.handshake(opts)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.nc.SetDeadline(time.Time{})
	go c.readLoop()
	if opts.StallTimeout > 0 {
		go c.watch(opts.StallTimeout)
	}
	return c, nil
}

// use makes nc the connection the client reads and writes (the TCP one,
// then its TLS layer after STARTTLS); reads go through activityReader.
func (c *Client) use(nc net.Conn) {
	c.nc = nc
	c.r = bufio.NewReaderSize(activityReader{c}, 256<<10)
	c.w = bufio.NewWriterSize(nc, 256<<10)
}

// activityReader reads the connection and notes when bytes arrive.
type activityReader struct{ c *Client }

func (a activityReader) Read(p []byte) (int, error) {
	n, err := a.c.nc.Read(p)
	if n > 0 {
		a.c.active.Store(time.Now().UnixNano())
	}
	return n, err
}

// watch breaks the connection when requests have waited stall without a
// byte from the server.
func (c *Client) watch(stall time.Duration) {
	t := time.NewTicker(max(stall/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.mu.Lock()
		waiting := len(c.pending)
		c.mu.Unlock()
		if waiting > 0 && time.Since(time.Unix(0, c.active.Load())) > stall {
			c.broke(fmt.Errorf("nbd: %d requests waiting and nothing from the server for %v: %w", waiting, stall, ErrStalled))
			c.nc.Close() // the read loop fails the requests
			return
		}
	}
}

func (c *Client) writeOption(opt uint32, data []byte) error {
	var h [16]byte
	binary.BigEndian.PutUint64(h[0:], optMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], uint32(len(data)))
	c.w.Write(h[:])
	c.w.Write(data)
	return c.w.Flush()
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *Client) readOptReply() (optReply, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return optReply{}, fmt.Errorf("nbd: handshake: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != optReplyMagic {
		return optReply{}, errors.New("nbd: handshake: bad option reply magic")
	}
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxOptionLen {
		return optReply{}, errors.New("nbd: handshake: option reply too large")
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:]), data: make([]byte, n)}
	_, err := io.ReadFull(c.r, r.data)
	return r, err
}

func (c *Client) handshake(opts DialOptions) error {
	var h [18]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return fmt.Errorf("nbd: handshake: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != nbdMagic || binary.BigEndian.Uint64(h[8:]) != optMagic {
		return errors.New("nbd: not a newstyle NBD server")
	}
	sflags := binary.BigEndian.Uint16(h[16:])
	if sflags&flagFixedNewstyle == 0 {
		return errors.New("nbd: the server does not speak fixed newstyle")
	}
	cflags := uint32(clientFixedNewstyle)
	if sflags&flagNoZeroes != 0 {
		cflags |= clientNoZeroes
	}
	var cf [4]byte
	binary.BigEndian.PutUint32(cf[:], cflags)
	c.w.Write(cf[:])

	if opts.TLSConfig != nil {
		if err := c.writeOption(optStartTLS, nil); err != nil {
			return err
		}
		r, err := c.readOptReply()
		if err != nil {
			return err
		}
		if r.typ != repAck {
			return fmt.Errorf("nbd: the server refused TLS (reply %#x)", r.typ)
		}
		tc := tls.Client(c.nc, opts.TLSConfig)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("nbd: tls: %w", err)
		}
		c.use(tc)
	}

	structured := false
	if err := c.writeOption(optStructuredReply, nil); err != nil {
		return err
	}
	r, err := c.readOptReply()
	if err != nil {
		return err
	}
	structured = r.typ == repAck

	name := []byte(opts.ExportName)
	if structured {
		q := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		q = append(q, name...)
		q = binary.BigEndian.AppendUint32(q, 1)
		q = binary.BigEndian.AppendUint32(q, uint32(len(MetaContextAllocation)))
		q = append(q, MetaContextAllocation...)
		if err := c.writeOption(optSetMetaContext, q); err != nil {
			return err
		}
		for {
			r, err := c.readOptReply()
			if err != nil {
				return err
			}
			if r.typ == repMetaContext && len(r.data) >= 4 && string(r.data[4:]) == MetaContextAllocation {
				c.metaID = binary.BigEndian.Uint32(r.data)
				continue
			}
			if r.typ == repErrUnknown {
				return fmt.Errorf("%w", ErrUnknownExport)
			}
			break // ACK, or an error: go on without block status
		}
	}

	g := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	g = append(g, name...)
	g = binary.BigEndian.AppendUint16(g, 1)
	g = binary.BigEndian.AppendUint16(g, infoBlockSize)
	if err := c.writeOption(optGo, g); err != nil {
		return err
	}
	gotExport := false
	for {
		r, err := c.readOptReply()
		if err != nil {
			return err
		}
		switch {
		case r.typ == repInfo && len(r.data) >= 2:
			switch binary.BigEndian.Uint16(r.data) {
			case infoExport:
				if len(r.data) != 12 {
					return errors.New("nbd: malformed export information")
				}
				c.size = int64(binary.BigEndian.Uint64(r.data[2:]))
				c.flags = binary.BigEndian.Uint16(r.data[10:])
				gotExport = true
			case infoBlockSize:
				if len(r.data) == 14 {
					if max := int(binary.BigEndian.Uint32(r.data[10:])); max > 0 && max < c.maxReq {
						c.maxReq = max
					}
				}
			}
		case r.typ == repAck:
			if !gotExport {
				return errors.New("nbd: the server sent no export information")
			}
			if !structured {
				c.metaID = 0
			}
			return nil
		case r.typ == repErrUnknown:
			return ErrUnknownExport
		case r.typ&repFlagError != 0:
			return fmt.Errorf("nbd: the server refused the export (reply %#x: %s)", r.typ, r.data)
		}
	}
}

// Size implements blockdev.Device.
func (c *Client) Size() int64 { return c.size }

// ReadOnly implements blockdev.Device.
func (c *Client) ReadOnly() bool { return c.flags&tflagReadOnly != 0 }

// CanBlockStatus reports whether base:allocation was negotiated.
func (c *Client) CanBlockStatus() bool { return c.metaID != 0 }

// broke records the first error that broke the connection: from then on
// new requests fail at once.
func (c *Client) broke(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// fail ends every request still waiting with the connection's error. Only
// the read loop calls it, as it leaves: it alone finishes requests, so a
// request it is filling is never finished twice or written after its
// caller has gone.
func (c *Client) fail(err error) {
	c.broke(err)
	c.mu.Lock()
	err = c.err
	pending := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	for _, cl := range pending {
		cl.err = fmt.Errorf("nbd: connection lost: %w", err)
		close(cl.done)
	}
}

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		if err := c.readReply(); err != nil {
			c.fail(err)
			c.nc.Close()
			return
		}
	}
}

// take finds the request a reply answers. It stays pending until its last
// reply has been read whole (finish): a connection that breaks in the
// middle of a reply fails it with the rest.
func (c *Client) take(cookie uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

// finish ends a request whose last reply has been read.
func (c *Client) finish(cookie uint64, cl *call) {
	c.mu.Lock()
	delete(c.pending, cookie)
	c.mu.Unlock()
	close(cl.done)
}

func (c *Client) readReply() error {
	var m [4]byte
	if _, err := io.ReadFull(c.r, m[:]); err != nil {
		return err
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case simpleReplyMagic:
		var h [12]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return err
		}
		errno := binary.BigEndian.Uint32(h[0:])
		cookie := binary.BigEndian.Uint64(h[4:])
		cl := c.take(cookie)
		if cl == nil {
			return errors.New("nbd: reply to an unknown request")
		}
		if errno != 0 {
			cl.err = errnoError(errno, "")
		} else if cl.typ == cmdRead {
			if _, err := io.ReadFull(c.r, cl.buf); err != nil {
				return err
			}
		}
		c.finish(cookie, cl)
		return nil
	case structuredReplyMagic:
		var h [16]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return err
		}
		flags := binary.BigEndian.Uint16(h[0:])
		typ := binary.BigEndian.Uint16(h[2:])
		cookie := binary.BigEndian.Uint64(h[4:])
		length := binary.BigEndian.Uint32(h[12:])
		cl := c.take(cookie)
		if cl == nil {
			return errors.New("nbd: reply to an unknown request")
		}
		if err := c.chunk(cl, typ, length); err != nil {
			return err
		}
		if flags&replyFlagDone != 0 {
			c.finish(cookie, cl)
		}
		return nil
	}
	return errors.New("nbd: bad reply magic")
}

func (c *Client) chunk(cl *call, typ uint16, length uint32) error {
	switch typ {
	case replyTypeNone:
		return nil
	case replyTypeOffsetData:
		if length < 8 || cl.typ != cmdRead {
			return errors.New("nbd: unexpected data chunk")
		}
		var o [8]byte
		if _, err := io.ReadFull(c.r, o[:]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(o[:])
		n := uint64(length - 8)
		if off < cl.off || off+n > cl.off+uint64(len(cl.buf)) {
			return errors.New("nbd: data chunk outside the request")
		}
		_, err := io.ReadFull(c.r, cl.buf[off-cl.off:off-cl.off+n])
		return err
	case replyTypeOffsetHole:
		if length != 12 || cl.typ != cmdRead {
			return errors.New("nbd: unexpected hole chunk")
		}
		var b [12]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(b[:])
		n := uint64(binary.BigEndian.Uint32(b[8:]))
		if off < cl.off || off+n > cl.off+uint64(len(cl.buf)) {
			return errors.New("nbd: hole chunk outside the request")
		}
		clear(cl.buf[off-cl.off : off-cl.off+n])
		return nil
	case replyTypeBlockStatus:
		if length < 4 || (length-4)%8 != 0 || length > 64<<20 {
			return errors.New("nbd: malformed block status chunk")
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(data) != c.metaID {
			return nil // another context
		}
		pos := int64(cl.off)
		for p := data[4:]; len(p) >= 8; p = p[8:] {
			n := int64(binary.BigEndian.Uint32(p))
			st := binary.BigEndian.Uint32(p[4:])
			cl.exts = append(cl.exts, blockdev.Extent{Offset: pos, Length: n, Hole: st&stateHole != 0, Zero: st&stateZero != 0})
			pos += n
		}
		return nil
	case replyTypeError, replyTypeErrorOffset:
		if length < 6 || length > maxOptionLen {
			return errors.New("nbd: malformed error chunk")
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return err
		}
		mlen := int(binary.BigEndian.Uint16(data[4:]))
		msg := ""
		if 6+mlen <= len(data) {
			msg = string(data[6 : 6+mlen])
		}
		cl.err = errnoError(binary.BigEndian.Uint32(data), msg)
		return nil
	}
	// Unknown chunk type: skip its payload.
	if length > 64<<20 {
		return errors.New("nbd: oversized unknown chunk")
	}
	_, err := io.CopyN(io.Discard, c.r, int64(length))
	return err
}

func errnoError(errno uint32, msg string) error {
	e := &Error{Errno: errno, Message: msg}
	switch errno {
	case errPerm:
		return fmt.Errorf("%w: %w", blockdev.ErrReadOnly, e)
	case errInval:
		return fmt.Errorf("%w: %w", blockdev.ErrOutOfRange, e)
	}
	return e
}

// do sends one request and waits for its reply.
func (c *Client) do(typ, flags uint16, off uint64, length uint32, payload, buf []byte) (*call, error) {
	cl := &call{typ: typ, off: off, buf: buf, done: make(chan struct{})}
	cookie := c.cookie.Add(1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.pending[cookie] = cl
	c.mu.Unlock()
	c.active.Store(time.Now().UnixNano())

	var h [28]byte
	binary.BigEndian.PutUint32(h[0:], requestMagic)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], cookie)
	binary.BigEndian.PutUint64(h[16:], off)
	binary.BigEndian.PutUint32(h[24:], length)
	c.wmu.Lock()
	c.w.Write(h[:])
	c.w.Write(payload)
	err := c.w.Flush()
	c.wmu.Unlock()
	if err != nil {
		// The read loop sees the closed connection and fails every
		// request waiting, this one too.
		c.broke(err)
		c.nc.Close()
	}
	<-cl.done
	return cl, cl.err
}

// pieces runs fn over [off, off+n) split into requests of at most
// maxReq bytes, all in flight at once (at most 16 per call).
func (c *Client) pieces(off int64, n int, fn func(off int64, lo, hi int) error) error {
	if n <= c.maxReq {
		return fn(off, 0, n)
	}
	var g errgroup.Group
	g.SetLimit(16)
	for lo := 0; lo < n; lo += c.maxReq {
		hi := min(lo+c.maxReq, n)
		g.Go(func() error { return fn(off+int64(lo), lo, hi) })
	}
	return g.Wait()
}

// ReadAt implements blockdev.Device.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckRange(c.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	err := c.pieces(off, len(p), func(o int64, lo, hi int) error {
		_, err := c.do(cmdRead, 0, uint64(o), uint32(hi-lo), nil, p[lo:hi])
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt implements blockdev.Device.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if c.ReadOnly() {
		return 0, blockdev.ErrReadOnly
	}
	if err := blockdev.CheckRange(c.size, off, int64(len(p))); err != nil {
		return 0, err
	}
	err := c.pieces(off, len(p), func(o int64, lo, hi int) error {
		_, err := c.do(cmdWrite, 0, uint64(o), uint32(hi-lo), p[lo:hi], nil)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush implements blockdev.Device.
func (c *Client) Flush() error {
	if c.flags&tflagSendFlush == 0 {
		return nil
	}
	_, err := c.do(cmdFlush, 0, 0, 0, nil, nil)
	return err
}

func (c *Client) ranged(typ uint16, flags uint16, off, length int64) error {
	if c.ReadOnly() {
		return blockdev.ErrReadOnly
	}
	if err := blockdev.CheckRange(c.size, off, length); err != nil {
		return err
	}
	for length > 0 {
		n := min(length, 1<<30)
		if _, err := c.do(typ, flags, uint64(off), uint32(n), nil, nil); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Trim implements blockdev.Device.
func (c *Client) Trim(off, length int64) error {
	if c.flags&tflagSendTrim == 0 {
		return c.Zero(off, length)
	}
	return c.ranged(cmdTrim, 0, off, length)
}

// Zero implements blockdev.Device (WRITE_ZEROES, holes allowed).
func (c *Client) Zero(off, length int64) error {
	if c.flags&tflagSendWriteZeroes == 0 {
		zeros := make([]byte, min(length, 4<<20))
		for length > 0 {
			n := min(length, int64(len(zeros)))
			if _, err := c.WriteAt(zeros[:n], off); err != nil {
				return err
			}
			off += n
			length -= n
		}
		return nil
	}
	return c.ranged(cmdWriteZeroes, 0, off, length)
}

// Extents implements blockdev.Device with BLOCK_STATUS; without the
// base:allocation context the whole range is reported as data.
func (c *Client) Extents(off, length int64) ([]blockdev.Extent, error) {
	if err := blockdev.CheckRange(c.size, off, length); err != nil {
		return nil, err
	}
	if c.metaID == 0 {
		return []blockdev.Extent{{Offset: off, Length: length}}, nil
	}
	var out []blockdev.Extent
	end := off + length
	for off < end {
		n := min(end-off, 1<<30)
		cl, err := c.do(cmdBlockStatus, 0, uint64(off), uint32(n), nil, nil)
		if err != nil {
			return nil, err
		}
		if len(cl.exts) == 0 {
			return nil, errors.New("nbd: empty block status reply")
		}
		for _, e := range cl.exts {
			if e.Offset >= end {
				break
			}
			e.Length = min(e.Length, end-e.Offset)
			if k := len(out); k > 0 && out[k-1].Hole == e.Hole && out[k-1].Zero == e.Zero && out[k-1].End() == e.Offset {
				out[k-1].Length += e.Length
			} else {
				out = append(out, e)
			}
			off = e.End()
		}
	}
	return out, nil
}

// Close sends NBD_CMD_DISC and closes the connection.
func (c *Client) Close() error {
	c.closeOne.Do(func() {
		var h [28]byte
		binary.BigEndian.PutUint32(h[0:], requestMagic)
		binary.BigEndian.PutUint16(h[6:], cmdDisc)
		c.wmu.Lock()
		c.w.Write(h[:])
		c.w.Flush()
		c.wmu.Unlock()
		c.nc.Close()
		<-c.done
	})
	return nil
}
