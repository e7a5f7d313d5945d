package s3_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/repositorytest"
	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/repository/s3/s3test"
	"github.com/blockvault/blockvault/pkg/testenv"
)

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	var n atomic.Int64
	repositorytest.Run(t, func(t *testing.T) repository.Repository {
		cfg := srv.Config
		cfg.Prefix = fmt.Sprintf("t%d", n.Add(1)) // an empty repository per subtest
		r, err := s3.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

func TestServerDownIsUnavailable(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config
	cfg.MaxRetries = 1
	r, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Put(ctx, "x", []byte("y")); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("put to a stopped server: %v", err)
	}
}

// TestBatch: a batch's puts are stored by the time Sync returns, from
// buffers the caller reuses at once; a bad name is refused by Put; uploads
// that fail while the server cannot be reached make Sync fail with
// ErrUnavailable, and the next Sync, with the server back, stores them.
func TestBatch(t *testing.T) {
	srv := s3test.Start(t)
	proxy := testenv.StartProxy(t, srv.Config.Endpoint) // a fault between the repository and a real S3 server
	cfg := srv.Config
	cfg.Endpoint = proxy.Addr()
	cfg.MaxRetries = 1
	r, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	content := func(i int) []byte { return []byte(fmt.Sprintf("object %d of the batch", i)) }
	check := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			got, err := r.Get(ctx, fmt.Sprintf("b/%d", i))
			if err != nil || string(got) != string(content(i)) {
				t.Fatalf("object %d after Sync: %q, %v", i, got, err)
			}
		}
	}

	b := r.NewBatch()
	buf := make([]byte, 64)
	for i := 0; i < 100; i++ {
		n := copy(buf, content(i))
		if err := b.Put(ctx, fmt.Sprintf("b/%d", i), buf[:n]); err != nil {
			t.Fatal(err)
		}
		clear(buf) // the batch must have its own copy
	}
	if err := b.Put(ctx, "../escape", []byte("x")); err == nil {
		t.Fatal("a batch put a bad name")
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check(0, 100)

	proxy.SetDown(true)
	b = r.NewBatch()
	for i := 100; i < 110; i++ {
		if err := b.Put(ctx, fmt.Sprintf("b/%d", i), content(i)); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Sync(sctx); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Sync with the server unreachable: %v, want ErrUnavailable", err)
	}
	proxy.SetDown(false)
	if err := b.Sync(sctx); err != nil {
		t.Fatalf("Sync with the server back: %v", err)
	}
	check(100, 110)
}
