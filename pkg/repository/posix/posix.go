// Package posix is the default backup repository backend: objects are files
// under a directory. A put is atomic and durable: written to a temporary
// file, fsynced, renamed into place, and the directory fsynced. A batch
// (repository.Batcher) writes and renames first and fsyncs everything it
// wrote at its Sync.
package posix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/errgroup"
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

var (
	_ repository.Repository = (*Repository)(nil)
	_ repository.Batcher    = (*Repository)(nil)
	_ repository.Opener     = (*Repository)(nil)
)

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

// OpenExisting opens the existing directory dir as a repository to read,
// such as one another program writes (Cinder's backup directory): it
// creates nothing and removes nothing.
func OpenExisting(dir string) (*Repository, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("posix repository: %w", translate(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("posix repository: %s is not a directory", abs)
	}
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

// Open implements repository.Opener. The object's pages leave the page
// cache when the reader is closed, as after a Get.
func (r *Repository) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := r.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, translate(err))
	}
	if fi, err := f.Stat(); err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = fs.ErrNotExist
		}
		return nil, fmt.Errorf("open %s: %w", name, translate(err))
	}
	return &objectReader{f: f, name: name}, nil
}

// objectReader is an open object: read errors name it.
type objectReader struct {
	f    *os.File
	name string
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.f.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read %s: %w", o.name, translate(err))
	}
	return n, err
}

func (o *objectReader) Close() error {
	unix.Fadvise(int(o.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return o.f.Close()
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

// NewBatch implements repository.Batcher: a batch's puts write and rename
// without fsync, and its Sync fsyncs every object and directory they
// touched, several at once, so a backup of many small objects pays for a
// few journal commits instead of two per object.
func (r *Repository) NewBatch() repository.Batch {
	return &batch{r: r, dirs: map[string]bool{}}
}

// batchSyncers is how many fsyncs a batch's Sync runs at once.
const batchSyncers = 8

type batch struct {
	r     *Repository
	mu    sync.Mutex
	files []string
	dirs  map[string]bool
}

// Put implements repository.Batch. The object is renamed into place only
// where no object of that name exists (renameat2 RENAME_NOREPLACE), so an
// object that is durable is never replaced by one that is not yet. A
// filesystem without RENAME_NOREPLACE gets a durable put instead.
func (b *batch) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := b.r.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	tmp := filepath.Join(dir, fmt.Sprintf("%s%d-%d", tmpPrefix, os.Getpid(), b.r.seq.Add(1)))
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
	case errors.Is(err, syscall.EEXIST):
		// Stored already, maybe by another batch not yet synced: this
		// batch's Sync makes it durable too.
		os.Remove(tmp)
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EOPNOTSUPP):
		os.Remove(tmp)
		return b.r.Put(ctx, name, data)
	default:
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", name, translate(err))
	}
	b.mu.Lock()
	b.files = append(b.files, p)
	b.dirs[dir] = true
	b.mu.Unlock()
	return nil
}

// Sync implements repository.Batch: the objects first, then their
// directories (which make the renames durable). Objects leave the page
// cache once synced, as after a Put.
func (b *batch) Sync(ctx context.Context) error {
	b.mu.Lock()
	files, dirs := b.files, b.dirs
	b.files, b.dirs = nil, map[string]bool{}
	b.mu.Unlock()
	syncAll := func(paths []string, drop bool) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(batchSyncers)
		for _, p := range paths {
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err
				}
				f, err := os.Open(p)
				if err != nil {
					return fmt.Errorf("sync %s: %w", p, translate(err))
				}
				defer f.Close()
				if err := f.Sync(); err != nil {
					return fmt.Errorf("sync %s: %w", p, translate(err))
				}
				if drop {
					unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				}
				return nil
			})
		}
		return g.Wait()
	}
	err := syncAll(files, true)
	if err == nil {
		err = syncAll(slices.Collect(maps.Keys(dirs)), false)
	}
	if err != nil {
		// Still to be made durable: a retry syncs them again.
		b.mu.Lock()
		b.files = append(b.files, files...)
		maps.Copy(b.dirs, dirs)
		b.mu.Unlock()
	}
	return err
}
