package nbd_test

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
)

// FuzzServer feeds arbitrary bytes to a server after the client flags: the
// server must neither panic nor hang, whatever the options and requests.
func FuzzServer(f *testing.F) {
	opt := func(o uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, 0x49484156454F5054)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	goExport := opt(7, append(append(binary.BigEndian.AppendUint32(nil, 1), 'e'), 0, 0))
	req := func(typ uint16, off uint64, n uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, 0x25609513)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	f.Add(append(opt(3, nil), opt(2, nil)...))
	f.Add(append(append(opt(8, nil), goExport...), req(0, 0, 4096)...))
	f.Add(append(goExport, req(1, 0, 4)...))
	f.Add(append(goExport, req(7, 0, 1<<20)...))
	f.Add(opt(10, []byte{0, 0, 0, 1, 'e', 0, 0, 0, 1, 0, 0, 0, 15}))

	path := filepath.Join(f.TempDir(), "f.img")
	fh, _ := os.Create(path)
	fh.Truncate(1 << 20)
	fh.Close()
	dev, err := blockdev.OpenFile(path, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := nbd.NewServer(nbd.ServerOptions{HandshakeTimeout: time.Second})
		s.AddExport("e", dev, false)
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(server); close(done) }()
		go io.Copy(io.Discard, client)
		client.SetDeadline(time.Now().Add(2 * time.Second))
		client.Write([]byte{0, 0, 0, 3})
		client.Write(in)
		client.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			// The server gives up on a handshake after 1 s; 30 s tells a
			// hang from a busy machine.
			t.Fatal("the server hangs on this input (no end 30 s after a 1 s handshake timeout)")
		}
	})
}
