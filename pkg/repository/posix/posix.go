// Package posix is the default backup repository backend: objects are files
// under a directory. A put is atomic and durable: written to a temporary
// file, fsynced, renamed into place, and the directory fsynced.
package posix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/blockvault/blockvault/pkg/repository"
)

// tmpPrefix marks files of puts in progress; List skips them and New
// removes those a crash left.
const tmpPrefix = ".tmp-"

// Repository is a directory of objects.
type Repository struct {
	root string
	seq  atomic.Uint64
}

var _ repository.Repository = (*Repository)(nil)

// New opens (creating) the repository at dir and removes leftover
// temporary files.
func New(dir string) (*Repository, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("posix repository: %w", translate(err))
	}
	filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), tmpPrefix) {
			os.Remove(p)
		}
		return nil
	})
	return &Repository{root: abs}, nil
}

// Location implements repository.Repository.
func (r *Repository) Location() string { return r.root }

// Close implements repository.Repository.
func (r *Repository) Close() error { return nil }

func (r *Repository) path(name string) (string, error) {
	if err := repository.ValidateName(name); err != nil {
		return "", err
	}
	return filepath.Join(r.root, filepath.FromSlash(name)), nil
}

// translate maps filesystem errors to the repository's sentinels.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", repository.ErrNotFound, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", repository.ErrNoSpace, err)
	}
	return err
}

// Put implements repository.Repository.
func (r *Repository) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := r.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	tmp := filepath.Join(dir, fmt.Sprintf("%s%d-%d", tmpPrefix, os.Getpid(), r.seq.Add(1)))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		// The object is on disk: drop its pages from the page cache, so a
		// backup does not push the node's working set out with data nobody
		// reads until a restore (advice only; an error changes nothing).
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("put %s: sync directory: %w", name, translate(err))
		}
	}
	return nil
}

// Get implements repository.Repository.
func (r *Repository) Get(ctx context.Context, name string) ([]byte, error) {
	return r.GetInto(ctx, name, nil)
}

// GetInto implements repository.BufferGetter.
func (r *Repository) GetInto(ctx context.Context, name string, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := r.path(name)
	if err != nil {
		return nil, err
	}
	b, err := readDropping(p, buf)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, translate(err))
	}
	return b, nil
}

// Stat implements repository.Repository.
func (r *Repository) Stat(ctx context.Context, name string) (repository.ObjectInfo, error) {
	p, err := r.path(name)
	if err != nil {
		return repository.ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return repository.ObjectInfo{}, fmt.Errorf("stat %s: %w", name, translate(err))
	}
	if fi.IsDir() {
		return repository.ObjectInfo{}, fmt.Errorf("stat %s: %w", name, repository.ErrNotFound)
	}
	return repository.ObjectInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements repository.Repository.
func (r *Repository) List(ctx context.Context, prefix string, fn func(repository.ObjectInfo) error) error {
	// Walk from the deepest directory the prefix names, then filter.
	start := r.root
	if i := strings.LastIndex(prefix, "/"); i > 0 {
		if err := repository.ValidateName(prefix[:i]); err != nil {
			return err
		}
		start = filepath.Join(r.root, filepath.FromSlash(prefix[:i]))
	}
	var infos []repository.ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(r.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		infos = append(infos, repository.ObjectInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %q: %w", prefix, translate(err))
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, info := range infos {
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements repository.Repository.
func (r *Repository) Delete(ctx context.Context, name string) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, translate(err))
	}
	return nil
}

// readDropping reads a whole file, then drops its pages from the page
// cache: objects are read once (by a restore or a verify), and keeping them
// would only push the node's working set out. It reads into buf's storage
// when the file fits.
func readDropping(p string, buf []byte) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := buf[:0]
	if n := fi.Size(); int64(cap(b)) >= n {
		b = b[:n]
	} else {
		b = make([]byte, n)
	}
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return b, nil
}
