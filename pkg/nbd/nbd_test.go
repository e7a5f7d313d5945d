package nbd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
)

const mib = 1 << 20

// image makes a sparse 16 MiB file: random data at 1 MiB and 9 MiB, holes elsewhere.
func image(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(16 * mib)
	want := make([]byte, 16*mib)
	for _, off := range []int{1 * mib, 9 * mib} {
		rand.Read(want[off : off+2*mib])
		f.WriteAt(want[off:off+2*mib], int64(off))
	}
	return path, want
}

type served struct {
	srv  *nbd.Server
	addr string
}

func serve(t *testing.T) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := nbd.NewServer(nbd.ServerOptions{})
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &served{srv: s, addr: ln.Addr().String()}
}

func (s *served) export(t *testing.T, name, path string, ro bool) {
	t.Helper()
	dev, err := blockdev.OpenFile(path, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	if err := s.srv.AddExport(name, dev, ro); err != nil {
		t.Fatal(err)
	}
}

func (s *served) uri(name string) string { return "nbd://" + s.addr + "/" + name }

func run(t *testing.T, prog string, args ...string) (string, error) {
	t.Helper()
	p := testenv.LookPath(t, prog)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, args...).CombinedOutput()
	return string(out), err
}

func TestNBDInfo(t *testing.T) {
	path, _ := image(t)
	s := serve(t)
	s.export(t, "rw-export", path, false)
	s.export(t, "ro-export", path, true)
	for _, c := range []struct {
		name string
		ro   bool
	}{{"rw-export", false}, {"ro-export", true}} {
		out, err := run(t, "nbdinfo", "--json", s.uri(c.name))
		if err != nil {
			t.Fatalf("nbdinfo %s: %v\n%s", c.name, err, out)
		}
		var info struct {
			Exports []struct {
				Size     int64 `json:"export-size"`
				ReadOnly bool  `json:"is_read_only"`
				Contexts []string
			} `json:"exports"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo json: %v\n%s", err, out)
		}
		if info.Exports[0].Size != 16*mib || info.Exports[0].ReadOnly != c.ro {
			t.Errorf("%s: size %d read-only %v", c.name, info.Exports[0].Size, info.Exports[0].ReadOnly)
		}
		if !strings.Contains(out, "base:allocation") {
			t.Errorf("%s: base:allocation not offered:\n%s", c.name, out)
		}
	}
	// The allocation map shows the holes and the data.
	out, err := run(t, "nbdinfo", "--map", s.uri("ro-export"))
	if err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}
	var data int64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var off, n int64
		var typ int
		if _, err := fmt.Sscan(line, &off, &n, &typ); err != nil {
			t.Fatalf("map line %q: %v", line, err)
		}
		if typ == 0 {
			data += n
		}
	}
	if data < 4*mib || data > 6*mib {
		t.Fatalf("map reports %d bytes of data, want about 4 MiB:\n%s", data, out)
	}
	// OPT_LIST names nothing; a wrong name is refused.
	out, _ = run(t, "nbdinfo", "--list", "nbd://"+s.addr)
	if strings.Contains(out, "rw-export") || strings.Contains(out, "ro-export") {
		t.Fatalf("OPT_LIST revealed export names:\n%s", out)
	}
	if out, err := run(t, "nbdinfo", s.uri("no-such-export")); err == nil {
		t.Fatalf("a wrong export name was accepted:\n%s", out)
	}
}

func TestNBDCopyAndQemuImg(t *testing.T) {
	path, want := image(t)
	s := serve(t)
	s.export(t, "src", path, true)
	out := filepath.Join(t.TempDir(), "copy.img")
	if o, err := run(t, "nbdcopy", s.uri("src"), out); err != nil {
		t.Fatalf("nbdcopy: %v\n%s", err, o)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("nbdcopy's copy differs")
	}
	if o, err := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", path, s.uri("src")); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, o)
	}
	// qemu-img writes into a read-write export.
	dst := filepath.Join(t.TempDir(), "dst.img")
	f, _ := os.Create(dst)
	f.Truncate(16 * mib)
	f.Close()
	s.export(t, "dst", dst, false)
	if o, err := run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", path, s.uri("dst")); err != nil {
		t.Fatalf("qemu-img convert into the export: %v\n%s", err, o)
	}
	got, _ = os.ReadFile(dst)
	if !bytes.Equal(got, want) {
		t.Fatal("qemu-img convert wrote different data")
	}
	// Writing into a read-only export fails.
	if o, err := run(t, "nbdcopy", path, s.uri("src")); err == nil {
		t.Fatalf("nbdcopy wrote into a read-only export:\n%s", o)
	}
}

func TestClientAgainstOurServer(t *testing.T) {
	path, want := image(t)
	s := serve(t)
	s.export(t, "rw", path, false)
	s.export(t, "ro", path, true)
	ctx := context.Background()
	c, err := nbd.Dial(ctx, "tcp", s.addr, nbd.DialOptions{ExportName: "rw", MaxRequest: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 16*mib || c.ReadOnly() || !c.CanBlockStatus() {
		t.Fatalf("size %d ro %v bs %v", c.Size(), c.ReadOnly(), c.CanBlockStatus())
	}
	got := make([]byte, 16*mib)
	if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read: %v", err)
	}
	exts, err := c.Extents(0, 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range exts {
		if !e.Hole {
			data += e.Length
		}
	}
	if data < 4*mib || data > 6*mib {
		t.Fatalf("extents: %v", exts)
	}
	// 64 goroutines writing and reading their own blocks at once.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			blk := bytes.Repeat([]byte{byte(i + 1)}, 64<<10)
			off := int64(i) * (256 << 10)
			if _, err := c.WriteAt(blk, off); err != nil {
				errs <- err
				return
			}
			back := make([]byte, len(blk))
			if _, err := c.ReadAt(back, off); err != nil || !bytes.Equal(back, blk) {
				errs <- fmt.Errorf("block %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(0, mib); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt(make([]byte, 10), 16*mib-5); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}

	ro, err := nbd.Dial(ctx, "tcp", s.addr, nbd.DialOptions{ExportName: "ro"})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !ro.ReadOnly() {
		t.Fatal("read-only export not flagged")
	}
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("write to ro: %v", err)
	}
	if _, err := nbd.Dial(ctx, "tcp", s.addr, nbd.DialOptions{ExportName: "nope"}); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("unknown export: %v", err)
	}

	// Removing the export ends the client's connection.
	if err := s.srv.RemoveExport("ro"); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("a client of a removed export still reads")
	}
	if _, err := nbd.Dial(ctx, "tcp", s.addr, nbd.DialOptions{ExportName: "ro"}); err == nil {
		t.Fatal("a removed export accepts new clients")
	}
}

// TestServerRefusesWritesFromReadOnlyPeers checks EPERM on the wire: our
// client skips its own read-only check when the server lied, so ask nbdsh.
func TestClientAgainstNBDKit(t *testing.T) {
	nbdkit := testenv.LookPath(t, "nbdkit")
	path, want := image(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cmd := exec.Command(nbdkit, "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", port, "file", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var c *nbd.Client
	var err error
	for i := 0; i < 100; i++ {
		c, err = nbd.Dial(context.Background(), "tcp", "127.0.0.1:"+port, nbd.DialOptions{})
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, 16*mib)
	if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read from nbdkit: %v", err)
	}
	if _, err := c.WriteAt([]byte("hello"), 100); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	disk, _ := os.ReadFile(path)
	if string(disk[100:105]) != "hello" {
		t.Fatal("write through nbdkit did not land")
	}
	if c.CanBlockStatus() {
		exts, err := c.Extents(0, 16*mib)
		if err != nil || len(exts) == 0 || exts[0].Offset != 0 {
			t.Fatalf("extents from nbdkit: %v %v", exts, err)
		}
	}
}

// benchExport serves a 64 MiB file (random bytes, or a hole when
// writable) over NBD on loopback and returns a client of it.
func benchExport(b *testing.B, writable bool) *nbd.Client {
	b.Helper()
	path := filepath.Join(b.TempDir(), "b.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if writable {
		f.Truncate(64 * mib)
	} else {
		buf := make([]byte, 64*mib)
		rand.Read(buf)
		f.Write(buf)
	}
	f.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := nbd.NewServer(nbd.ServerOptions{})
	go s.Serve(ln)
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	dev, err := blockdev.OpenFile(path, !writable)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dev.Close() })
	s.AddExport("b", dev, !writable)
	c, err := nbd.Dial(context.Background(), "tcp", ln.Addr().String(), nbd.DialOptions{ExportName: "b"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func BenchmarkClientRead(b *testing.B) {
	c := benchExport(b, false)
	out := make([]byte, 64*mib)
	b.SetBytes(64 * mib)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.ReadAt(out, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientWrite writes 64 MiB in 4 MiB writes from two goroutines
// (a restore's two workers) through one connection to a file export.
func BenchmarkClientWrite(b *testing.B) {
	c := benchExport(b, true)
	src := make([]byte, 4*mib)
	rand.Read(src)
	b.SetBytes(64 * mib)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var g errgroup.Group
		for w := 0; w < 2; w++ {
			g.Go(func() error {
				for off := int64(w) * 4 * mib; off < 64*mib; off += 8 * mib {
					if _, err := c.WriteAt(src, off); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}
