package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// afterBytes is a reply hook that passes the server's next n bytes on,
// then does f; connections made again run free.
func afterBytes(n int64, f testenv.Fault) testenv.ReplyHook {
	return func(b []byte) (int, testenv.Fault) {
		if n < 0 || int64(len(b)) <= n {
			if n >= 0 {
				n -= int64(len(b))
			}
			return len(b), testenv.Pass
		}
		k := int(n)
		n = -1
		return k, f
	}
}

// cutAfter cuts the proxy's connections once the server has sent n more
// bytes (in the middle of a reply).
func cutAfter(px *testenv.Proxy, n int64) { px.OnReply(afterBytes(n, testenv.Cut)) }

// holdAfter stops passing the server's bytes on once it has sent n more,
// leaving the connection open: to the client, a server that hangs.
func holdAfter(px *testenv.Proxy, n int64) { px.OnReply(afterBytes(n, testenv.Hold)) }

// slowReplies passes the server's bytes on at 16 KiB every 100 ms.
func slowReplies(px *testenv.Proxy) {
	px.OnReply(func(b []byte) (int, testenv.Fault) {
		time.Sleep(100 * time.Millisecond)
		return min(len(b), 16<<10), testenv.Pass
	})
}

// TestReconnecting: a connection cut under a reader is dialed again and
// the reads go on with the same data; an export that is gone for good fails
// at once instead of being retried for the whole window.
func TestReconnecting(t *testing.T) {
	s := serve(t)
	path, want := image(t)
	s.export(t, "vol", path, false)
	px := testenv.StartProxy(t, s.addr)
	dev, err := nbd.DialReconnecting(context.Background(), "tcp", px.Addr(), nbd.DialOptions{ExportName: "vol"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	got := make([]byte, len(want))
	for i := 0; i < 3; i++ {
		px.Cut()
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
	px.Cut()
	if _, err := dev.WriteAt(bytes.Repeat([]byte{7}, mib), 4*mib); err != nil {
		t.Fatalf("write after a cut: %v", err)
	}
	dev.ReadAt(got[:mib], 4*mib)
	if !bytes.Equal(got[:mib], bytes.Repeat([]byte{7}, mib)) {
		t.Fatal("the retried write is not there")
	}

	// The export removed: no retrying for 30 s.
	s.srv.RemoveExport("vol")
	px.Cut()
	start := time.Now()
	_, err = dev.ReadAt(got[:mib], 0)
	if err == nil || !errors.Is(err, nbd.ErrClosed) && !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("read of a removed export: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("a removed export was retried for %v", time.Since(start))
	}
}

// TestConnectionLostMidReply: a connection that breaks in the middle of a
// read's reply (the data chunk carries the last-reply flag, so the request
// has already been matched) fails that read instead of leaving it waiting
// for ever; a Reconnecting device reads it again on a new connection.
func TestConnectionLostMidReply(t *testing.T) {
	s := serve(t)
	path, want := image(t)
	s.export(t, "vol", path, false)
	px := testenv.StartProxy(t, s.addr)
	within := func(what string, f func() error) error {
		t.Helper()
		errc := make(chan error, 1)
		go func() { errc <- f() }()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer after 30 s", what)
			return nil
		}
	}
	c, err := nbd.Dial(context.Background(), "tcp", px.Addr(), nbd.DialOptions{ExportName: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, 2*mib) // one data chunk: the image has data at 1-3 MiB
	cutAfter(px, 64<<10)
	err = within("a read cut mid-reply", func() error { _, err := c.ReadAt(got, mib); return err })
	if err == nil {
		t.Fatal("a read whose reply was cut half way succeeded")
	}
	if c.Broken() == nil {
		t.Fatalf("the client does not say its connection broke (read: %v)", err)
	}

	dev, err := nbd.DialReconnecting(context.Background(), "tcp", px.Addr(), nbd.DialOptions{ExportName: "vol"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	for i := 0; i < 3; i++ {
		cutAfter(px, int64(i+1)*100<<10)
		clear(got)
		if err := within("a reconnecting read cut mid-reply", func() error { _, err := dev.ReadAt(got, mib); return err }); err != nil {
			t.Fatalf("read %d cut mid-reply: %v", i, err)
		}
		if !bytes.Equal(got, want[mib:3*mib]) {
			t.Fatalf("read %d cut mid-reply returned other data", i)
		}
	}
	if dev.Reconnects() < 3 {
		t.Fatalf("%d reconnections after three cuts", dev.Reconnects())
	}
}

// TestStalledServer: with StallTimeout, a server that stops answering in
// the middle of a reply (the connection stays open) fails the requests
// waiting with ErrStalled instead of holding them for ever, and a
// Reconnecting device dials again and reads the data. A slow but steady
// transfer is not a stall.
func TestStalledServer(t *testing.T) {
	s := serve(t)
	path, want := image(t)
	s.export(t, "vol", path, false)
	px := testenv.StartProxy(t, s.addr)
	opts := nbd.DialOptions{ExportName: "vol", StallTimeout: 500 * time.Millisecond}
	c, err := nbd.Dial(context.Background(), "tcp", px.Addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, 2*mib)
	// Idle for longer than the timeout, then a read: not a stall.
	time.Sleep(time.Second)
	if _, err := c.ReadAt(got, mib); err != nil || !bytes.Equal(got, want[mib:3*mib]) {
		t.Fatalf("a read after an idle second: %v", err)
	}
	// A slow transfer: 256 KiB at 160 KiB/s takes 1.6 s, more than the
	// timeout, but bytes keep coming.
	slowReplies(px)
	if _, err := c.ReadAt(got[:256<<10], mib); err != nil || !bytes.Equal(got[:256<<10], want[mib:mib+256<<10]) {
		t.Fatalf("a slow read: %v", err)
	}
	px.OnReply(nil)
	holdAfter(px, 64<<10)
	errc := make(chan error, 1)
	go func() { _, err := c.ReadAt(got, mib); errc <- err }()
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("a read from a server that stopped answering still waits after 30 s")
	}
	if !errors.Is(err, nbd.ErrStalled) {
		t.Fatalf("a read from a server that stopped answering: %v, want ErrStalled", err)
	}

	dev, err := nbd.DialReconnecting(context.Background(), "tcp", px.Addr(), opts, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	holdAfter(px, 100<<10)
	clear(got)
	go func() { _, err := dev.ReadAt(got, mib); errc <- err }()
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("a reconnecting read from a server that stopped answering still waits after 30 s")
	}
	if err != nil || !bytes.Equal(got, want[mib:3*mib]) {
		t.Fatalf("a reconnecting read through a stall: %v", err)
	}
	if dev.Reconnects() != 1 {
		t.Fatalf("%d reconnections after one stall", dev.Reconnects())
	}
}
