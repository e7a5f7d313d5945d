package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	Logger *slog.Logger
	// TLSConfig, when set, makes TLS mandatory (NBD_OPT_STARTTLS).
	TLSConfig *tls.Config
	// InFlight caps the requests handled at once per connection (default 16).
	InFlight int
	// HandshakeTimeout bounds the option haggling (default 30 s).
	HandshakeTimeout time.Duration
}

// Server serves exports over NBD.
type Server struct {
	opts ServerOptions
	log  *slog.Logger

	mu        sync.Mutex
	exports   map[string]*export
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

type export struct {
	name     string
	dev      blockdev.Device
	readOnly bool
	conns    map[*conn]struct{}
}

// NewServer returns a Server with no exports.
func NewServer(opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 16
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 30 * time.Second
	}
	return &Server{opts: opts, log: opts.Logger, exports: map[string]*export{},
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
}

// AddExport publishes dev under name.
func (s *Server) AddExport(name string, dev blockdev.Device, readOnly bool) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("nbd: export name must be 1 to %d bytes", maxNameLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.exports[name]; ok {
		return fmt.Errorf("nbd: export exists")
	}
	s.exports[name] = &export{name: name, dev: dev, readOnly: readOnly || dev.ReadOnly(), conns: map[*conn]struct{}{}}
	return nil
}

// RemoveExport unpublishes name: new connections are refused at once, and
// the connections using it are closed once their requests in flight are
// answered. It returns when they are closed. An absent name is not an error.
func (s *Server) RemoveExport(name string) error {
	s.mu.Lock()
	e := s.exports[name]
	delete(s.exports, name)
	var conns []*conn
	if e != nil {
		for c := range e.conns {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stop()
	}
	for _, c := range conns {
		c.wait(10 * time.Second)
	}
	return nil
}

// Exports lists the exported names (for tests and metrics).
func (s *Server) Exports() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.exports))
	for n := range s.exports {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Connections is the number of open connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Serve accepts connections on ln until it is closed or Shutdown is called.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			delete(s.listeners, ln)
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		c := &conn{srv: s, nc: nc, done: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// ServeConn serves one connection (for tests and fuzzing).
func (s *Server) ServeConn(nc net.Conn) {
	c := &conn{srv: s, nc: nc, done: make(chan struct{})}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.serve()
}

// Shutdown stops accepting, closes every connection after its requests in
// flight, and waits (until ctx is done).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			c.nc.Close()
		}
		return ctx.Err()
	}
}

// conn is one client connection.
type conn struct {
	srv *Server
	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer

	exp        *export
	structured bool
	metaID     uint32 // base:allocation context id, 0 = not negotiated

	stopOnce sync.Once
	wmu      sync.Mutex
	inflight sync.WaitGroup
	done     chan struct{}
}

func (c *conn) stop() {
	c.stopOnce.Do(func() {
		// Wake the reader; the serve loop then waits for the requests in
		// flight and closes the connection.
		c.nc.SetReadDeadline(time.Now())
	})
}

func (c *conn) wait(d time.Duration) {
	select {
	case <-c.done:
	case <-time.After(d):
		c.nc.Close()
		<-c.done
	}
}

func (c *conn) serve() {
	defer close(c.done)
	defer func() {
		c.inflight.Wait()
		c.nc.Close()
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		if c.exp != nil {
			delete(c.exp.conns, c)
		}
		c.srv.mu.Unlock()
	}()
	c.r = bufio.NewReaderSize(c.nc, 64<<10)
	c.w = bufio.NewWriterSize(c.nc, 64<<10)
	c.nc.SetDeadline(time.Now().Add(c.srv.opts.HandshakeTimeout))
	if err := c.handshake(); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, errAbort) {
			c.srv.log.Debug("nbd handshake ended", "remote", c.nc.RemoteAddr().String(), "err", err)
		}
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.transmit()
}

var errAbort = errors.New("nbd: client aborted")

func (c *conn) readFull(b []byte) error {
	_, err := io.ReadFull(c.r, b)
	return err
}

