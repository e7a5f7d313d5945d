// Package quota holds per-project limits (volumes, gigabytes, snapshots,
// backups, backup gigabytes) and checks requests against them. Usage is not
// kept in counters that could drift: each check counts what the project's
// rows hold now, under a per-project lock so two requests cannot both take
// the last unit.
package quota

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Errors; pkg/rpcerr gives them their gRPC codes. The errors the checks
// return wrap them and say, in the Block Storage API's words, which limit
// refused what.
var (
	// ErrExceeded: a request would pass one of the project's limits.
	ErrExceeded = errors.New("quota exceeded")
	// ErrInvalidLimits: a quota set names a resource this service does not
	// keep, or a limit below -1.
	ErrInvalidLimits = errors.New("invalid quota set")
)

// refusal is an error whose text is the whole message a user sees.
type refusal struct {
	msg  string
	kind error
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...), kind: kind}
}

// The resources with quotas.
const (
	Volumes         = "volumes"
	Gigabytes       = "gigabytes"
	Snapshots       = "snapshots"
	Backups         = "backups"
	BackupGigabytes = "backup_gigabytes"
)

// Unlimited is a limit that never refuses.
const Unlimited = -1

// Limits maps a resource to its limit.
type Limits map[string]int64

// Config is the defaults and the per-project overrides file.
type Config struct {
	Defaults Limits
	// File holds "project resource=limit ..." lines.
	File string
}

// DefaultLimits are the Block Storage API's usual defaults.
func DefaultLimits() Limits {
	return Limits{Volumes: 10, Gigabytes: 1000, Snapshots: 10, Backups: 10, BackupGigabytes: 1000}
}

// Flags registers the default limits of resources on fs, and the file.
func Flags(fs *flag.FlagSet, c *Config, resources ...string) {
	for _, r := range resources {
		fs.Var(limitFlag{c.Defaults, r}, "quota-"+strings.ReplaceAll(r, "_", "-"),
			fmt.Sprintf("default per-project limit of %s (-1: none)", r))
	}
	fs.StringVar(&c.File, "quota-file", c.File, "per-project limits: lines of \"project resource=limit ...\"")
}

type limitFlag struct {
	l Limits
	r string
}

func (f limitFlag) String() string {
	if f.l == nil {
		return ""
	}
	return strconv.FormatInt(f.l[f.r], 10)
}

func (f limitFlag) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < Unlimited {
		return fmt.Errorf("want a number of at least -1")
	}
	f.l[f.r] = n
	return nil
}

