package backup

import (
	"context"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/quotaset"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
)

// quotaKeeper is the backup service's stored limits and quotas in force.
func quotaKeeper(db *backupdb.Store, quotas *quota.Quotas) quotaset.Keeper {
	return quotaset.Keeper{DB: db.DB(), Table: backupdb.QuotaLimitsTable, Resources: []string{quota.Backups, quota.BackupGigabytes},
		Quotas: quotas, Service: "backup service"}
}

// LoadQuotaLimits gives quotas the limits admins set through the API.
func LoadQuotaLimits(ctx context.Context, db *backupdb.Store, quotas *quota.Quotas) error {
	return quotaKeeper(db, quotas).Load(ctx)
}

// GetQuotaSet implements BackupService.
func (s *Server) GetQuotaSet(ctx context.Context, req *backupv1.GetQuotaSetRequest) (*backupv1.GetQuotaSetResponse, error) {
	if err := quotaset.CheckTarget(ctx, req.GetProjectId(), req.GetTargetProjectId()); err != nil {
		return nil, err
	}
	set, err := s.quotaView(ctx, req.GetTargetProjectId(), req.GetDefaults())
	if err != nil {
		return nil, err
	}
	return &backupv1.GetQuotaSetResponse{QuotaSet: set}, nil
}

// UpdateQuotaSet implements BackupService (admin).
func (s *Server) UpdateQuotaSet(ctx context.Context, req *backupv1.UpdateQuotaSetRequest) (*backupv1.UpdateQuotaSetResponse, error) {
	if err := quotaKeeper(s.db, s.cfg.Quotas).Update(ctx, req.GetProjectId(), req.GetTargetProjectId(), req.GetLimits()); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "quotas set", "project_id", req.GetTargetProjectId(), "limits", req.GetLimits())
	set, err := s.quotaView(ctx, req.GetTargetProjectId(), false)
	if err != nil {
		return nil, err
	}
	return &backupv1.UpdateQuotaSetResponse{QuotaSet: set}, nil
}

func (s *Server) quotaView(ctx context.Context, project string, defaults bool) (map[string]*backupv1.QuotaUsage, error) {
	n, bytes, err := s.db.ProjectUsage(ctx, project)
	if err != nil {
		return nil, err
	}
	inUse := map[string]int64{quota.Backups: n, quota.BackupGigabytes: quota.GiB(bytes)}
	out := map[string]*backupv1.QuotaUsage{}
	for r, v := range quotaKeeper(s.db, s.cfg.Quotas).View(project, inUse, defaults) {
		out[r] = &backupv1.QuotaUsage{Limit: v.Limit, InUse: v.InUse}
	}
	return out, nil
}
