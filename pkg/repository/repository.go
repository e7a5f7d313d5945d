// Package repository defines the object store that backups are kept in: a
// flat namespace of named, immutable objects with atomic put. The repository
// format (chunks, manifests) is built above it; the backends (posix directory,
// S3) only store bytes under names.
package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors every backend returns (wrapped) for the same condition.
var (
	// ErrNotFound: no object of that name.
	ErrNotFound = errors.New("repository: object not found")
	// ErrInvalidName: the name is empty, absolute, or escapes the repository.
	ErrInvalidName = errors.New("repository: invalid object name")
	// ErrNoSpace: the store is full or over quota; not worth retrying at once.
	ErrNoSpace = errors.New("repository: no space left")
	// ErrUnavailable: a transient failure (network, 5xx, throttling); worth retrying.
	ErrUnavailable = errors.New("repository: temporarily unavailable")
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Repository is the contract every backend implements. All methods are safe
// for concurrent use.
type Repository interface {
	// Put stores data under name atomically: a reader sees either the whole
	// object or none, never a part, also after a crash. Put replaces an
	// existing object. It returns only once the object is durable (fsync on
	// posix, a completed PUT on S3). It does not touch data after it
	// returns, so the caller may reuse it for the next object.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the whole object, or ErrNotFound, in a slice the caller
	// owns (the engine decrypts in place).
	Get(ctx context.Context, name string) ([]byte, error)
	// Stat describes the object, or returns ErrNotFound.
	Stat(ctx context.Context, name string) (ObjectInfo, error)
	// List calls fn for every object whose name starts with prefix, in
	// lexical order of name. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes the object. Deleting an absent object is not an error.
	Delete(ctx context.Context, name string) error
	// Close releases the backend's resources.
	Close() error
	// Location describes where the repository is, for logs and export
	// records (a path or an s3:// URL, never credentials).
	Location() string
}

// BufferGetter is implemented by backends that can read an object into a
// buffer the caller reuses from one object to the next, so reading chunk
// after chunk allocates nothing.
type BufferGetter interface {
	// GetInto is Get, with the object read into buf's storage (appended to
	// buf[:0]) when it fits, else into a new slice.
	GetInto(ctx context.Context, name string, buf []byte) ([]byte, error)
}

// Opener is implemented by backends that can stream an object instead of
// returning it whole: for objects too large to hold in memory (a Cinder
// posix backup's objects are close to 2 GB each).
type Opener interface {
	// Open returns a reader of the object's bytes, or ErrNotFound. Errors
	// while reading are translated as Get's are. The caller closes it.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
}

// Open streams an object from r: through Opener where r implements it, else
// from a whole Get.
func Open(ctx context.Context, r Repository, name string) (io.ReadCloser, error) {
	if o, ok := r.(Opener); ok {
		return o.Open(ctx, name)
	}
	b, err := r.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Batcher is implemented by backends where making each put durable on its
// own is dear (posix: two fsyncs per object) and many can be made durable
// together for less.
type Batcher interface {
	// NewBatch starts a batch of puts that become durable together.
	NewBatch() Batch
}

// Batch puts content-addressed objects (a name always holds the same
// bytes) that become durable together. Safe for concurrent use.
type Batch interface {
	// Put stores data under name atomically, as Repository.Put does, but
	// the object may be lost in a crash until Sync returns, and a backend
	// may store it only in the background (s3), reporting a failure from
	// Sync: read nothing and write nothing that names it before Sync
	// returns. data may be reused once Put returns. An object already
	// stored under the name is kept as it is (it holds the same bytes),
	// never replaced by one that is not yet durable.
	Put(ctx context.Context, name string, data []byte) error
	// Sync makes every object put through the batch so far durable.
	Sync(ctx context.Context) error
}

// ValidateName checks an object name: slash-separated segments of letters,
// digits, '-', '_' and '.', none of them empty, "." or "..". It is what keeps a
// container name or an id from escaping the repository root.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if len(name) > 512 {
		return fmt.Errorf("%w: name longer than 512 bytes", ErrInvalidName)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q has an empty, \".\" or \"..\" segment", ErrInvalidName, name)
		}
		for _, r := range seg {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
			if !ok {
				return fmt.Errorf("%w: %q contains %q (allowed: letters, digits, '-', '_', '.', '/')", ErrInvalidName, name, r)
			}
		}
	}
	return nil
}
