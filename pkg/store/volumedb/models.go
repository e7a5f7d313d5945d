// Package volumedb is the volume manager's own tables (volumes, snapshots,
// attachments, exports) and the queries on them. Every row carries a project
// id; every status change is a conditional update through store.Transition.
package volumedb

import "time"

// Volume is a row of volumes. previous_status is the blueprint's column: the
// status before backing-up, restored when the backup ends.
type Volume struct {
	ID               string `gorm:"primaryKey;size:36"`
	ProjectID        string `gorm:"size:64;not null;index"`
	Name             string `gorm:"size:255"`
	Description      string `gorm:"size:255"`
	SizeBytes        int64  `gorm:"not null"`
	Status           string `gorm:"size:32;not null;index"`
	PreviousStatus   string `gorm:"size:255"`
	SnapshotID       string `gorm:"size:36"`
	SourceVolID      string `gorm:"column:source_volid;size:36"`
	AvailabilityZone string `gorm:"size:255"`
	VolumeType       string `gorm:"size:255"`
	Multiattach      bool
	Temporary        bool   `gorm:"not null;default:false"`
	FailReason       string `gorm:"size:1024"`
	Metadata         string `gorm:"type:text"`
	// The live_* columns are set while a live restore fills the volume
	// (LiveStatus "filling" or "failed"), and cleared together when the
	// fill ends: the backup restored, the source (the backup service's NBD
	// export, a ConnectionInfo as JSON), the bytes the fill copies, and
	// about how many are filled (written every few seconds).
	LiveBackupID string `gorm:"size:36"`
	LiveSource   string `gorm:"type:text"`
	LiveStatus   string `gorm:"size:16;index"`
	LiveSize     int64  `gorm:"not null;default:0"`
	LiveFilled   int64  `gorm:"not null;default:0"`
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Live restore statuses (volumes.live_status).
const (
	LiveFilling = "filling"
	LiveFailed  = "failed"
)

// Snapshot is a row of snapshots. provider_id and provider_location say
// where the backend keeps it; provider_auth (the blueprint's column) holds the
// credentials of its export while it is attached.
type Snapshot struct {
	ID               string `gorm:"primaryKey;size:36"`
	ProjectID        string `gorm:"size:64;not null;index"`
	VolumeID         string `gorm:"size:36;not null;index"`
	Name             string `gorm:"size:255"`
	Description      string `gorm:"size:255"`
	SizeBytes        int64  `gorm:"not null"`
	Status           string `gorm:"size:32;not null;index"`
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

// Attachment is a row of attachments: a consumer's use of a volume.
type Attachment struct {
	ID         string `gorm:"primaryKey;size:36"`
	ProjectID  string `gorm:"size:64;not null;index"`
	VolumeID   string `gorm:"size:36;not null;index"`
	ServerID   string `gorm:"size:255"`
	HostName   string `gorm:"size:255"`
	Mode       string `gorm:"size:2;not null"`
	Local      bool   `gorm:"not null;default:false"`
	ExportName string `gorm:"size:255"`
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Export is a row of exports: an NBD export the volume manager serves. It
// exists only while the attachment (or snapshot attach) does; on restart
// the volume manager serves every row again.
type Export struct {
	Name         string `gorm:"primaryKey;size:255"`
	ProjectID    string `gorm:"size:64;not null;index"`
	VolumeID     string `gorm:"size:36;not null;index"`
	SnapshotID   string `gorm:"size:36;index"`
	AttachmentID string `gorm:"size:36;index"`
	ReadOnly     bool   `gorm:"not null"`
	CreatedAt    time.Time
}
