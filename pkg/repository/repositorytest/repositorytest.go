// Package repositorytest is the conformance suite every repository backend
// runs.
package repositorytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/blockvault/blockvault/pkg/repository"
)

// Run runs the suite; newRepo returns an empty repository.
func Run(t *testing.T, newRepo func(t *testing.T) repository.Repository) {
	ctx := context.Background()
	t.Run("RoundTrip", func(t *testing.T) {
		r := newRepo(t)
		big := make([]byte, 5<<20)
		rand.Read(big)
		for name, data := range map[string][]byte{"empty": {}, "one": {7}, "c/big": big} {
			if err := r.Put(ctx, name, data); err != nil {
				t.Fatalf("put %s: %v", name, err)
			}
			got, err := r.Get(ctx, name)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("get %s: %d bytes, %v", name, len(got), err)
			}
			info, err := r.Stat(ctx, name)
			if err != nil || info.Size != int64(len(data)) || info.Name != name {
				t.Fatalf("stat %s: %+v %v", name, info, err)
			}
		}
		r.Put(ctx, "one", []byte("replaced"))
		if got, _ := r.Get(ctx, "one"); string(got) != "replaced" {
			t.Fatalf("overwrite: %q", got)
		}
	})
	t.Run("BuffersReused", func(t *testing.T) {
		// The engine reuses one buffer for object after object: Put must
		// be done with data when it returns, and GetInto must fill the
		// buffer it is given, or return a new one when it does not fit.
		r := newRepo(t)
		data := make([]byte, 1<<20)
		rand.Read(data)
		want := bytes.Clone(data)
		if err := r.Put(ctx, "a", data); err != nil {
			t.Fatal(err)
		}
		rand.Read(data)
		if err := r.Put(ctx, "b", data); err != nil {
			t.Fatal(err)
		}
		bg, ok := r.(repository.BufferGetter)
		if !ok {
			t.Fatalf("%T does not implement repository.BufferGetter", r)
		}
		buf := make([]byte, 7, 2<<20)
		got, err := bg.GetInto(ctx, "a", buf)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("get a: %d bytes, %v (the put kept the caller's buffer?)", len(got), err)
		}
		if &got[0] != &buf[:1][0] {
			t.Errorf("GetInto did not read into the buffer it was given, which had room")
		}
		got, err = bg.GetInto(ctx, "b", got)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get b into the same buffer: %d bytes, %v", len(got), err)
		}
		small := make([]byte, 0, 10)
		got, err = bg.GetInto(ctx, "a", small)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("get a into a small buffer: %d bytes, %v", len(got), err)
		}
		if _, err := bg.GetInto(ctx, "absent", buf); !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("get absent: %v", err)
		}
	})
	t.Run("Open", func(t *testing.T) {
		// Objects too large to hold are streamed.
		r := newRepo(t)
		o, ok := r.(repository.Opener)
		if !ok {
			t.Fatalf("%T does not implement repository.Opener", r)
		}
		data := make([]byte, 3<<20+5)
		rand.Read(data)
		if err := r.Put(ctx, "d/big", data); err != nil {
			t.Fatal(err)
		}
		rc, err := o.Open(ctx, "d/big")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("open d/big: %d bytes, %v", len(got), err)
		}
		if _, err := o.Open(ctx, "absent"); !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("open absent: %v", err)
		}
		if _, err := o.Open(ctx, "d"); !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("open a prefix of objects: %v", err)
		}
		if _, err := o.Open(ctx, "../x"); !errors.Is(err, repository.ErrInvalidName) {
			t.Errorf("open ../x: %v", err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		r := newRepo(t)
		if _, err := r.Get(ctx, "absent"); !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("get: %v", err)
		}
		if _, err := r.Stat(ctx, "absent/x"); !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("stat: %v", err)
		}
		if err := r.Delete(ctx, "absent"); err != nil {
			t.Errorf("delete absent: %v", err)
		}
		r.Put(ctx, "gone", []byte("x"))
		if err := r.Delete(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, "gone"); !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("get deleted: %v", err)
		}
	})
	t.Run("ListOrderAndPrefix", func(t *testing.T) {
		r := newRepo(t)
		names := []string{"chunks/abc/1", "chunks/ab/2", "chunks/ab/1", "manifests/x", "chunks/abd"}
		for _, n := range names {
			if err := r.Put(ctx, n, []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		if err := r.List(ctx, "chunks/ab/", func(o repository.ObjectInfo) error { got = append(got, o.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "[chunks/ab/1 chunks/ab/2]" {
			t.Fatalf("list chunks/ab/: %v", got)
		}
		got = nil
		r.List(ctx, "chunks/ab", func(o repository.ObjectInfo) error { got = append(got, o.Name); return nil })
		if fmt.Sprint(got) != "[chunks/ab/1 chunks/ab/2 chunks/abc/1 chunks/abd]" {
			t.Fatalf("list chunks/ab: %v", got)
		}
		stop := errors.New("stop")
		n := 0
		if err := r.List(ctx, "", func(repository.ObjectInfo) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Fatalf("callback error: %v after %d", err, n)
		}
	})
	t.Run("InvalidNames", func(t *testing.T) {
		r := newRepo(t)
		for _, n := range []string{"../etc/passwd", "/abs", "a/../b", "", "a//b", "x\x00y", "a/./b"} {
			if err := r.Put(ctx, n, []byte("x")); !errors.Is(err, repository.ErrInvalidName) {
				t.Errorf("put %q: %v", n, err)
			}
			if _, err := r.Get(ctx, n); !errors.Is(err, repository.ErrInvalidName) {
				t.Errorf("get %q: %v", n, err)
			}
			if err := r.Delete(ctx, n); !errors.Is(err, repository.ErrInvalidName) {
				t.Errorf("delete %q: %v", n, err)
			}
		}
	})
	t.Run("ConcurrentPuts", func(t *testing.T) {
		r := newRepo(t)
		var wg sync.WaitGroup
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 8; i++ {
					if err := r.Put(ctx, fmt.Sprintf("p/%02d-%d", g, i), bytes.Repeat([]byte{byte(g)}, 1000)); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		n := 0
		r.List(ctx, "p/", func(repository.ObjectInfo) error { n++; return nil })
		if n != 128 {
			t.Fatalf("listed %d objects, want 128", n)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		r := newRepo(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := r.Put(cctx, "c", []byte("x")); err == nil {
			t.Error("put with a cancelled context succeeded")
		}
	})
}