// Quotas answers limits and serializes checks per project.
type Quotas struct {
	defaults  Limits
	overrides map[string]Limits
	// set is what admins set through the API (os-quota-sets), kept in the
	// daemon's database: it takes precedence over the file.
	setMu sync.RWMutex
	set   map[string]Limits

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New reads cfg's file (if any).
func New(cfg Config) (*Quotas, error) {
	q := &Quotas{defaults: cfg.Defaults, overrides: map[string]Limits{}, set: map[string]Limits{}, locks: map[string]*sync.Mutex{}}
	if q.defaults == nil {
		q.defaults = DefaultLimits()
	}
	if cfg.File == "" {
		return q, nil
	}
	f, err := os.Open(cfg.File)
	if err != nil {
		return nil, fmt.Errorf("quota file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		l := q.overrides[fs[0]]
		if l == nil {
			l = Limits{}
		}
		for _, kv := range fs[1:] {
			k, v, ok := strings.Cut(kv, "=")
			num, err := strconv.ParseInt(v, 10, 64)
			if _, known := DefaultLimits()[k]; !ok || !known || err != nil || num < Unlimited {
				return nil, fmt.Errorf("quota file %s line %d: %q: want resource=limit with a resource of %s", cfg.File, n, kv, strings.Join([]string{Volumes, Gigabytes, Snapshots, Backups, BackupGigabytes}, ", "))
			}
			l[k] = num
		}
		q.overrides[fs[0]] = l
	}
	return q, sc.Err()
}

// Known reports whether resource has a quota.
func Known(resource string) bool {
	_, ok := DefaultLimits()[resource]
	return ok
}

// Set records project's limits as an admin set them (os-quota-sets):
// they take precedence over the file's and the defaults.
func (q *Quotas) Set(project string, l Limits) {
	q.setMu.Lock()
	defer q.setMu.Unlock()
	cur := q.set[project]
	if cur == nil {
		cur = Limits{}
		q.set[project] = cur
	}
	for k, v := range l {
		cur[k] = v
	}
}

// Default is the default limit of resource.
func (q *Quotas) Default(resource string) int64 {
	if l, ok := q.defaults[resource]; ok {
		return l
	}
	return Unlimited
}

// Limit is project's limit of resource.
func (q *Quotas) Limit(project, resource string) int64 {
	q.setMu.RLock()
	l, ok := q.set[project][resource]
	q.setMu.RUnlock()
	if ok {
		return l
	}
	if l, ok := q.overrides[project][resource]; ok {
		return l
	}
	if l, ok := q.defaults[resource]; ok {
		return l
	}
	return Unlimited
}

// Unlimited reports whether project has no limit on any of resources (then
// there is nothing to check, or to serialize).
func (q *Quotas) Unlimited(project string, resources ...string) bool {
	for _, r := range resources {
		if q.Limit(project, r) != Unlimited {
			return false
		}
	}
	return true
}

// Lock serializes the checks of project until the returned func runs.
func (q *Quotas) Lock(project string) func() {
	q.mu.Lock()
	m := q.locks[project]
	if m == nil {
		m = &sync.Mutex{}
		q.locks[project] = m
	}
	q.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// CheckCount refuses one more of resource (a count) when used already
// reaches the limit.
func (q *Quotas) CheckCount(project, resource string, used int64) error {
	limit := q.Limit(project, resource)
	if limit == Unlimited || used+1 <= limit {
		return nil
	}
	what := map[string]string{Volumes: "VolumeLimitExceeded", Snapshots: "SnapshotLimitExceeded", Backups: "BackupLimitExceeded"}[resource]
	return refuse(ErrExceeded, "%s: Maximum number of %s allowed (%d) exceeded for quota '%s'.", what, resource, limit, resource)
}

// CheckGigabytes refuses requested more GiB of resource when used + requested
// passes the limit.
func (q *Quotas) CheckGigabytes(project, resource string, used, requested int64) error {
	limit := q.Limit(project, resource)
	if limit == Unlimited || used+requested <= limit {
		return nil
	}
	if resource == BackupGigabytes {
		return refuse(ErrExceeded, "Requested backup exceeds allowed Backup gigabytes quota. Requested %dG, quota is %dG and %dG has been consumed.", requested, limit, used)
	}
	return refuse(ErrExceeded, "Requested volume or snapshot exceeds allowed %s quota. Requested %dG, quota is %dG and %dG has been consumed.", resource, requested, limit, used)
}

// GiB rounds bytes up to whole GiB.
func GiB(bytes int64) int64 { return (bytes + 1<<30 - 1) >> 30 }

// Usage is a resource's limit (-1: none) and how much of it is in use.
type Usage struct{ Limit, InUse int64 }

// View is project's limits of resources with their use (inUse by
// resource); with defaults, the default limits instead. A nil Quotas has
// no limits.
func (q *Quotas) View(project string, resources []string, inUse map[string]int64, defaults bool) map[string]Usage {
	out := map[string]Usage{}
	for _, r := range resources {
		limit := int64(Unlimited)
		switch {
		case q == nil:
		case defaults:
			limit = q.Default(r)
		default:
			limit = q.Limit(project, r)
		}
		out[r] = Usage{Limit: limit, InUse: inUse[r]}
	}
	return out
}

// CheckUpdate checks limits an admin sets: resources of this daemon's
// (of resources), each -1 or more.
func CheckUpdate(limits Limits, resources []string) error {
	for r, l := range limits {
		if !slices.Contains(resources, r) {
			return refuse(ErrInvalidLimits, "Bad key(s) in quota set: %s (this service keeps quotas of %s)", r, strings.Join(resources, ", "))
		}
		if l < Unlimited {
			return refuse(ErrInvalidLimits, "Quota limit %d of %s is invalid: it must be -1 (no limit) or more.", l, r)
		}
	}
	return nil
}
