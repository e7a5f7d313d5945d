package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy on 127.0.0.1 that injects faults between a client
// and a real server (its upstream): it cuts the connections, refuses new
// ones, stalls the traffic, and lets a hook decide what of the server's
// replies goes on.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	cond    *sync.Cond // broadcast when stalled or closed changes
	conns   []net.Conn
	down    bool
	stalled bool
	closed  bool
	moved   int64 // bytes forwarded, both ways

	hookMu sync.Mutex // serializes the hook's calls
	hook   ReplyHook
}

// Fault is what a ReplyHook does after passing bytes on.
type Fault int

const (
	// Pass keeps going; if the hook passed only part of the bytes, it is
	// called again with the rest.
	Pass Fault = iota
	// Cut closes every connection of the proxy (as Proxy.Cut does).
	Cut
	// Hold passes nothing more of this connection's replies: the server's
	// bytes are read and dropped and the connection stays open, so to the
	// client the server hangs.
	Hold
)

// ReplyHook sees each piece of the server's bytes before they go on to
// the client: it returns how many of them to pass on (from the start) and
// what to do then. Returning 0 with Pass passes them all. Calls are
// serialized, so a hook may keep state without locking.
type ReplyHook func(b []byte) (n int, then Fault)

// StartProxy starts a proxy to upstream (host:port), closed when the test
// ends.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, upstream: upstream}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection the proxy has; new ones are accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// SetDown switched on cuts every connection and refuses new ones (they are
// accepted and closed at once), as a server that went away; switched off,
// connections pass again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// Stall switched on stops moving bytes either way, leaving the connections
// open (senders block once the windows fill), as a network path or server
// that hangs; switched off, the bytes move again.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	p.stalled = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// OnReply sets the hook on the server's bytes (nil: none).
func (p *Proxy) OnReply(h ReplyHook) {
	p.hookMu.Lock()
	p.hook = h
	p.hookMu.Unlock()
}

// BytesMoved is the number of bytes forwarded so far, both ways.
func (p *Proxy) BytesMoved() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.moved
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed, p.stalled = true, false
	p.mu.Unlock()
	p.cond.Broadcast()
	p.ln.Close()
	p.Cut()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			u.Close()
			return
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(u, c, false)
		go p.pipe(c, u, true)
	}
}

// pipe copies src to dst; reply says the bytes are the server's.
func (p *Proxy) pipe(dst, src net.Conn, reply bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			switch p.forward(dst, buf[:n], reply) {
			case Hold:
				io.Copy(io.Discard, src) // the connection stays open
				return
			case Cut:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forward passes b on to dst, through the stall and the reply hook. It
// returns Pass to go on, Hold to pass nothing more, Cut to stop (also
// when the write fails).
func (p *Proxy) forward(dst net.Conn, b []byte, reply bool) Fault {
	for len(b) > 0 {
		n, then := len(b), Pass
		if reply {
			p.hookMu.Lock()
			if p.hook != nil {
				n, then = p.hook(b)
				n = max(0, min(n, len(b)))
				if n == 0 && then == Pass {
					n = len(b)
				}
			}
			p.hookMu.Unlock()
		}
		p.mu.Lock()
		for p.stalled && !p.closed {
			p.cond.Wait()
		}
		p.moved += int64(n)
		p.mu.Unlock()
		if _, err := dst.Write(b[:n]); err != nil {
			return Cut
		}
		b = b[n:]
		switch then {
		case Cut:
			p.Cut()
			return Cut
		case Hold:
			return Hold
		}
	}
	return Pass
}
