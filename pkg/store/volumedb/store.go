package volumedb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/store"
	"gorm.io/gorm"
)

// Store is the volume manager's access to its tables.
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

// DB is the underlying connection (for tests and health checks).
func (s *Store) DB() *gorm.DB { return s.db }

// scope limits q to project unless project is "" (internal and admin calls).
func scope(q *gorm.DB, project string) *gorm.DB {
	if project == "" {
		return q
	}
	return q.Where("project_id = ?", project)
}

// CreateVolume inserts v.
func (s *Store) CreateVolume(ctx context.Context, v *Volume) error {
	return store.Translate(s.db.WithContext(ctx).Create(v).Error, "create volume "+v.ID)
}

// GetVolume returns the volume id of project ("" for any project).
func (s *Store) GetVolume(ctx context.Context, project, id string) (*Volume, error) {
	var v Volume
	err := scope(s.db.WithContext(ctx), project).Where("id = ?", id).Take(&v).Error
	if err != nil {
		return nil, store.Translate(err, "volume "+id)
	}
	return &v, nil
}

// VolumeFilter selects volumes to list.
type VolumeFilter struct {
	Project          string
	Name, Status     string
	IncludeTemporary bool
	Page             store.Page
}

// ListVolumes lists volumes newest first.
func (s *Store) ListVolumes(ctx context.Context, f VolumeFilter) ([]Volume, error) {
	q := scope(s.db.WithContext(ctx).Model(&Volume{}), f.Project)
	if f.Name != "" {
		q = q.Where("name = ?", f.Name)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if !f.IncludeTemporary {
		q = q.Where("temporary = ?", false)
	}
	q, err := store.Paginate(ctx, s.db, q, &Volume{}, f.Page)
	if err != nil {
		return nil, err
	}
	var out []Volume
	return out, store.Translate(q.Find(&out).Error, "list volumes")
}

// TransitionVolume applies event ev of the volume machine
// (lifecycle.Volumes) to volume id, setting extra columns in the same
// conditional update (see store.Transition).
func (s *Store) TransitionVolume(ctx context.Context, id string, ev lifecycle.Event, extra map[string]any) (string, error) {
	return store.Transition(ctx, s.db, &Volume{}, lifecycle.Volumes, ev, id, extra)
}

// BeginBackup is the blueprint's begin: status := backing-up and
// previous_status := the old status, in one conditional update, from
// available, or also from in-use when allowInUse.
func (s *Store) BeginBackup(ctx context.Context, id string, allowInUse bool) (string, error) {
	ev := lifecycle.BeginBackup
	if allowInUse {
		ev = lifecycle.BeginBackupInUse
	}
	return s.TransitionVolume(ctx, id, ev, nil)
}

// EndBackup returns a backing-up volume to its previous status (in-use or
// available), in one conditional update. A volume that is not backing-up
// is returned with ErrConflict.
func (s *Store) EndBackup(ctx context.Context, id string) (*Volume, error) {
	if _, err := s.TransitionVolume(ctx, id, lifecycle.EndBackup, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			v, gerr := s.GetVolume(ctx, "", id)
			if gerr != nil {
				return nil, gerr
			}
			return v, err
		}
		return nil, err
	}
	return s.GetVolume(ctx, "", id)
}

// DetachedDuringBackup records that a backing-up volume lost its last
// attachment: the end of the backup returns it to available, not in-use.
// The status itself does not change.
func (s *Store) DetachedDuringBackup(ctx context.Context, id string) error {
	err := s.db.WithContext(ctx).Model(&Volume{}).
		Where("id = ? AND status = ? AND previous_status = ?", id, lifecycle.VolumeBackingUp, lifecycle.VolumeInUse).
		Updates(map[string]any{"previous_status": lifecycle.VolumeAvailable, "updated_at": time.Now().UTC()}).Error
	return store.Translate(err, "update volume "+id)
}

// ListLiveVolumes lists the volumes a live restore fills (or failed to).
func (s *Store) ListLiveVolumes(ctx context.Context) ([]Volume, error) {
	var out []Volume
	err := s.db.WithContext(ctx).Where("live_status <> ?", "").Order("created_at").Find(&out).Error
	return out, store.Translate(err, "list live volumes")
}

// EndLive makes volume id an ordinary volume again: its live columns are
// cleared in one update.
func (s *Store) EndLive(ctx context.Context, id string) error {
	return s.UpdateVolume(ctx, id, map[string]any{"live_backup_id": "", "live_source": "", "live_status": "",
		"live_size": 0, "live_filled": 0})
}

