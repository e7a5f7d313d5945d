package backup

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/location"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// Backups imported from Cinder stay where Cinder's chunked backup drivers
// wrote them: the row records the driver (Origin), the repository
// (SourceURL: a directory, or s3://host:port/bucket), the container
// (Container: a directory under it, or the bucket) and the object prefix
// (SourcePrefix). Restores and verifies read them there with pkg/cinder;
// a delete forgets the row and leaves Cinder's objects alone.

// originPrefix starts the Origin of every backup imported from Cinder.
const originPrefix = "cinder-"

// cinderRepos opens Cinder's repositories, once each, read-only.
type cinderRepos struct {
	db *backupdb.Store
	// defaultURL is the repository of records imported without one
	// (--cinder-repository).
	defaultURL string
	// creds carries the S3 credentials (the backup service's own).
	creds location.Config

	mu    sync.Mutex
	repos map[string]repository.Repository
}

var _ backupjob.Imported = (*cinderRepos)(nil)

func newCinderRepos(db *backupdb.Store, defaultURL string, creds location.Config) *cinderRepos {
	return &cinderRepos{db: db, defaultURL: defaultURL, creds: creds, repos: map[string]repository.Repository{}}
}

// open opens the repository at u (read-only: nothing is created or
// removed), or returns the one open already.
func (c *cinderRepos) open(ctx context.Context, u string) (repository.Repository, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.repos[u]; ok {
		return r, nil
	}
	cfg := c.creds
	cfg.URL, cfg.Existing = u, true
	r, err := location.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open Cinder's repository %s: %w", u, err)
	}
	c.repos[u] = r
	return r, nil
}

// Close closes the repositories opened.
func (c *cinderRepos) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.repos {
		r.Close()
	}
	c.repos = map[string]repository.Repository{}
}

