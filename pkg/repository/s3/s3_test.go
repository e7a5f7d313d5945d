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
