// Package s3 is the S3 backup repository backend, through minio-go: any
// S3-compatible store (AWS S3, Ceph RGW, MinIO, versitygw). Objects live
// under an optional prefix in one bucket; a PUT is atomic by S3's semantics
// and durable once it returns.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Config locates a bucket.
type Config struct {
	// Endpoint is host:port of the S3 service.
	Endpoint string
	Bucket   string
	// Prefix is prepended to every object name ("" or ending in "/").
	Prefix    string
	AccessKey string
	SecretKey string
	Region    string
	UseTLS    bool
	// CreateBucket makes the bucket when it does not exist.
	CreateBucket bool
	// MaxRetries of one request inside minio-go (default 3; 1 = none).
	MaxRetries int
}

// Repository is a bucket (and prefix) of objects.
type Repository struct {
	cfg    Config
	client *minio.Client
}

var (
	_ repository.Repository = (*Repository)(nil)
	_ repository.Batcher    = (*Repository)(nil)
	_ repository.Opener     = (*Repository)(nil)
)

// New connects to the bucket, creating it when asked.
func New(ctx context.Context, cfg Config) (*Repository, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3 repository: endpoint and bucket are required")
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 3
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     cfg.UseTLS,
		Region:     cfg.Region,
		MaxRetries: cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 repository: %w", err)
	}
	r := &Repository{cfg: cfg, client: c}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 repository: bucket %s: %w", cfg.Bucket, translate(err))
	}
	if !ok {
		if !cfg.CreateBucket {
			return nil, fmt.Errorf("s3 repository: bucket %s does not exist", cfg.Bucket)
		}
		if err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("s3 repository: create bucket %s: %w", cfg.Bucket, translate(err))
		}
	}
	return r, nil
}

// Location implements repository.Repository (no credentials).
func (r *Repository) Location() string {
	scheme := "s3"
	if r.cfg.UseTLS {
		scheme = "s3s"
	}
	return fmt.Sprintf("%s://%s/%s/%s", scheme, r.cfg.Endpoint, r.cfg.Bucket, r.cfg.Prefix)
}

// Close implements repository.Repository.
func (r *Repository) Close() error { return nil }

func (r *Repository) key(name string) (string, error) {
	if err := repository.ValidateName(name); err != nil {
		return "", err
	}
	return r.cfg.Prefix + name, nil
}

// translate maps S3 and network errors to the repository's sentinels, in
// one place.
func translate(err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.Code == "NoSuchBucket" || resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %w", repository.ErrNotFound, err)
	case resp.Code == "QuotaExceeded" || resp.Code == "EntityTooLarge" || resp.Code == "XMinioStorageFull" || resp.StatusCode == http.StatusInsufficientStorage:
		return fmt.Errorf("%w: %w", repository.ErrNoSpace, err)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.Code == "SlowDown" || resp.Code == "RequestTimeout":
		return fmt.Errorf("%w: %w", repository.ErrUnavailable, err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("%w: %w", repository.ErrUnavailable, err)
	}
	return err
}

// Put implements repository.Repository.
func (r *Repository) Put(ctx context.Context, name string, data []byte) error {
	k, err := r.key(name)
	if err != nil {
		return err
	}
	body := &guardedReader{r: bytes.NewReader(data)}
	_, err = r.client.PutObject(ctx, r.cfg.Bucket, k, body, int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true, SendContentMd5: true})
	// An HTTP transport may still read a request's body after the request
	// failed; from here on such a read gets an error, not the caller's
	// buffer, which it may already be filling with the next object.
	body.stop()
	if err != nil {
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	return nil
}

// Get implements repository.Repository.
func (r *Repository) Get(ctx context.Context, name string) ([]byte, error) {
	return r.GetInto(ctx, name, nil)
}

// GetInto implements repository.BufferGetter.
func (r *Repository) GetInto(ctx context.Context, name string, buf []byte) ([]byte, error) {
	k, err := r.key(name)
	if err != nil {
		return nil, err
	}
	obj, err := r.client.GetObject(ctx, r.cfg.Bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, translate(err))
	}
	defer obj.Close()
	b := buf[:0]
	// The GET's own response tells the size (Stat sends no other
	// request): a buffer too small is replaced once, not grown step by step.
	if info, err := obj.Stat(); err != nil {
		return nil, fmt.Errorf("get %s: %w", name, translate(err))
	} else if info.Size > int64(cap(b)) {
		b = make([]byte, 0, info.Size)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := obj.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", name, translate(err))
		}
	}
}

// Open implements repository.Opener: one GET, whose body is read as the
// caller reads (minio-go sends the request at the first Stat or Read; Open
// makes it at once, so a missing object is ErrNotFound here).
func (r *Repository) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	k, err := r.key(name)
	if err != nil {
		return nil, err
	}
	obj, err := r.client.GetObject(ctx, r.cfg.Bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, translate(err))
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, fmt.Errorf("open %s: %w", name, translate(err))
	}
	return &objectReader{obj: obj, name: name}, nil
}

