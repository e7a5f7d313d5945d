// Package backupdb is the backup service's own table (backups) and the
// queries on it. temp_volume_id and temp_snapshot_id are the blueprint's
// columns: the temporary resources of a running backup, recorded before they
// are created and cleared after they are gone, so a restart can remove them.
// tracking_snapshot_id is the snapshot an available backup keeps (with
// changed-block tracking on) so that the next incremental backup of the
// volume reads only what changed since.
package backupdb

import (
	"context"
	"fmt"
	"time"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
	"gorm.io/gorm"
)

// Backup is a row of backups.
type Backup struct {
	ID               string `gorm:"primaryKey;size:36"`
	ProjectID        string `gorm:"size:64;not null;index"`
	VolumeID         string `gorm:"size:36;not null;index"`
	SnapshotID       string `gorm:"size:36"`
	Name             string `gorm:"size:255"`
	Description      string `gorm:"size:255"`
	Container        string `gorm:"size:255"`
	Status           string `gorm:"size:32;not null;index"`
	FailReason       string `gorm:"size:1024"`
	SizeBytes        int64  `gorm:"not null"`
	ObjectCount      int64
	IsIncremental    bool
	ParentID         string `gorm:"size:36;index"`
	AvailabilityZone string `gorm:"size:255"`
	TempVolumeID     string `gorm:"size:36"`
	TempSnapshotID   string `gorm:"size:36"`
	Strategy         string `gorm:"size:32"`
	RestoreVolumeID  string `gorm:"size:36"`
	ProgressOp       string `gorm:"size:16"`
	BytesDone        int64
	BytesTotal       int64
	BytesRead        int64
	BytesStored      int64
	StartedAt        *time.Time
	DataTimestamp    *time.Time
	Metadata         string `gorm:"type:text"`
	// OwnerNode is the backup-service node running the backup's current job.
	OwnerNode string `gorm:"size:255;index"`
	// LeaseExpiresAt is when the owner's claim on the job lapses unless
	// its heartbeat renews it; after that another node may take the job over.
	LeaseExpiresAt *time.Time `gorm:"index"`
	// TrackingSnapshotID is the snapshot this backup was read from, kept
	// for the next incremental backup's changed ranges ("" when none).
	TrackingSnapshotID string `gorm:"size:36;index"`
	// Origin is "" for a backup blockvault wrote, or where an imported one
	// came from ("cinder-posix", "cinder-nfs", "cinder-s3"); SourceURL and
	// SourcePrefix say where its data lies (the repository, and the object
	// prefix within Container).
	Origin       string `gorm:"size:32"`
	SourceURL    string `gorm:"size:1024"`
	SourcePrefix string `gorm:"size:512"`
	// RestoreLive marks the running restore (restoring) as a live one: the
	// target volume is in use while it fills, so a restart resumes the
	// restore instead of failing it.
	RestoreLive bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Owner names the backup service's migration table.
const Owner = "backup_service"

// QuotaLimitsTable holds the limits of backups and backup gigabytes
// admins set through the API.
const QuotaLimitsTable = "backup_quota_limits"

// Migrations are the backup service's schema versions, oldest first.
var Migrations = []store.Migration{
	{Version: 1, Name: "backups", Up: func(tx *gorm.DB) error {
		type backup struct {
			ID               string `gorm:"primaryKey;size:36"`
			ProjectID        string `gorm:"size:64;not null;index:idx_backups_project_id"`
			VolumeID         string `gorm:"size:36;not null;index:idx_backups_volume_id"`
			SnapshotID       string `gorm:"size:36"`
			Name             string `gorm:"size:255"`
			Description      string `gorm:"size:255"`
			Container        string `gorm:"size:255"`
			Status           string `gorm:"size:32;not null;index:idx_backups_status"`
			FailReason       string `gorm:"size:1024"`
			SizeBytes        int64  `gorm:"not null"`
			ObjectCount      int64
			IsIncremental    bool
			ParentID         string `gorm:"size:36;index:idx_backups_parent_id"`
			AvailabilityZone string `gorm:"size:255"`
			TempVolumeID     string `gorm:"size:36"`
			TempSnapshotID   string `gorm:"size:36"`
			Strategy         string `gorm:"size:32"`
			RestoreVolumeID  string `gorm:"size:36"`
			ProgressOp       string `gorm:"size:16"`
			BytesDone        int64
			BytesTotal       int64
			BytesRead        int64
			BytesStored      int64
			StartedAt        *time.Time
			DataTimestamp    *time.Time
			Metadata         string `gorm:"type:text"`
			OwnerNode        string `gorm:"size:255;index:idx_backups_owner_node"`
			CreatedAt        time.Time
			UpdatedAt        time.Time
		}
		return tx.Table("backups").Migrator().CreateTable(&backup{})
	}},
	{Version: 2, Name: "job leases", Up: func(tx *gorm.DB) error {
		type backup struct {
			LeaseExpiresAt *time.Time `gorm:"index:idx_backups_lease_expires_at"`
		}
		m := tx.Table("backups").Migrator()
		if err := m.AddColumn(&backup{}, "LeaseExpiresAt"); err != nil {
			return err
		}
		return m.CreateIndex(&backup{}, "LeaseExpiresAt")
	}},
	{Version: 3, Name: "changed-block tracking snapshots", Up: func(tx *gorm.DB) error {
		type backup struct {
			TrackingSnapshotID string `gorm:"size:36;index:idx_backups_tracking_snapshot_id"`
		}
		m := tx.Table("backups").Migrator()
		if err := m.AddColumn(&backup{}, "TrackingSnapshotID"); err != nil {
			return err
		}
		return m.CreateIndex(&backup{}, "TrackingSnapshotID")
	}},
	{Version: 4, Name: "quota limits set through the API", Up: func(tx *gorm.DB) error {
		return store.CreateQuotaLimitsTable(tx, QuotaLimitsTable)
	}},
	{Version: 5, Name: "backups imported from Cinder", Up: func(tx *gorm.DB) error {
		type backup struct {
			Origin       string `gorm:"size:32"`
			SourceURL    string `gorm:"size:1024"`
			SourcePrefix string `gorm:"size:512"`
		}
		m := tx.Table("backups").Migrator()
		for _, c := range []string{"Origin", "SourceURL", "SourcePrefix"} {
			if err := m.AddColumn(&backup{}, c); err != nil {
				return err
			}
		}
		return nil
	}},
	{Version: 6, Name: "live restores", Up: func(tx *gorm.DB) error {
		type backup struct {
			RestoreLive bool
		}
		return tx.Table("backups").Migrator().AddColumn(&backup{}, "RestoreLive")
	}},
}

// Store is the backup service's access to its table.
type Store struct {
	db *gorm.DB
}

// New returns a Store on db, migrated to the latest schema.
func New(ctx context.Context, db *gorm.DB) (*Store, error) {
	if _, err := store.Migrate(ctx, db, Owner, Migrations); err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

// DB is the underlying connection.
func (s *Store) DB() *gorm.DB { return s.db }

// Create inserts b.
func (s *Store) Create(ctx context.Context, b *Backup) error {
	return store.Translate(s.db.WithContext(ctx).Create(b).Error, "create backup "+b.ID)
}

// Get returns backup id of project ("" for any project).
func (s *Store) Get(ctx context.Context, project, id string) (*Backup, error) {
	var b Backup
	q := s.db.WithContext(ctx)
	if project != "" {
		q = q.Where("project_id = ?", project)
	}
	if err := q.Where("id = ?", id).Take(&b).Error; err != nil {
		return nil, store.Translate(err, "backup "+id)
	}
	return &b, nil
}

// Filter selects backups to list.
type Filter struct {
	Project                string
	Name, Status, VolumeID string
	Statuses               []string
	Page                   store.Page
}

// List lists backups newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Backup, error) {
	q := s.db.WithContext(ctx).Model(&Backup{})
	if f.Project != "" {
		q = q.Where("project_id = ?", f.Project)
	}
	if f.Name != "" {
		q = q.Where("name = ?", f.Name)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if len(f.Statuses) > 0 {
		q = q.Where("status IN ?", f.Statuses)
	}
	if f.VolumeID != "" {
		q = q.Where("volume_id = ?", f.VolumeID)
	}
	q, err := store.Paginate(ctx, s.db, q, &Backup{}, f.Page)
	if err != nil {
		return nil, err
	}
	var out []Backup
	return out, store.Translate(q.Find(&out).Error, "list backups")
}

// Transition applies event ev of the backup machine (lifecycle.Backups)
// to backup id, setting extra columns in the same conditional update (see
// store.Transition).
func (s *Store) Transition(ctx context.Context, id string, ev lifecycle.Event, extra map[string]any) (string, error) {
	return store.Transition(ctx, s.db, &Backup{}, lifecycle.Backups, ev, id, extra)
}

// Update sets columns of backup id other than its status (which only
// Transition writes).
func (s *Store) Update(ctx context.Context, id string, cols map[string]any) error {
	if _, ok := cols["status"]; ok {
		return fmt.Errorf("backup %s: status changes only through an event of the lifecycle table: %w", id, lifecycle.ErrInvalidTransition)
	}
	cols["updated_at"] = time.Now().UTC()
	res := s.db.WithContext(ctx).Model(&Backup{}).Where("id = ?", id).Updates(cols)
	if res.Error == nil && res.RowsAffected == 0 {
		return fmt.Errorf("backup %s: %w", id, store.ErrNotFound)
	}
	return store.Translate(res.Error, "update backup "+id)
}

// Delete removes the backup row.
func (s *Store) Delete(ctx context.Context, id string) error {
	return store.Translate(s.db.WithContext(ctx).Where("id = ?", id).Delete(&Backup{}).Error, "delete backup "+id)
}

// CountDependents counts the backups whose parent is id.
func (s *Store) CountDependents(ctx context.Context, id string) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Backup{}).Where("parent_id = ?", id).Count(&n).Error
	return n, store.Translate(err, "count dependent backups")
}

