package backup

import (
	"fmt"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

const gib = int64(1) << 30

// toBackup is the API's full view of a backup row.
func toBackup(b *backupdb.Backup, dependents int64) *backupv1.Backup {
	out := &backupv1.Backup{
		Id: b.ID, ProjectId: b.ProjectID, Name: b.Name, Description: b.Description, VolumeId: b.VolumeID,
		SnapshotId: b.SnapshotID, Container: b.Container, Status: b.Status, FailReason: b.FailReason,
		Size: int32((b.SizeBytes + gib - 1) / gib), SizeBytes: b.SizeBytes, ObjectCount: int32(b.ObjectCount),
		IsIncremental: b.IsIncremental, HasDependentBackups: dependents > 0, ParentId: b.ParentID,
		AvailabilityZone: b.AvailabilityZone, CreatedAt: store.Timestamp(b.CreatedAt), UpdatedAt: store.Timestamp(b.UpdatedAt),
		TempVolumeId: b.TempVolumeID, TempSnapshotId: b.TempSnapshotID, Strategy: b.Strategy,
		RestoreVolumeId: b.RestoreVolumeID, Metadata: store.DecodeMap(b.Metadata), Origin: b.Origin,
		Links: []*backupv1.Link{
			{Rel: "self", Href: fmt.Sprintf("/v3/%s/backups/%s", b.ProjectID, b.ID)},
			{Rel: "bookmark", Href: fmt.Sprintf("/%s/backups/%s", b.ProjectID, b.ID)},
		},
	}
	if b.DataTimestamp != nil {
		out.DataTimestamp = store.Timestamp(*b.DataTimestamp)
	}
	if b.ProgressOp != "" {
		p := &backupv1.Progress{Operation: b.ProgressOp, BytesDone: b.BytesDone, BytesTotal: b.BytesTotal,
			BytesRead: b.BytesRead, BytesStored: b.BytesStored}
		if b.StartedAt != nil {
			p.StartedAt = store.Timestamp(*b.StartedAt)
			if el := b.UpdatedAt.Sub(*b.StartedAt).Seconds(); el > 0 {
				p.Rate = float64(b.BytesDone) / el
			}
		}
		out.Progress = p
	}
	return out
}
