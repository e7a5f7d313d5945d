package backup

import (
	"context"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/backupdb"
	"github.com/blockvault/blockvault/pkg/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// quotaResources are the resources the backup service keeps quotas of.
var quotaResources = []string{quota.Backups, quota.BackupGigabytes}

// LoadQuotaLimits gives quotas the limits admins set through the API.
func LoadQuotaLimits(ctx context.Context, db *backupdb.Store, quotas *quota.Quotas) error {
	rows, err := store.QuotaLimits(ctx, db.DB(), backupdb.QuotaLimitsTable)
	if err != nil {
		return err
	}
	for _, r := range rows {
		quotas.Set(r.ProjectID, quota.Limits{r.Resource: r.LimitValue})
	}
	return nil
}

// checkQuotaTarget checks the projects of a quota set request: a member
// may name their own project only.
func checkQuotaTarget(ctx context.Context, project, target string) error {
	if err := validate.Project(project); err != nil {
		return err
	}
	if err := validate.Project(target); err != nil {
		return err
	}
	if target != project && !auth.IsAdmin(ctx) {
		return status.Errorf(codes.PermissionDenied, "Policy doesn't allow the quotas of project %q to be shown with a token of project %q.", target, project)
	}
	return nil
}

// GetQuotaSet implements BackupService.
func (s *Server) GetQuotaSet(ctx context.Context, req *backupv1.GetQuotaSetRequest) (*backupv1.GetQuotaSetResponse, error) {
	if err := checkQuotaTarget(ctx, req.GetProjectId(), req.GetTargetProjectId()); err != nil {
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
	if err := auth.RequireAdmin(ctx, "os-quota-sets update"); err != nil {
		return nil, err
	}
	if err := checkQuotaTarget(ctx, req.GetProjectId(), req.GetTargetProjectId()); err != nil {
		return nil, err
	}
	if err := quota.CheckUpdate(req.GetLimits(), quotaResources); err != nil {
		return nil, err
	}
	if s.cfg.Quotas == nil {
		return nil, rpcerr.Precondition("quotas are off on this backup service")
	}
	if err := store.SetQuotaLimits(ctx, s.db.DB(), backupdb.QuotaLimitsTable, req.GetTargetProjectId(), req.GetLimits()); err != nil {
		return nil, err
	}
	s.cfg.Quotas.Set(req.GetTargetProjectId(), req.GetLimits())
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
	for r, v := range s.cfg.Quotas.View(project, quotaResources, inUse, defaults) {
		out[r] = &backupv1.QuotaUsage{Limit: v.Limit, InUse: v.InUse}
	}
	return out, nil
}