// LatestAvailable returns the newest available backup blockvault wrote of
// a volume, or ErrNotFound: the parent of an incremental backup. Imported
// backups (Origin) are passed over: their data is in another format.
func (s *Store) LatestAvailable(ctx context.Context, project, volumeID string) (*Backup, error) {
	var b Backup
	err := s.db.WithContext(ctx).Where("project_id = ? AND volume_id = ? AND status = ? AND origin = ?", project, volumeID, lifecycle.BackupAvailable, "").
		Order("created_at DESC").Take(&b).Error
	if err != nil {
		return nil, store.Translate(err, "latest available backup of volume "+volumeID)
	}
	return &b, nil
}

// RenewLeases extends to until the leases of node's unfinished jobs and
// returns how many it renewed.
func (s *Store) RenewLeases(ctx context.Context, node string, statuses []string, until time.Time) (int64, error) {
	res := s.db.WithContext(ctx).Model(&Backup{}).Where("owner_node = ? AND status IN ?", node, statuses).
		Update("lease_expires_at", until)
	return res.RowsAffected, store.Translate(res.Error, "renew leases")
}

// Expired lists the unfinished jobs of other nodes whose lease lapsed
// before now.
func (s *Store) Expired(ctx context.Context, node string, statuses []string, now time.Time) ([]Backup, error) {
	var out []Backup
	err := s.db.WithContext(ctx).Where("owner_node <> ? AND status IN ? AND lease_expires_at IS NOT NULL AND lease_expires_at < ?",
		node, statuses, now).Find(&out).Error
	return out, store.Translate(err, "expired leases")
}

