package backup

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/validate"
)

// DeleteBackup implements BackupService: only an available or failed
// backup; its data goes in the background. Deleting a backup others were
// made from is allowed: every backup in the repository stands on its own.
// A backup imported from Cinder is only forgotten (its objects stay in
// Cinder's repository), and not while imported incrementals depend on it.
func (s *Server) DeleteBackup(ctx context.Context, req *backupv1.DeleteBackupRequest) (*backupv1.DeleteBackupResponse, error) {
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return nil, err
	}
	b, err := s.db.Get(ctx, req.GetProjectId(), req.GetBackupId())
	if err != nil {
		return nil, err
	}
	if b.Origin != "" {
		// An imported Cinder incremental restores over its parent's
		// record, as in Cinder, which refuses the same.
		n, err := s.db.CountDependents(ctx, b.ID)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, rpcerr.Invalid("Invalid backup: Incremental backups exist for this backup (imported from Cinder, they restore over it); delete them first.")
		}
	}
	if cur, err := s.db.Transition(ctx, b.ID, lifecycle.Delete, map[string]any{"owner_node": s.cfg.Jobs.NodeID, "lease_expires_at": s.jobs.Lease()}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, rpcerr.Invalid("Invalid backup: backup %s is %s; only an available or error backup can be deleted.", b.ID, cur)
		}
		return nil, err
	}
	s.jobs.Delete(ctx, b)
	return &backupv1.DeleteBackupResponse{}, nil
}

// BackupAction implements BackupService: os-reset_status and
// os-force_delete (admin). Force-delete of a creating backup stops it; the
// job removes what it wrote and its temporary resources, and the backup
// never becomes available.
func (s *Server) BackupAction(ctx context.Context, req *backupv1.BackupActionRequest) (*backupv1.BackupActionResponse, error) {
	if err := auth.RequireAdmin(ctx, "os-reset_status and os-force_delete"); err != nil {
		return nil, err
	}
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return nil, err
	}
	b, err := s.db.Get(ctx, req.GetProjectId(), req.GetBackupId())
	if err != nil {
		return nil, err
	}
	switch a := req.GetAction().(type) {
	case *backupv1.BackupActionRequest_OsResetStatus:
		st := a.OsResetStatus.GetStatus()
		if !lifecycle.Backups.Has(lifecycle.ResetStatus(st)) {
			return nil, rpcerr.Invalid("os-reset_status: status %q must be available or error", st)
		}
		if b.Status == lifecycle.BackupCreating || b.Status == lifecycle.BackupRestoring {
			s.jobs.Cancel(b.ID)
		}
		if _, err := s.db.Transition(ctx, b.ID, lifecycle.ResetStatus(st), nil); err != nil {
			return nil, err
		}
	case *backupv1.BackupActionRequest_OsForceDelete:
		if _, err := s.db.Transition(ctx, b.ID, lifecycle.ForceDelete, map[string]any{"owner_node": s.cfg.Jobs.NodeID, "lease_expires_at": s.jobs.Lease()}); err != nil {
			return nil, err
		}
		// Wait (briefly) for the job to release its resources.
		s.jobs.CancelAndWait(b.ID, 30*time.Second)
		s.jobs.Delete(ctx, b)
	default:
		return nil, rpcerr.Invalid("the action body must hold one of os-reset_status, os-force_delete")
	}
	return &backupv1.BackupActionResponse{}, nil
}

// steady reports whether no work runs on a backup in this status.
func steady(status string) bool {
	switch status {
	case lifecycle.BackupCreating, lifecycle.BackupRestoring, lifecycle.BackupDeleting:
		return false
	}
	return true
}