// UpdateVolume sets columns of volume id other than its status (which only
// TransitionVolume writes).
func (s *Store) UpdateVolume(ctx context.Context, id string, cols map[string]any) error {
	if err := statusFree("volume", id, cols); err != nil {
		return err
	}
	res := s.db.WithContext(ctx).Model(&Volume{}).Where("id = ?", id).Updates(cols)
	if res.Error == nil && res.RowsAffected == 0 {
		return fmt.Errorf("volume %s: %w", id, store.ErrNotFound)
	}
	return store.Translate(res.Error, "update volume "+id)
}

// statusFree refuses an update of the status columns outside the lifecycle
// table.
func statusFree(kind, id string, cols map[string]any) error {
	for _, k := range []string{"status", "previous_status"} {
		if _, ok := cols[k]; ok {
			return fmt.Errorf("%s %s: %s changes only through an event of the lifecycle table: %w", kind, id, k, lifecycle.ErrInvalidTransition)
		}
	}
	return nil
}

// DeleteVolume removes the volume row.
func (s *Store) DeleteVolume(ctx context.Context, id string) error {
	return store.Translate(s.db.WithContext(ctx).Where("id = ?", id).Delete(&Volume{}).Error, "delete volume "+id)
}

// CountVolumeDependents counts the snapshots and attachments of a volume.
// Temporary snapshots (the backup service's) are not counted: see
// TemporarySnapshots.
func (s *Store) CountVolumeDependents(ctx context.Context, id string) (snapshots, attachments int64, err error) {
	if err := s.db.WithContext(ctx).Model(&Snapshot{}).Where("volume_id = ? AND temporary = ?", id, false).Count(&snapshots).Error; err != nil {
		return 0, 0, store.Translate(err, "count snapshots")
	}
	if err := s.db.WithContext(ctx).Model(&Attachment{}).Where("volume_id = ?", id).Count(&attachments).Error; err != nil {
		return 0, 0, store.Translate(err, "count attachments")
	}
	return snapshots, attachments, nil
}

// TemporarySnapshots lists the temporary snapshots of a volume: those of
// running backups, and those kept for changed-block tracking.
func (s *Store) TemporarySnapshots(ctx context.Context, volumeID string) ([]Snapshot, error) {
	var out []Snapshot
	err := s.db.WithContext(ctx).Where("volume_id = ? AND temporary = ?", volumeID, true).Find(&out).Error
	return out, store.Translate(err, "temporary snapshots of volume "+volumeID)
}

// CreateSnapshot inserts sn.
func (s *Store) CreateSnapshot(ctx context.Context, sn *Snapshot) error {
	return store.Translate(s.db.WithContext(ctx).Create(sn).Error, "create snapshot "+sn.ID)
}

// GetSnapshot returns the snapshot id of project ("" for any project).
func (s *Store) GetSnapshot(ctx context.Context, project, id string) (*Snapshot, error) {
	var sn Snapshot
	err := scope(s.db.WithContext(ctx), project).Where("id = ?", id).Take(&sn).Error
	if err != nil {
		return nil, store.Translate(err, "snapshot "+id)
	}
	return &sn, nil
}

// SnapshotFilter selects snapshots to list.
type SnapshotFilter struct {
	Project          string
	VolumeID, Status string
	IncludeTemporary bool
	Page             store.Page
}

// ListSnapshots lists snapshots newest first.
func (s *Store) ListSnapshots(ctx context.Context, f SnapshotFilter) ([]Snapshot, error) {
	q := scope(s.db.WithContext(ctx).Model(&Snapshot{}), f.Project)
	if f.VolumeID != "" {
		q = q.Where("volume_id = ?", f.VolumeID)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if !f.IncludeTemporary {
		q = q.Where("temporary = ?", false)
	}
	q, err := store.Paginate(ctx, s.db, q, &Snapshot{}, f.Page)
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	return out, store.Translate(q.Find(&out).Error, "list snapshots")
}

// TransitionSnapshot is TransitionVolume for snapshots (lifecycle.Snapshots).
func (s *Store) TransitionSnapshot(ctx context.Context, id string, ev lifecycle.Event, extra map[string]any) (string, error) {
	return store.Transition(ctx, s.db, &Snapshot{}, lifecycle.Snapshots, ev, id, extra)
}

// UpdateSnapshot sets columns of snapshot id other than its status.
func (s *Store) UpdateSnapshot(ctx context.Context, id string, cols map[string]any) error {
	if err := statusFree("snapshot", id, cols); err != nil {
		return err
	}
	res := s.db.WithContext(ctx).Model(&Snapshot{}).Where("id = ?", id).Updates(cols)
	if res.Error == nil && res.RowsAffected == 0 {
		return fmt.Errorf("snapshot %s: %w", id, store.ErrNotFound)
	}
	return store.Translate(res.Error, "update snapshot "+id)
}

// DeleteSnapshot removes the snapshot row.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	return store.Translate(s.db.WithContext(ctx).Where("id = ?", id).Delete(&Snapshot{}).Error, "delete snapshot "+id)
}

