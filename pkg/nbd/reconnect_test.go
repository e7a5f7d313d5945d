package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/nbd"
)

// cutter is a TCP proxy whose connections can all be cut at once.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// TestReconnecting: a connection cut under a reader is dialed again and
// the reads go on with the same data; an export that is gone for good fails
// at once instead of being retried for the whole window.
func TestReconnecting(t *testing.T) {
	s := serve(t)
	path, want := image(t)
	s.export(t, "vol", path, false)
	px := newCutter(t, s.addr)
	dev, err := nbd.DialReconnecting(context.Background(), "tcp", px.ln.Addr().String(), nbd.DialOptions{ExportName: "vol"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	got := make([]byte, len(want))
	for i := 0; i < 3; i++ {
		px.cut()
		if _, err := dev.ReadAt(got, 0); err != nil {
			t.Fatalf("read %d after a cut: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d after a cut returned other data", i)
		}
	}
	if dev.Reconnects() < 1 {
		t.Fatalf("%d reconnections after three cuts", dev.Reconnects())
	}
	// Writes retried after a cut land once, as written.
	px.cut()
	if _, err := dev.WriteAt(bytes.Repeat([]byte{7}, mib), 4*mib); err != nil {
		t.Fatalf("write after a cut: %v", err)
	}
	dev.ReadAt(got[:mib], 4*mib)
	if !bytes.Equal(got[:mib], bytes.Repeat([]byte{7}, mib)) {
		t.Fatal("the retried write is not there")
	}

	// The export removed: no retrying for 30 s.
	s.srv.RemoveExport("vol")
	px.cut()
	start := time.Now()
	_, err = dev.ReadAt(got[:mib], 0)
	if err == nil || !errors.Is(err, nbd.ErrClosed) && !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("read of a removed export: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("a removed export was retried for %v", time.Since(start))
	}
}
