// Package quotaset is what both daemons' os-quota-sets calls share: who may
// see and set which project's limits, and the limits admins set through the
// API, kept in a table of each daemon's database and applied over the
// configured ones. Each daemon keeps the quotas of its own resources (the
// volume manager volumes, gigabytes and snapshots; the backup service
// backups and backup gigabytes); the gateway merges the two.
package quotaset

import (
	"context"
	"fmt"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/validate"
	"gorm.io/gorm"
)

// Keeper is one daemon's stored limits: its database, the table, the
// resources it keeps quotas of, and its quotas in force (nil: quotas off).
type Keeper struct {
	DB        *gorm.DB
	Table     string
	Resources []string
	Quotas    *quota.Quotas
	// Service names the daemon in errors ("volume manager").
	Service string
}

// Load applies the limits admins set through the API to k.Quotas (at
// start-up: they take precedence over the quota file and the defaults).
func (k Keeper) Load(ctx context.Context) error {
	rows, err := store.QuotaLimits(ctx, k.DB, k.Table)
	if err != nil {
		return fmt.Errorf("quota limits: %w", err)
	}
	for _, r := range rows {
		k.Quotas.Set(r.ProjectID, quota.Limits{r.Resource: r.LimitValue})
	}
	return nil
}

// CheckTarget checks the projects of a quota set request made in project
// about target: a member may name their own project only.
func CheckTarget(ctx context.Context, project, target string) error {
	if err := validate.Project(project); err != nil {
		return err
	}
	if err := validate.Project(target); err != nil {
		return err
	}
	if target != project && !auth.IsAdmin(ctx) {
		return auth.Denied("Policy doesn't allow the quotas of project %q to be shown with a token of project %q.", target, project)
	}
	return nil
}

// Update sets target's limits (admins only), stored first, then in force.
func (k Keeper) Update(ctx context.Context, project, target string, limits quota.Limits) error {
	if err := auth.RequireAdmin(ctx, "os-quota-sets update"); err != nil {
		return err
	}
	if err := CheckTarget(ctx, project, target); err != nil {
		return err
	}
	if err := quota.CheckUpdate(limits, k.Resources); err != nil {
		return err
	}
	if k.Quotas == nil {
		return rpcerr.Precondition("quotas are off on this %s", k.Service)
	}
	if err := store.SetQuotaLimits(ctx, k.DB, k.Table, target, limits); err != nil {
		return err
	}
	k.Quotas.Set(target, limits)
	return nil
}

// View is target's limits with what is in use (inUse, by resource), or
// the defaults alone.
func (k Keeper) View(target string, inUse map[string]int64, defaults bool) map[string]quota.Usage {
	return k.Quotas.View(target, k.Resources, inUse, defaults)
}
