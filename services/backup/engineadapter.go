package backup

import (
	"context"
	"errors"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/engine"
)

// EngineAdapter lets the service use pkg/engine.
type EngineAdapter struct{ E *engine.Engine }

var _ Engine = EngineAdapter{}

func progressFunc(p ProgressFunc) func(engine.Progress) {
	if p == nil {
		return nil
	}
	return func(e engine.Progress) { p(Progress{Done: e.Done, Total: e.Total, Read: e.Read, Stored: e.Stored}) }
}

// Backup implements Engine.
func (a EngineAdapter) Backup(ctx context.Context, container string, src blockdev.Device, spec BackupSpec) (BackupResult, error) {
	m, err := a.E.Backup(ctx, container, src, engine.BackupSpec{BackupID: spec.BackupID, VolumeID: spec.VolumeID,
		ParentID: spec.ParentID, Changed: engineRanges(spec.Changed), ReuseFrom: spec.ReuseFrom, Progress: progressFunc(spec.Progress)})
	if err != nil {
		return BackupResult{}, err
	}
	return BackupResult{SizeBytes: m.Size, ObjectCount: m.NewChunks}, nil
}

// Restore implements Engine.
func (a EngineAdapter) Restore(ctx context.Context, container, backupID string, dst blockdev.Device, progress ProgressFunc) error {
	return a.E.Restore(ctx, container, backupID, dst, progressFunc(progress))
}

// Verify implements Engine.
func (a EngineAdapter) Verify(ctx context.Context, container, backupID string) (VerifyResult, error) {
	r, err := a.E.Verify(ctx, container, backupID)
	if err != nil {
		return VerifyResult{}, err
	}
	out := VerifyResult{ChunksChecked: r.ChunksChecked}
	for _, d := range r.Damaged {
		out.Damaged = append(out.Damaged, Damage{ChunkID: d.ChunkID, Offset: d.Offset, Problem: d.Err.Error()})
	}
	return out, nil
}

// Delete implements Engine.
func (a EngineAdapter) Delete(ctx context.Context, container, backupID string) error {
	err := a.E.Delete(ctx, container, backupID)
	if errors.Is(err, engine.ErrNoBackup) {
		return nil
	}
	return err
}

// ExportRecord implements Engine.
func (a EngineAdapter) ExportRecord(ctx context.Context, container, backupID string) ([]byte, error) {
	return a.E.ExportRecord(ctx, container, backupID)
}

// ImportRecord implements Engine.
func (a EngineAdapter) ImportRecord(ctx context.Context, record []byte) (Record, error) {
	r, err := a.E.ImportRecord(ctx, record)
	if err != nil {
		return Record{}, err
	}
	return Record{BackupID: r.BackupID, VolumeID: r.VolumeID, ParentID: r.ParentID, SizeBytes: r.Size, ObjectCount: r.DataChunks, Container: r.Container}, nil
}

// engineRanges converts changed ranges, keeping nil (unknown) apart from
// empty (nothing changed).
func engineRanges(rs []ByteRange) []engine.Range {
	if rs == nil {
		return nil
	}
	out := make([]engine.Range, len(rs))
	for i, r := range rs {
		out[i] = engine.Range{Offset: r.Offset, Length: r.Length}
	}
	return out
}
