package testenv_test

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/testenv"
)

// echo starts a server that sends back what it reads.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, p *testenv.Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and reads what comes back within d: the bytes and
// the read's error.
func roundTrip(c net.Conn, msg []byte, d time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(d))
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestProxy(t *testing.T) {
	p := testenv.StartProxy(t, echo(t))
	msg := []byte("hello, server")

	t.Run("passes", func(t *testing.T) {
		if got, err := roundTrip(dial(t, p), msg, 10*time.Second); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%q, %v", got, err)
		}
	})
	t.Run("cut", func(t *testing.T) {
		c := dial(t, p)
		roundTrip(c, msg, 10*time.Second)
		p.Cut()
		if _, err := roundTrip(c, msg, 10*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("a cut connection: %v", err)
		}
		if got, err := roundTrip(dial(t, p), msg, 10*time.Second); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("a new connection after a cut: %q, %v", got, err)
		}
	})
	t.Run("down", func(t *testing.T) {
		p.SetDown(true)
		if _, err := roundTrip(dial(t, p), msg, 10*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("a connection while down: %v", err)
		}
		p.SetDown(false)
		if got, err := roundTrip(dial(t, p), msg, 10*time.Second); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("up again: %q, %v", got, err)
		}
	})
	t.Run("stall", func(t *testing.T) {
		c := dial(t, p)
		p.Stall(true)
		before := p.BytesMoved()
		if _, err := roundTrip(c, msg, 300*time.Millisecond); !isTimeout(err) {
			t.Fatalf("a stalled connection: %v", err)
		}
		if p.BytesMoved() != before {
			t.Fatal("bytes moved while stalled")
		}
		p.Stall(false)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("after the stall: %q, %v", got, err)
		}
		if moved := p.BytesMoved() - before; moved != 2*int64(len(msg)) {
			t.Fatalf("%d bytes moved, want %d", moved, 2*len(msg))
		}
	})
	t.Run("reply hook cuts", func(t *testing.T) {
		c := dial(t, p)
		p.OnReply(func(b []byte) (int, testenv.Fault) { return 5, testenv.Cut })
		defer p.OnReply(nil)
		got, err := roundTrip(c, msg, 10*time.Second)
		if string(got) != "hello" || err == nil || isTimeout(err) {
			t.Fatalf("%q, %v; want the first 5 bytes, then the connection closed", got, err)
		}
	})
	t.Run("reply hook holds", func(t *testing.T) {
		c := dial(t, p)
		p.OnReply(func(b []byte) (int, testenv.Fault) { return 5, testenv.Hold })
		defer p.OnReply(nil)
		got, err := roundTrip(c, msg, 300*time.Millisecond)
		if string(got) != "hello" || !isTimeout(err) {
			t.Fatalf("%q, %v; want the first 5 bytes, then nothing on an open connection", got, err)
		}
	})
	t.Run("reply hook paces", func(t *testing.T) {
		c := dial(t, p)
		var calls atomic.Int64
		p.OnReply(func(b []byte) (int, testenv.Fault) { calls.Add(1); return 1, testenv.Pass })
		defer p.OnReply(nil)
		if got, err := roundTrip(c, msg, 10*time.Second); err != nil || !bytes.Equal(got, msg) || calls.Load() != int64(len(msg)) {
			t.Fatalf("%q, %v, %d calls of the hook", got, err, calls.Load())
		}
	})
}
