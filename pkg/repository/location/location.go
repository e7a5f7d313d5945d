// Package location opens a backup repository by its URL: the backends are
// registered explicitly, each for the URL schemes it serves, and the
// settings a URL does not carry (the S3 credentials) are one Config with
// one set of flags, the same in the backup service and the CLI.
//
//	/srv/backups, relative/dir, file:///srv/backups   a directory (posix)
//	s3://host:port/bucket[/prefix]                    an S3-compatible store
//	s3s://host:port/bucket[/prefix]                   the same over TLS
package location

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/posix"
	"github.com/blockvault/blockvault/pkg/repository/s3"
)

// ErrUnknownScheme: no registered backend serves the URL's scheme.
var ErrUnknownScheme = errors.New("no repository backend for this URL scheme")

// Config names a repository and carries what its URL does not.
type Config struct {
	// URL is where the repository is (see the package comment).
	URL string
	// S3AccessKey, S3SecretKey and S3Region are the S3 credentials.
	S3AccessKey, S3SecretKey, S3Region string
	// Existing opens a repository that must exist already, to read it
	// (another program's): no directory or bucket is created, and nothing
	// is cleaned up.
	Existing bool
}

// FlagSet is what Flags binds to: a *flag.FlagSet or a *pflag.FlagSet.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
}

// Flags binds c to --repository and the S3 flags (--s3-access-key,
// --s3-secret-key, --s3-region). defaultNote, when not empty, says in the
// help what an empty --repository means.
func Flags(fs FlagSet, c *Config, defaultNote string) {
	usage := "backup repository: a directory"
	if defaultNote != "" {
		usage += " (default: " + defaultNote + ")"
	}
	fs.StringVar(&c.URL, "repository", c.URL, usage+" or s3://host:port/bucket[/prefix] (s3s:// for TLS)")
	fs.StringVar(&c.S3AccessKey, "s3-access-key", c.S3AccessKey, "S3 access key (or the environment variable BLOCKVAULT_S3_ACCESS_KEY)")
	fs.StringVar(&c.S3SecretKey, "s3-secret-key", c.S3SecretKey, "S3 secret key (prefer the environment variable BLOCKVAULT_S3_SECRET_KEY)")
	fs.StringVar(&c.S3Region, "s3-region", c.S3Region, "S3 region")
}

// Backend opens the repositories of some URL schemes.
type Backend struct {
	// Schemes are the URL schemes it serves; "" is a plain path.
	Schemes []string
	// Open opens the repository u names with the settings of c.
	Open func(ctx context.Context, u *url.URL, c Config) (repository.Repository, error)
}

// Registry maps URL schemes to backends.
type Registry struct {
	backends map[string]Backend
}

// NewRegistry returns a registry of the given backends. Two backends
// serving one scheme are a programming error: it panics.
func NewRegistry(backends ...Backend) *Registry {
	r := &Registry{backends: map[string]Backend{}}
	for _, b := range backends {
		for _, s := range b.Schemes {
			if _, dup := r.backends[s]; dup {
				panic(fmt.Sprintf("location: two backends for scheme %q", s))
			}
			r.backends[s] = b
		}
	}
	return r
}

// Default is the registry of blockvault's backends: posix (a plain path or
// file://) and S3 (s3://, s3s://).
func Default() *Registry { return NewRegistry(Posix(), S3()) }

// Open opens the repository c.URL names with the default registry.
func Open(ctx context.Context, c Config) (repository.Repository, error) {
	return Default().Open(ctx, c)
}

// Open opens the repository c.URL names.
func (r *Registry) Open(ctx context.Context, c Config) (repository.Repository, error) {
	u, err := Parse(c.URL)
	if err != nil {
		return nil, err
	}
	b, ok := r.backends[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("repository %q: %w (want one of %s)", c.URL, ErrUnknownScheme, r.schemes())
	}
	return b.Open(ctx, u, c)
}

func (r *Registry) schemes() string {
	var s []string
	for k := range r.backends {
		if k == "" {
			k = "a directory"
		} else {
			k += "://"
		}
		s = append(s, k)
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

var hasScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://`)

// Parse reads a repository URL: one without a scheme ("/srv/backups",
// "relative/dir") is a path, with the empty scheme and the path as is.
func Parse(loc string) (*url.URL, error) {
	if loc == "" {
		return nil, errors.New("repository: empty location")
	}
	if !hasScheme.MatchString(loc) {
		return &url.URL{Path: loc}, nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", loc, err)
	}
	return u, nil
}

// Directory returns the directory a posix repository's URL names, and
// false for any other URL.
func Directory(loc string) (string, bool) {
	u, err := Parse(loc)
	if err != nil || u.Scheme != "" && u.Scheme != "file" {
		return "", false
	}
	dir, err := fileDir(u)
	return dir, err == nil
}

func fileDir(u *url.URL) (string, error) {
	if u.Scheme == "file" && (u.Host != "" && u.Host != "localhost" || u.Path == "") {
		return "", fmt.Errorf("repository %q: want file:///absolute/path", u.String())
	}
	return u.Path, nil
}

// Posix is the backend of directories: a plain path or file:///path.
func Posix() Backend {
	return Backend{Schemes: []string{"", "file"}, Open: func(_ context.Context, u *url.URL, c Config) (repository.Repository, error) {
		dir, err := fileDir(u)
		if err != nil {
			return nil, err
		}
		if c.Existing {
			return posix.OpenExisting(dir)
		}
		return posix.New(dir)
	}}
}

// S3 is the backend of S3-compatible stores: s3://host:port/bucket[/prefix],
// s3s:// for TLS. It creates the bucket when it does not exist (unless
// Config.Existing).
func S3() Backend {
	return Backend{Schemes: []string{"s3", "s3s"}, Open: func(ctx context.Context, u *url.URL, c Config) (repository.Repository, error) {
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if u.Host == "" || bucket == "" {
			return nil, fmt.Errorf("repository %q: want s3://host:port/bucket[/prefix]", c.URL)
		}
		return s3.New(ctx, s3.Config{Endpoint: u.Host, Bucket: bucket, Prefix: prefix, AccessKey: c.S3AccessKey,
			SecretKey: c.S3SecretKey, Region: c.S3Region, UseTLS: u.Scheme == "s3s", CreateBucket: !c.Existing})
	}}
}