// repositoryURL is where a record's objects are read from: given (or the
// default) as a directory or s3://host:port[/bucket]; for S3 the bucket is
// the record's container, and a bucket given must be that one.
func (c *cinderRepos) repositoryURL(given string, rec *cinder.Record) (string, error) {
	if given == "" {
		given = c.defaultURL
	}
	if given == "" {
		return "", rpcerr.Invalid("the record is Cinder's (%s): name the repository Cinder wrote it to (a directory, or s3://host:port/bucket), or start the backup service with --cinder-repository", rec.Service)
	}
	u, err := location.Parse(given)
	if err != nil {
		return "", rpcerr.Invalid("repository: %v", err)
	}
	isS3 := u.Scheme == "s3" || u.Scheme == "s3s"
	switch {
	case rec.Kind == cinder.S3 && !isS3:
		return "", rpcerr.Invalid("backup %s was written by Cinder's S3 driver to bucket %q: the repository must be s3://host:port or s3s://host:port, not %q", rec.ID, rec.Container, given)
	case rec.Kind != cinder.S3 && isS3:
		return "", rpcerr.Invalid("backup %s was written by Cinder's %s driver to a directory: the repository must be that directory, not %q", rec.ID, rec.Kind, given)
	case !isS3:
		return given, nil
	}
	if bucket := strings.Trim(u.Path, "/"); bucket != "" && bucket != rec.Container {
		return "", rpcerr.Invalid("backup %s is in bucket %q, not %q", rec.ID, rec.Container, bucket)
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/" + rec.Container}).String(), nil
}

// link is where backup b's objects are.
func link(b *backupdb.Backup) cinder.Link {
	return cinder.Link{BackupID: b.ID, Kind: cinder.Kind(strings.TrimPrefix(b.Origin, originPrefix)), Container: b.Container, Prefix: b.SourcePrefix}
}

// chain returns the links of b's chain, oldest first, and its repository:
// every backup of a chain must be imported, and from one repository.
func (c *cinderRepos) chain(ctx context.Context, b *backupdb.Backup) ([]cinder.Link, repository.Repository, error) {
	links := []cinder.Link{link(b)}
	for cur := b; cur.ParentID != ""; {
		p, err := c.db.Get(ctx, "", cur.ParentID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, rpcerr.Precondition("backup %s restores over its parent %s, which is not imported here: import it first", cur.ID, cur.ParentID)
		}
		if err != nil {
			return nil, nil, err
		}
		if !strings.HasPrefix(p.Origin, originPrefix) || p.SourceURL != b.SourceURL {
			return nil, nil, rpcerr.Precondition("backup %s's parent %s is not a backup imported from the same Cinder repository (%s)", cur.ID, p.ID, b.SourceURL)
		}
		links = append([]cinder.Link{link(p)}, links...)
		cur = p
	}
	repo, err := c.open(ctx, b.SourceURL)
	if err != nil {
		return nil, nil, err
	}
	return links, repo, nil
}

// Restore implements backupjob.Imported: the chain of b, newest over
// oldest, every block checked.
func (c *cinderRepos) Restore(ctx context.Context, b *backupdb.Backup, dst blockdev.Device, progress func(engine.Progress)) error {
	links, repo, err := c.chain(ctx, b)
	if err != nil {
		return err
	}
	return cinder.Restore(ctx, repo, links, dst, func(done, total int64) {
		if progress != nil {
			progress(engine.Progress{Done: done, Total: total, Read: done})
		}
	})
}

// verify checks every object of b's chain.
func (c *cinderRepos) verify(ctx context.Context, b *backupdb.Backup) (*backupv1.VerifyBackupResponse, error) {
	links, repo, err := c.chain(ctx, b)
	if err != nil {
		return nil, err
	}
	rep, err := cinder.Verify(ctx, repo, links, nil)
	if err != nil {
		return nil, err
	}
	out := &backupv1.VerifyBackupResponse{Ok: len(rep.Damaged) == 0, ChunksChecked: int64(rep.Objects)}
	for _, d := range rep.Damaged {
		out.Damaged = append(out.Damaged, &backupv1.DamagedChunk{ChunkId: d.Object, Problem: d.Error()})
	}
	return out, nil
}

// importRecord registers the backup of a Cinder export record, after
// reading its chain's metadata where the record says it is.
func (c *cinderRepos) importRecord(ctx context.Context, project string, rec *backupv1.BackupRecord, given string) (*backupdb.Backup, error) {
	r, err := cinder.ParseExportRecord(rec.GetBackupService(), rec.GetBackupUrl())
	if err != nil {
		return nil, err
	}
	if r.EncryptionKeyID != "" {
		return nil, rpcerr.Invalid("backup %s is of an encrypted volume: its data is ciphertext whose key (%s) stays in Cinder's key manager; blockvault cannot restore it", r.ID, r.EncryptionKeyID)
	}
	u, err := c.repositoryURL(given, r)
	if err != nil {
		return nil, err
	}
	if _, err := c.db.Get(ctx, "", r.ID); err == nil {
		return nil, rpcerr.Exists("backup %s is already registered here", r.ID)
	}
	now := time.Now().UTC()
	b := &backupdb.Backup{ID: r.ID, ProjectID: project, VolumeID: r.VolumeID, SnapshotID: r.SnapshotID, ParentID: r.ParentID,
		IsIncremental: r.Incremental(), Name: r.Name, Description: r.Description, Container: r.Container,
		Status: lifecycle.BackupAvailable, SizeBytes: r.SizeGB * gib, ObjectCount: int64(r.ObjectCount),
		AvailabilityZone: r.AvailabilityZone, Metadata: store.EncodeMap(r.Metadata),
		Origin: originPrefix + string(r.Kind), SourceURL: u, SourcePrefix: r.Prefix, CreatedAt: r.CreatedAt.UTC(), DataTimestamp: &now}
	if !r.DataTimestamp.IsZero() {
		ts := r.DataTimestamp.UTC()
		b.DataTimestamp = &ts
	} else if !r.CreatedAt.IsZero() {
		b.DataTimestamp = &b.CreatedAt
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = now
	}
	// The chain must be readable now, not at the first restore: its parent
	// imported, its metadata and newest sha256file where the record says.
	links, repo, err := c.chain(ctx, b)
	if err != nil {
		return nil, err
	}
	info, err := cinder.Inspect(ctx, repo, links)
	if err != nil {
		return nil, fmt.Errorf("read backup %s in Cinder's repository %s: %w", r.ID, u, err)
	}
	if b.SizeBytes < info.Size {
		b.SizeBytes = roundMiB(info.Size)
	}
	if err := c.db.Create(ctx, b); err != nil {
		return nil, err
	}
	return b, nil
}

// isCinderRecord reports whether a record names one of Cinder's backup
// drivers.
func isCinderRecord(rec *backupv1.BackupRecord) bool {
	return strings.HasPrefix(rec.GetBackupService(), "cinder.")
}