// WatchBackup implements BackupService: an update whenever the backup
// changes, until it is steady (or gone).
func (s *Server) WatchBackup(req *backupv1.WatchBackupRequest, stream backupv1.BackupService_WatchBackupServer) error {
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return err
	}
	ctx := stream.Context()
	var last string
	for {
		v, err := s.view(ctx, req.GetProjectId(), req.GetBackupId())
		if err != nil {
			if errors.Is(err, store.ErrNotFound) && last != "" {
				return nil // deleted while watched
			}
			return err
		}
		key := v.GetStatus() + "/" + v.GetUpdatedAt()
		if key != last {
			if err := stream.Send(&backupv1.WatchBackupResponse{Backup: v}); err != nil {
				return err
			}
			last = key
		}
		if steady(v.GetStatus()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// VerifyBackup implements BackupService.
func (s *Server) VerifyBackup(ctx context.Context, req *backupv1.VerifyBackupRequest) (*backupv1.VerifyBackupResponse, error) {
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return nil, err
	}
	b, err := s.db.Get(ctx, req.GetProjectId(), req.GetBackupId())
	if err != nil {
		return nil, err
	}
	if b.Status != lifecycle.BackupAvailable && b.Status != lifecycle.BackupRestoring {
		return nil, rpcerr.Invalid("Invalid backup: backup %s is %s; only an available backup can be verified.", b.ID, b.Status)
	}
	if b.Origin != "" {
		return s.cinder.verify(ctx, b)
	}
	res, err := s.engine.Verify(ctx, b.Container, b.ID)
	if err != nil {
		return nil, err
	}
	out := &backupv1.VerifyBackupResponse{Ok: len(res.Damaged) == 0, ChunksChecked: res.ChunksChecked}
	for _, d := range res.Damaged {
		out.Damaged = append(out.Damaged, &backupv1.DamagedChunk{ChunkId: d.ChunkID, Offset: d.Offset, Problem: d.Err.Error()})
	}
	return out, nil
}

// ExportBackupRecord implements BackupService.
func (s *Server) ExportBackupRecord(ctx context.Context, req *backupv1.ExportBackupRecordRequest) (*backupv1.ExportBackupRecordResponse, error) {
	if err := checkRef(req.GetProjectId(), req.GetBackupId()); err != nil {
		return nil, err
	}
	b, err := s.db.Get(ctx, req.GetProjectId(), req.GetBackupId())
	if err != nil {
		return nil, err
	}
	if b.Status != lifecycle.BackupAvailable {
		return nil, rpcerr.Invalid("Invalid backup: backup %s is %s; only an available backup can be exported.", b.ID, b.Status)
	}
	if b.Origin != "" {
		return nil, rpcerr.Invalid("Invalid backup: backup %s was imported from Cinder (%s) and is read where Cinder wrote it; export its record from Cinder, or import the same record elsewhere.", b.ID, b.Origin)
	}
	rec, err := s.engine.ExportRecord(ctx, b.Container, b.ID)
	if err != nil {
		return nil, err
	}
	if !auth.IsAdmin(ctx) {
		if rec, err = withoutLocation(rec); err != nil {
			return nil, err
		}
	}
	return &backupv1.ExportBackupRecordResponse{BackupRecord: &backupv1.BackupRecord{
		BackupService: "blockvault", BackupUrl: base64.StdEncoding.EncodeToString(rec)}}, nil
}

// ImportBackupRecord implements BackupService.
func (s *Server) ImportBackupRecord(ctx context.Context, req *backupv1.ImportBackupRecordRequest) (*backupv1.ImportBackupRecordResponse, error) {
	if err := auth.RequireAdmin(ctx, "import_record"); err != nil {
		return nil, err
	}
	if err := validate.Project(req.GetProjectId()); err != nil {
		return nil, err
	}
	rec := req.GetBackupRecord()
	if isCinderRecord(rec) {
		b, err := s.cinder.importRecord(ctx, req.GetProjectId(), rec, req.GetRepository())
		if err != nil {
			return nil, err
		}
		s.log.InfoContext(ctx, "Cinder backup imported", "backup_id", b.ID, "origin", b.Origin, "repository", b.SourceURL, "parent_id", b.ParentID)
		out, err := s.view(ctx, b.ProjectID, b.ID)
		if err != nil {
			return nil, err
		}
		return &backupv1.ImportBackupRecordResponse{Backup: out}, nil
	}
	if rec.GetBackupService() != "blockvault" {
		return nil, rpcerr.Invalid("backup_service %q is neither blockvault's nor one of Cinder's backup drivers (cinder.backup.drivers.posix, nfs or s3)", rec.GetBackupService())
	}
	if req.GetRepository() != "" {
		return nil, rpcerr.Invalid("repository is for Cinder's records only: a blockvault record is imported from this backup service's own repository")
	}
	data, err := base64.StdEncoding.DecodeString(rec.GetBackupUrl())
	if err != nil {
		return nil, rpcerr.Invalid("backup_url is not base64: %v", err)
	}
	r, err := s.engine.ImportRecord(ctx, data)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.Get(ctx, "", r.BackupID); err == nil {
		return nil, rpcerr.Exists("backup %s is already registered here", r.BackupID)
	}
	now := time.Now().UTC()
	b := &backupdb.Backup{ID: r.BackupID, ProjectID: req.GetProjectId(), VolumeID: r.VolumeID, ParentID: r.ParentID,
		Container: r.Container, Status: lifecycle.BackupAvailable, SizeBytes: r.Size, ObjectCount: r.DataChunks,
		IsIncremental: r.ParentID != "", Name: "imported-" + r.BackupID, DataTimestamp: &now}
	if err := s.db.Create(ctx, b); err != nil {
		return nil, err
	}
	out, err := s.view(ctx, b.ProjectID, b.ID)
	if err != nil {
		return nil, err
	}
	return &backupv1.ImportBackupRecordResponse{Backup: out}, nil
}

// withoutLocation drops the repository's location (a server-side path, or
// an S3 endpoint and bucket) from a record: it is an operator's, not a
// project member's. Importing does not need it: the importing deployment
// reads the backup from its own repository.
func withoutLocation(rec []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec, &m); err != nil {
		return nil, fmt.Errorf("backup record: %w", err)
	}
	delete(m, "repository")
	return json.Marshal(m)
}