// Claim takes job id over from node from for node to, if its lease still
// lapsed before now: one node wins, however many try at once.
func (s *Store) Claim(ctx context.Context, id, from, to string, now, until time.Time) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Backup{}).
		Where("id = ? AND owner_node = ? AND lease_expires_at < ?", id, from, now).
		Updates(map[string]any{"owner_node": to, "lease_expires_at": until})
	return res.RowsAffected == 1, store.Translate(res.Error, "claim backup "+id)
}

// ProjectUsage counts project's backups and their sizes.
func (s *Store) ProjectUsage(ctx context.Context, project string) (count, bytes int64, err error) {
	var row struct{ N, B int64 }
	err = s.db.WithContext(ctx).Model(&Backup{}).Select("COUNT(*) AS n, COALESCE(SUM(size_bytes), 0) AS b").
		Where("project_id = ?", project).Scan(&row).Error
	return row.N, row.B, store.Translate(err, "backup usage")
}

// TrackedBy lists the backups of volumeID that keep a changed-block
// tracking snapshot, except backup except.
func (s *Store) TrackedBy(ctx context.Context, volumeID, except string) ([]Backup, error) {
	var out []Backup
	err := s.db.WithContext(ctx).Where("volume_id = ? AND tracking_snapshot_id <> '' AND id <> ?", volumeID, except).Find(&out).Error
	return out, store.Translate(err, "tracking snapshots of volume "+volumeID)
}
