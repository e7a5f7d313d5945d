package store

import (
	"context"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// QuotaLimit is one limit an admin set through the API (os-quota-sets):
// project's limit of resource. Each daemon keeps its own resources' in a
// table of its own.
type QuotaLimit struct {
	ProjectID  string `gorm:"primaryKey;size:64"`
	Resource   string `gorm:"primaryKey;size:64"`
	LimitValue int64  `gorm:"not null"`
}

// CreateQuotaLimitsTable makes table (a migration's step).
func CreateQuotaLimitsTable(tx *gorm.DB, table string) error {
	// Frozen with the migration that calls it.
	type quotaLimit struct {
		ProjectID  string `gorm:"primaryKey;size:64"`
		Resource   string `gorm:"primaryKey;size:64"`
		LimitValue int64  `gorm:"not null"`
	}
	return tx.Table(table).Migrator().CreateTable(&quotaLimit{})
}

// QuotaLimits returns every limit in table.
func QuotaLimits(ctx context.Context, db *gorm.DB, table string) ([]QuotaLimit, error) {
	var out []QuotaLimit
	err := db.WithContext(ctx).Table(table).Order("project_id, resource").Find(&out).Error
	return out, Translate(err, "quota limits")
}

// SetQuotaLimits records project's limits in table, replacing earlier ones
// of the same resources, in one transaction.
func SetQuotaLimits(ctx context.Context, db *gorm.DB, table, project string, limits map[string]int64) error {
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for r, l := range limits {
			row := QuotaLimit{ProjectID: project, Resource: r, LimitValue: l}
			if err := tx.Table(table).Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "project_id"}, {Name: "resource"}},
				DoUpdates: clause.AssignmentColumns([]string{"limit_value"}),
			}).Create(&row).Error; err != nil {
				return err
			}
		}
		return nil
	})
	return Translate(err, "set quota limits of project "+project)
}