// objectReader is an open object: read errors name it and are translated.
type objectReader struct {
	obj  *minio.Object
	name string
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.obj.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read %s: %w", o.name, translate(err))
	}
	return n, err
}

func (o *objectReader) Close() error { return o.obj.Close() }

// guardedReader is a Put's request body that can be cut off from the data.
type guardedReader struct {
	mu      sync.Mutex
	r       *bytes.Reader
	stopped bool
}

var errBodyDone = errors.New("s3: the put has returned; its body is no longer readable")

func (g *guardedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return 0, errBodyDone
	}
	return g.r.Read(p)
}

func (g *guardedReader) ReadAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return 0, errBodyDone
	}
	return g.r.ReadAt(p, off)
}

func (g *guardedReader) Seek(off int64, whence int) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.r.Seek(off, whence)
}

func (g *guardedReader) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

// Stat implements repository.Repository.
func (r *Repository) Stat(ctx context.Context, name string) (repository.ObjectInfo, error) {
	k, err := r.key(name)
	if err != nil {
		return repository.ObjectInfo{}, err
	}
	info, err := r.client.StatObject(ctx, r.cfg.Bucket, k, minio.StatObjectOptions{})
	if err != nil {
		return repository.ObjectInfo{}, fmt.Errorf("stat %s: %w", name, translate(err))
	}
	return repository.ObjectInfo{Name: name, Size: info.Size, ModTime: info.LastModified}, nil
}

// List implements repository.Repository (S3 lists in lexical order).
func (r *Repository) List(ctx context.Context, prefix string, fn func(repository.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range r.client.ListObjects(ctx, r.cfg.Bucket, minio.ListObjectsOptions{Prefix: r.cfg.Prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list %q: %w", prefix, translate(o.Err))
		}
		if err := fn(repository.ObjectInfo{Name: strings.TrimPrefix(o.Key, r.cfg.Prefix), Size: o.Size, ModTime: o.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements repository.Repository.
func (r *Repository) Delete(ctx context.Context, name string) error {
	k, err := r.key(name)
	if err != nil {
		return err
	}
	if err := r.client.RemoveObject(ctx, r.cfg.Bucket, k, minio.RemoveObjectOptions{}); err != nil {
		if errors.Is(translate(err), repository.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", name, translate(err))
	}
	return nil
}

// batchUploads is how many puts of a batch run at once. A batch carries
// small objects (an incremental's pieces), each of which costs a request's
// round trip rather than bandwidth, so many run side by side.
const batchUploads = 16

// NewBatch implements repository.Batcher. A PUT is durable once it returns,
// so there is nothing to make durable together; what a batch gives S3 is
// concurrency: Put copies the object and uploads it in the background, up
// to batchUploads at once, and Sync waits for the uploads. A put that failed
// is uploaded again by the next Sync.
func (r *Repository) NewBatch() repository.Batch {
	return &batch{r: r, slots: make(chan struct{}, batchUploads)}
}

type batch struct {
	r     *Repository
	slots chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	failed []upload // uploads that failed, for the next Sync
}

type upload struct {
	name string
	data []byte
	err  error
}

// Put implements repository.Batch. A bad name is refused at once; the
// upload's own error comes from Sync.
func (b *batch) Put(ctx context.Context, name string, data []byte) error {
	if _, err := b.r.key(name); err != nil {
		return err
	}
	return b.start(ctx, upload{name: name, data: bytes.Clone(data)})
}

// start waits for a free slot (or ctx) and uploads u in the background. The
// upload does not end with ctx: the caller's context may end as soon as its
// last Put returns, before the batch is synced.
func (b *batch) start(ctx context.Context, u upload) error {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.wg.Add(1)
	go func() {
		defer func() { <-b.slots; b.wg.Done() }()
		if err := b.r.Put(context.WithoutCancel(ctx), u.name, u.data); err != nil {
			u.err = err
			b.mu.Lock()
			b.failed = append(b.failed, u)
			b.mu.Unlock()
		}
	}()
	return nil
}

// Sync implements repository.Batch: it uploads again what failed before,
// waits for every upload and reports those that failed (kept for the next
// Sync).
func (b *batch) Sync(ctx context.Context) error {
	b.mu.Lock()
	again := b.failed
	b.failed = nil
	b.mu.Unlock()
	for i, u := range again {
		u.err = nil
		if err := b.start(ctx, u); err != nil {
			b.mu.Lock()
			b.failed = append(b.failed, again[i:]...)
			b.mu.Unlock()
			break
		}
	}
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.failed) == 0 {
		return nil
	}
	errs := make([]error, 0, min(len(b.failed), 3))
	for _, u := range b.failed[:cap(errs)] {
		errs = append(errs, u.err)
	}
	return fmt.Errorf("%d objects of the batch not stored: %w", len(b.failed), errors.Join(errs...))
}
