package volumedb

import (
	"time"

	"github.com/blockvault/blockvault/pkg/store"
	"gorm.io/gorm"
)

// Owner names the volume manager's migration table.
const Owner = "volume_manager"

// QuotaLimitsTable holds the limits of volumes, gigabytes and snapshots
// admins set through the API.
const QuotaLimitsTable = "volume_quota_limits"

// Migrations are the volume manager's schema versions, oldest first. A step
// is never edited once released; changes are new steps.
var Migrations = []store.Migration{
	{Version: 1, Name: "volumes, snapshots, attachments, exports", Up: func(tx *gorm.DB) error {
		// Frozen at version 1: later changes to the live models do not reach here.
		type volume struct {
			ID               string `gorm:"primaryKey;size:36"`
			ProjectID        string `gorm:"size:64;not null;index:idx_volumes_project_id"`
			Name             string `gorm:"size:255"`
			Description      string `gorm:"size:255"`
			SizeBytes        int64  `gorm:"not null"`
			Status           string `gorm:"size:32;not null;index:idx_volumes_status"`
			PreviousStatus   string `gorm:"size:255"`
			SnapshotID       string `gorm:"size:36"`
			SourceVolID      string `gorm:"column:source_volid;size:36"`
			AvailabilityZone string `gorm:"size:255"`
			VolumeType       string `gorm:"size:255"`
			Multiattach      bool
			Temporary        bool   `gorm:"not null;default:false"`
			FailReason       string `gorm:"size:1024"`
			Metadata         string `gorm:"type:text"`
			CreatedAt        time.Time
			UpdatedAt        time.Time
		}
		type snapshot struct {
			ID               string `gorm:"primaryKey;size:36"`
			ProjectID        string `gorm:"size:64;not null;index:idx_snapshots_project_id"`
			VolumeID         string `gorm:"size:36;not null;index:idx_snapshots_volume_id"`
			Name             string `gorm:"size:255"`
			Description      string `gorm:"size:255"`
			SizeBytes        int64  `gorm:"not null"`
			Status           string `gorm:"size:32;not null;index:idx_snapshots_status"`
			PreviousStatus   string `gorm:"size:255"`
			ProviderID       string `gorm:"size:255"`
			ProviderLocation string `gorm:"size:255"`
			ProviderAuth     string `gorm:"size:255"`
			Temporary        bool   `gorm:"not null;default:false"`
			FailReason       string `gorm:"size:1024"`
			Metadata         string `gorm:"type:text"`
			CreatedAt        time.Time
			UpdatedAt        time.Time
		}
		type attachment struct {
			ID         string `gorm:"primaryKey;size:36"`
			ProjectID  string `gorm:"size:64;not null;index:idx_attachments_project_id"`
			VolumeID   string `gorm:"size:36;not null;index:idx_attachments_volume_id"`
			ServerID   string `gorm:"size:255"`
			HostName   string `gorm:"size:255"`
			Mode       string `gorm:"size:2;not null"`
			Local      bool   `gorm:"not null;default:false"`
			ExportName string `gorm:"size:255"`
			CreatedAt  time.Time
			UpdatedAt  time.Time
		}
		type export struct {
			Name         string `gorm:"primaryKey;size:255"`
			ProjectID    string `gorm:"size:64;not null;index:idx_exports_project_id"`
			VolumeID     string `gorm:"size:36;not null;index:idx_exports_volume_id"`
			SnapshotID   string `gorm:"size:36;index:idx_exports_snapshot_id"`
			AttachmentID string `gorm:"size:36;index:idx_exports_attachment_id"`
			ReadOnly     bool   `gorm:"not null"`
			CreatedAt    time.Time
		}
		for _, t := range []struct {
			name  string
			model any
		}{{"volumes", &volume{}}, {"snapshots", &snapshot{}}, {"attachments", &attachment{}}, {"exports", &export{}}} {
			if err := tx.Table(t.name).Migrator().CreateTable(t.model); err != nil {
				return err
			}
		}
		return nil
	}},
	{Version: 2, Name: "quota limits set through the API", Up: func(tx *gorm.DB) error {
		return store.CreateQuotaLimitsTable(tx, QuotaLimitsTable)
	}},
	{Version: 3, Name: "live restores", Up: func(tx *gorm.DB) error {
		type volume struct {
			LiveBackupID string `gorm:"size:36"`
			LiveSource   string `gorm:"type:text"`
			LiveStatus   string `gorm:"size:16;index:idx_volumes_live_status"`
			LiveSize     int64  `gorm:"not null;default:0"`
			LiveFilled   int64  `gorm:"not null;default:0"`
		}
		m := tx.Table("volumes").Migrator()
		for _, c := range []string{"LiveBackupID", "LiveSource", "LiveStatus", "LiveSize", "LiveFilled"} {
			if err := m.AddColumn(&volume{}, c); err != nil {
				return err
			}
		}
		return m.CreateIndex(&volume{}, "LiveStatus")
	}},
}