func (c *conn) handshake() error {
	var hdr [18]byte
	binary.BigEndian.PutUint64(hdr[0:], nbdMagic)
	binary.BigEndian.PutUint64(hdr[8:], optMagic)
	binary.BigEndian.PutUint16(hdr[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hdr[:]); err != nil {
		return err
	}
	var cf [4]byte
	if err := c.readFull(cf[:]); err != nil {
		return err
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^uint32(clientFixedNewstyle|clientNoZeroes) != 0 {
		return fmt.Errorf("unknown client flags %#x", clientFlags)
	}
	noZeroes := clientFlags&clientNoZeroes != 0
	tlsDone := c.srv.opts.TLSConfig == nil

	for {
		var oh [16]byte
		if err := c.readFull(oh[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(oh[0:]) != optMagic {
			return fmt.Errorf("bad option magic")
		}
		opt := binary.BigEndian.Uint32(oh[8:])
		length := binary.BigEndian.Uint32(oh[12:])
		if length > maxOptionLen {
			// Too big to read: refuse and drop the connection.
			return fmt.Errorf("option %d of %d bytes is too large", opt, length)
		}
		data := make([]byte, length)
		if err := c.readFull(data); err != nil {
			return err
		}
		if !tlsDone && opt != optStartTLS && opt != optAbort {
			if opt == optExportName {
				return fmt.Errorf("export name before TLS")
			}
			if err := c.optReply(opt, repErrTLSReqd, []byte("TLS is required")); err != nil {
				return err
			}
			continue
		}
		switch opt {
		case optExportName:
			e := c.lookup(string(data))
			if e == nil {
				return fmt.Errorf("unknown export (old-style), closing")
			}
			var r [10]byte
			binary.BigEndian.PutUint64(r[0:], uint64(e.dev.Size()))
			binary.BigEndian.PutUint16(r[8:], transmissionFlags(e))
			c.w.Write(r[:])
			if !noZeroes {
				c.w.Write(make([]byte, 124))
			}
			if err := c.w.Flush(); err != nil {
				return err
			}
			return c.attach(e)
		case optAbort:
			c.optReply(opt, repAck, nil)
			return errAbort
		case optList:
			if length != 0 {
				if err := c.optReply(opt, repErrInvalid, []byte("OPT_LIST takes no data")); err != nil {
					return err
				}
				continue
			}
			// Export names are credentials: none are listed.
			if err := c.optReply(opt, repAck, nil); err != nil {
				return err
			}
		case optStartTLS:
			if c.srv.opts.TLSConfig == nil {
				if err := c.optReply(opt, repErrUnsup, []byte("TLS is not configured")); err != nil {
					return err
				}
				continue
			}
			if tlsDone || length != 0 {
				if err := c.optReply(opt, repErrInvalid, []byte("TLS already negotiated")); err != nil {
					return err
				}
				continue
			}
			if err := c.optReply(opt, repAck, nil); err != nil {
				return err
			}
			tc := tls.Server(c.nc, c.srv.opts.TLSConfig)
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("tls: %w", err)
			}
			c.nc = tc
			c.r = bufio.NewReaderSize(tc, 64<<10)
			c.w = bufio.NewWriterSize(tc, 64<<10)
			tlsDone = true
		case optStructuredReply:
			if length != 0 {
				if err := c.optReply(opt, repErrInvalid, nil); err != nil {
					return err
				}
				continue
			}
			c.structured = true
			if err := c.optReply(opt, repAck, nil); err != nil {
				return err
			}
		case optListMetaContext, optSetMetaContext:
			if err := c.metaContext(opt, data); err != nil {
				return err
			}
		case optInfo, optGo:
			e, err := c.infoGo(opt, data)
			if err != nil {
				return err
			}
			if e != nil && opt == optGo {
				return c.attach(e)
			}
		default:
			if err := c.optReply(opt, repErrUnsup, []byte("unsupported option")); err != nil {
				return err
			}
		}
	}
}

func (c *conn) lookup(name string) *export {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	return c.srv.exports[name]
}

// attach binds the connection to e, unless e was removed meanwhile.
func (c *conn) attach(e *export) error {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	if c.srv.exports[e.name] != e {
		return fmt.Errorf("export removed during the handshake")
	}
	e.conns[c] = struct{}{}
	c.exp = e
	return nil
}

func transmissionFlags(e *export) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagCanMultiConn | tflagSendDF)
	if e.readOnly {
		f |= tflagReadOnly
	} else {
		f |= tflagSendTrim | tflagSendWriteZeroes
	}
	return f
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], optReplyMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.w.Write(h[:])
	c.w.Write(data)
	return c.w.Flush()
}

// parseName reads a 32-bit length-prefixed string at the start of data.
func parseName(data []byte) (string, []byte, bool) {
	if len(data) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-4) || n > maxNameLen {
		return "", nil, false
	}
	return string(data[4 : 4+n]), data[4+n:], true
}

