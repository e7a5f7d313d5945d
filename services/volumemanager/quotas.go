package volumemanager

import (
	"context"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/quotaset"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
)

// quotaKeeper is the volume manager's stored limits and quotas in force.
func quotaKeeper(db *volumedb.Store, quotas *quota.Quotas) quotaset.Keeper {
	return quotaset.Keeper{DB: db.DB(), Table: volumedb.QuotaLimitsTable, Resources: []string{quota.Volumes, quota.Gigabytes, quota.Snapshots},
		Quotas: quotas, Service: "volume manager"}
}

// LoadQuotaLimits gives quotas the limits admins set through the API.
func LoadQuotaLimits(ctx context.Context, db *volumedb.Store, quotas *quota.Quotas) error {
	return quotaKeeper(db, quotas).Load(ctx)
}

// GetQuotaSet implements VolumeManagerService.
func (s *Server) GetQuotaSet(ctx context.Context, req *volumev1.GetQuotaSetRequest) (*volumev1.GetQuotaSetResponse, error) {
	if err := quotaset.CheckTarget(ctx, req.GetProjectId(), req.GetTargetProjectId()); err != nil {
		return nil, err
	}
	set, err := s.quotaView(ctx, req.GetTargetProjectId(), req.GetDefaults())
	if err != nil {
		return nil, err
	}
	return &volumev1.GetQuotaSetResponse{QuotaSet: set}, nil
}

// UpdateQuotaSet implements VolumeManagerService (admin).
func (s *Server) UpdateQuotaSet(ctx context.Context, req *volumev1.UpdateQuotaSetRequest) (*volumev1.UpdateQuotaSetResponse, error) {
	if err := quotaKeeper(s.db, s.cfg.Quotas).Update(ctx, req.GetProjectId(), req.GetTargetProjectId(), req.GetLimits()); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "quotas set", "project_id", req.GetTargetProjectId(), "limits", req.GetLimits())
	set, err := s.quotaView(ctx, req.GetTargetProjectId(), false)
	if err != nil {
		return nil, err
	}
	return &volumev1.UpdateQuotaSetResponse{QuotaSet: set}, nil
}

func (s *Server) quotaView(ctx context.Context, project string, defaults bool) (map[string]*volumev1.QuotaUsage, error) {
	u, err := s.db.ProjectUsage(ctx, project)
	if err != nil {
		return nil, err
	}
	inUse := map[string]int64{quota.Volumes: u.Volumes, quota.Snapshots: u.Snapshots, quota.Gigabytes: quota.GiB(u.VolumeBytes + u.SnapshotBytes)}
	out := map[string]*volumev1.QuotaUsage{}
	for r, v := range quotaKeeper(s.db, s.cfg.Quotas).View(project, inUse, defaults) {
		out[r] = &volumev1.QuotaUsage{Limit: v.Limit, InUse: v.InUse}
	}
	return out, nil
}
