package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Migration is one versioned schema step. Up uses the migrator with model
// structs frozen for that version (never the live models), so a database at
// any version reaches the latest the same way on SQLite and PostgreSQL.
type Migration struct {
	Version int
	Name    string
	Up      func(tx *gorm.DB) error
}

// schemaMigration records an applied migration, one table per owner.
type schemaMigration struct {
	Version   int `gorm:"primaryKey;autoIncrement:false"`
	Name      string
	AppliedAt time.Time
}

// Migrate applies, in order and each in its own transaction, the migrations
// not yet recorded in the owner's table ("<owner>_schema_migrations"). It
// returns the version the database is at.
func Migrate(ctx context.Context, db *gorm.DB, owner string, migrations []Migration) (int, error) {
	table := owner + "_schema_migrations"
	db = db.WithContext(ctx)
	if err := db.Table(table).AutoMigrate(&schemaMigration{}); err != nil {
		return 0, fmt.Errorf("store: create %s: %w", table, err)
	}
	var applied []schemaMigration
	if err := db.Table(table).Order("version").Find(&applied).Error; err != nil {
		return 0, fmt.Errorf("store: read %s: %w", table, err)
	}
	done := map[int]bool{}
	current := 0
	for _, m := range applied {
		done[m.Version] = true
		current = max(current, m.Version)
	}
	for i, m := range migrations {
		if m.Version != i+1 {
			return current, fmt.Errorf("store: %s migration %q has version %d, want %d", owner, m.Name, m.Version, i+1)
		}
		if done[m.Version] {
			continue
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := m.Up(tx); err != nil {
				return err
			}
			return tx.Table(table).Create(&schemaMigration{Version: m.Version, Name: m.Name, AppliedAt: time.Now().UTC()}).Error
		})
		if err != nil {
			return current, fmt.Errorf("store: %s migration %d (%s): %w", owner, m.Version, m.Name, err)
		}
		current = m.Version
	}
	if current > len(migrations) {
		return current, fmt.Errorf("store: %s database is at schema version %d, newer than this binary knows (%d): upgrade the binary", owner, current, len(migrations))
	}
	return current, nil
}