func (c *conn) infoGo(opt uint32, data []byte) (*export, error) {
	name, rest, ok := parseName(data)
	if !ok || len(rest) < 2 {
		return nil, c.optReply(opt, repErrInvalid, []byte("malformed request"))
	}
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return nil, c.optReply(opt, repErrInvalid, []byte("malformed information requests"))
	}
	e := c.lookup(name)
	if e == nil {
		return nil, c.optReply(opt, repErrUnknown, []byte("unknown export"))
	}
	var info [12]byte
	binary.BigEndian.PutUint16(info[0:], infoExport)
	binary.BigEndian.PutUint64(info[2:], uint64(e.dev.Size()))
	binary.BigEndian.PutUint16(info[10:], transmissionFlags(e))
	if err := c.optReply(opt, repInfo, info[:]); err != nil {
		return nil, err
	}
	for i := 0; i < nreq; i++ {
		if binary.BigEndian.Uint16(rest[2+2*i:]) == infoBlockSize {
			var bs [14]byte
			binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
			binary.BigEndian.PutUint32(bs[2:], 1)
			binary.BigEndian.PutUint32(bs[6:], 4096)
			binary.BigEndian.PutUint32(bs[10:], maxRequest)
			if err := c.optReply(opt, repInfo, bs[:]); err != nil {
				return nil, err
			}
		}
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return nil, err
	}
	return e, nil
}

func (c *conn) metaContext(opt uint32, data []byte) error {
	if !c.structured && opt == optSetMetaContext {
		return c.optReply(opt, repErrInvalid, []byte("structured replies first"))
	}
	name, rest, ok := parseName(data)
	if !ok || len(rest) < 4 {
		return c.optReply(opt, repErrInvalid, []byte("malformed request"))
	}
	if c.lookup(name) == nil {
		return c.optReply(opt, repErrUnknown, []byte("unknown export"))
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for i := uint32(0); i < n; i++ {
		q, r, ok := parseName(rest)
		if !ok {
			return c.optReply(opt, repErrInvalid, []byte("malformed query"))
		}
		queries = append(queries, q)
		rest = r
	}
	if len(rest) != 0 {
		return c.optReply(opt, repErrInvalid, []byte("trailing data"))
	}
	if opt == optSetMetaContext {
		c.metaID = 0
	}
	match := n == 0 && opt == optListMetaContext
	for _, q := range queries {
		if q == MetaContextAllocation || (opt == optListMetaContext && (q == "base:" || q == "base")) {
			match = true
		}
	}
	if match {
		var r [4 + len(MetaContextAllocation)]byte
		binary.BigEndian.PutUint32(r[0:], 1)
		copy(r[4:], MetaContextAllocation)
		if err := c.optReply(opt, repMetaContext, r[:]); err != nil {
			return err
		}
		if opt == optSetMetaContext {
			c.metaID = 1
		}
	}
	return c.optReply(opt, repAck, nil)
}

// request is one transmission request, its WRITE payload already read.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
	data   []byte
	// buf holds data when it came from the payload pools.
	buf *[]byte
}

func (c *conn) transmit() {
	sem := make(chan struct{}, c.srv.opts.InFlight)
	var hdr [28]byte
	for {
		if err := c.readFull(hdr[:]); err != nil {
			return
		}
		if binary.BigEndian.Uint32(hdr[0:]) != requestMagic {
			return
		}
		req := &request{
			flags: binary.BigEndian.Uint16(hdr[4:]), typ: binary.BigEndian.Uint16(hdr[6:]),
			cookie: binary.BigEndian.Uint64(hdr[8:]), off: binary.BigEndian.Uint64(hdr[16:]), length: binary.BigEndian.Uint32(hdr[24:]),
		}
		if req.typ == cmdDisc {
			return
		}
		if req.typ == cmdWrite {
			if req.length > maxRequest {
				return // cannot skip the payload safely
			}
			req.buf = getPayload(int(req.length))
			req.data = *req.buf
			// The whole payload arrives before anything is applied: a
			// client that drops mid-request changes nothing.
			if err := c.readFull(req.data); err != nil {
				putPayload(req.buf)
				return
			}
		}
		sem <- struct{}{}
		c.inflight.Add(1)
		go func() {
			defer func() { <-sem; c.inflight.Done() }()
			c.handle(req)
			if req.buf != nil {
				putPayload(req.buf)
			}
		}()
	}
}

func errnoOf(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, blockdev.ErrReadOnly):
		return errPerm
	case errors.Is(err, blockdev.ErrOutOfRange):
		return errInval
	}
	return errIO
}