// CreateAttachment inserts a with its export (if any) in one transaction.
func (s *Store) CreateAttachment(ctx context.Context, a *Attachment, e *Export) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(a).Error; err != nil {
			return store.Translate(err, "create attachment")
		}
		if e != nil {
			if err := tx.Create(e).Error; err != nil {
				return store.Translate(err, "create export")
			}
		}
		return nil
	})
}

// GetAttachment returns the attachment id of project ("" for any).
func (s *Store) GetAttachment(ctx context.Context, project, id string) (*Attachment, error) {
	var a Attachment
	err := scope(s.db.WithContext(ctx), project).Where("id = ?", id).Take(&a).Error
	if err != nil {
		return nil, store.Translate(err, "attachment "+id)
	}
	return &a, nil
}

// ListAttachments lists the attachments of a volume, oldest first.
func (s *Store) ListAttachments(ctx context.Context, volumeID string) ([]Attachment, error) {
	var out []Attachment
	err := s.db.WithContext(ctx).Where("volume_id = ?", volumeID).Order("created_at").Find(&out).Error
	return out, store.Translate(err, "list attachments")
}

// DeleteAttachment removes an attachment and its exports.
func (s *Store) DeleteAttachment(ctx context.Context, id string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("attachment_id = ?", id).Delete(&Export{}).Error; err != nil {
			return store.Translate(err, "delete exports of attachment "+id)
		}
		return store.Translate(tx.Where("id = ?", id).Delete(&Attachment{}).Error, "delete attachment "+id)
	})
}

// CreateExport inserts e.
func (s *Store) CreateExport(ctx context.Context, e *Export) error {
	return store.Translate(s.db.WithContext(ctx).Create(e).Error, "create export")
}

// DeleteExport removes the export row; absent is not an error.
func (s *Store) DeleteExport(ctx context.Context, name string) error {
	return store.Translate(s.db.WithContext(ctx).Where("name = ?", name).Delete(&Export{}).Error, "delete export")
}

// ListExports lists every export (served again on restart).
func (s *Store) ListExports(ctx context.Context) ([]Export, error) {
	var out []Export
	return out, store.Translate(s.db.WithContext(ctx).Order("created_at").Find(&out).Error, "list exports")
}

// SnapshotExport returns the export of a snapshot, or ErrNotFound.
func (s *Store) SnapshotExport(ctx context.Context, snapshotID string) (*Export, error) {
	var e Export
	err := s.db.WithContext(ctx).Where("snapshot_id = ?", snapshotID).Take(&e).Error
	if err != nil {
		return nil, store.Translate(err, "export of snapshot "+snapshotID)
	}
	return &e, nil
}

// IsNotFound reports whether err is the store's not-found.
func IsNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// Usage is what a project holds, temporary volumes and snapshots (the
// backup service's) left out.
type Usage struct {
	Volumes, VolumeBytes, Snapshots, SnapshotBytes int64
}

// ProjectUsage counts project's volumes and snapshots and their sizes.
func (s *Store) ProjectUsage(ctx context.Context, project string) (Usage, error) {
	var u Usage
	var row struct{ N, B int64 }
	if err := s.db.WithContext(ctx).Model(&Volume{}).Select("COUNT(*) AS n, COALESCE(SUM(size_bytes), 0) AS b").
		Where("project_id = ? AND temporary = ?", project, false).Scan(&row).Error; err != nil {
		return u, store.Translate(err, "volume usage")
	}
	u.Volumes, u.VolumeBytes = row.N, row.B
	row.N, row.B = 0, 0
	if err := s.db.WithContext(ctx).Model(&Snapshot{}).Select("COUNT(*) AS n, COALESCE(SUM(size_bytes), 0) AS b").
		Where("project_id = ? AND temporary = ?", project, false).Scan(&row).Error; err != nil {
		return u, store.Translate(err, "snapshot usage")
	}
	u.Snapshots, u.SnapshotBytes = row.N, row.B
	return u, nil
}