func (c *conn) handle(req *request) {
	e := c.exp
	size := uint64(e.dev.Size())
	inRange := req.off <= size && uint64(req.length) <= size-req.off
	var err uint32
	switch req.typ {
	case cmdRead:
		switch {
		case !inRange:
			err = errInval
		case req.length > maxRequest:
			err = errOverflow
		default:
			pb := getPayload(int(req.length))
			if _, rerr := e.dev.ReadAt(*pb, int64(req.off)); rerr != nil {
				c.srv.log.Warn("nbd read failed", "export_bytes", size, "off", req.off, "err", rerr)
				err = errnoOf(rerr)
				putPayload(pb)
			} else {
				// replyRead has written or copied the data when it returns.
				c.replyRead(req, *pb)
				putPayload(pb)
				return
			}
		}
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		switch {
		case e.readOnly:
			err = errPerm
		case !inRange:
			err = errInval
		default:
			var werr error
			switch req.typ {
			case cmdWrite:
				_, werr = e.dev.WriteAt(req.data, int64(req.off))
			case cmdTrim:
				werr = e.dev.Trim(int64(req.off), int64(req.length))
			case cmdWriteZeroes:
				if req.flags&cmdFlagNoHole != 0 {
					_, werr = e.dev.WriteAt(make([]byte, req.length), int64(req.off))
				} else {
					werr = e.dev.Zero(int64(req.off), int64(req.length))
				}
			}
			if werr == nil && req.flags&cmdFlagFUA != 0 {
				werr = e.dev.Flush()
			}
			err = errnoOf(werr)
		}
	case cmdFlush:
		err = errnoOf(e.dev.Flush())
	case cmdCache:
		if !inRange {
			err = errInval
		}
	case cmdBlockStatus:
		switch {
		case c.metaID == 0:
			err = errInval
		case !inRange || req.length == 0:
			err = errInval
		default:
			exts, xerr := e.dev.Extents(int64(req.off), int64(req.length))
			if xerr != nil {
				err = errnoOf(xerr)
				break
			}
			c.replyBlockStatus(req, exts)
			return
		}
	default:
		err = errInval
	}
	c.replySimple(req, err)
}

func (c *conn) replySimple(req *request, errno uint32) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.structured && req.typ == cmdRead && errno != 0 {
		// Errors to a READ come as a structured error chunk.
		var h [20 + 6]byte
		binary.BigEndian.PutUint32(h[0:], structuredReplyMagic)
		binary.BigEndian.PutUint16(h[4:], replyFlagDone)
		binary.BigEndian.PutUint16(h[6:], replyTypeError)
		binary.BigEndian.PutUint64(h[8:], req.cookie)
		binary.BigEndian.PutUint32(h[16:], 6)
		binary.BigEndian.PutUint32(h[20:], errno)
		c.w.Write(h[:])
		c.w.Flush()
		return
	}
	var h [16]byte
	binary.BigEndian.PutUint32(h[0:], simpleReplyMagic)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], req.cookie)
	c.w.Write(h[:])
	c.w.Flush()
}

func (c *conn) replyRead(req *request, data []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.structured {
		var h [16]byte
		binary.BigEndian.PutUint32(h[0:], simpleReplyMagic)
		binary.BigEndian.PutUint64(h[8:], req.cookie)
		c.w.Write(h[:])
		c.w.Write(data)
		c.w.Flush()
		return
	}
	var h [28]byte
	binary.BigEndian.PutUint32(h[0:], structuredReplyMagic)
	binary.BigEndian.PutUint16(h[4:], replyFlagDone)
	binary.BigEndian.PutUint16(h[6:], replyTypeOffsetData)
	binary.BigEndian.PutUint64(h[8:], req.cookie)
	binary.BigEndian.PutUint32(h[16:], uint32(8+len(data)))
	binary.BigEndian.PutUint64(h[20:], req.off)
	c.w.Write(h[:])
	c.w.Write(data)
	c.w.Flush()
}

func (c *conn) replyBlockStatus(req *request, exts []blockdev.Extent) {
	if req.flags&cmdFlagReqOne != 0 && len(exts) > 1 {
		exts = exts[:1]
	}
	payload := make([]byte, 4, 4+8*len(exts))
	binary.BigEndian.PutUint32(payload, c.metaID)
	for _, x := range exts {
		for l := x.Length; l > 0; {
			n := min(l, 1<<31)
			var st uint32
			if x.Hole {
				st |= stateHole
			}
			if x.Zero {
				st |= stateZero
			}
			payload = binary.BigEndian.AppendUint32(payload, uint32(n))
			payload = binary.BigEndian.AppendUint32(payload, st)
			l -= n
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var h [20]byte
	binary.BigEndian.PutUint32(h[0:], structuredReplyMagic)
	binary.BigEndian.PutUint16(h[4:], replyFlagDone)
	binary.BigEndian.PutUint16(h[6:], replyTypeBlockStatus)
	binary.BigEndian.PutUint64(h[8:], req.cookie)
	binary.BigEndian.PutUint32(h[16:], uint32(len(payload)))
	c.w.Write(h[:])
	c.w.Write(payload)
	c.w.Flush()
}
