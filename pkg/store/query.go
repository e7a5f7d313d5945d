package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Transition moves the row id of model's table to status to, only if its
// status is one of from, setting extra columns in the same statement. It is
// the compare-and-swap every status change goes through. When the row is in
// another status it returns ErrConflict (wrapped, naming the current status)
// and that status; when absent, ErrNotFound.
func Transition(ctx context.Context, db *gorm.DB, model any, kind, id string, from []string, to string, extra map[string]any) (string, error) {
	set := map[string]any{"status": to, "updated_at": time.Now().UTC()}
	for k, v := range extra {
		set[k] = v
	}
	res := db.WithContext(ctx).Model(model).Where("id = ? AND status IN ?", id, from).Updates(set)
	if res.Error != nil {
		return "", Translate(res.Error, "update "+kind+" "+id)
	}
	if res.RowsAffected == 1 {
		return to, nil
	}
	var current struct{ Status string }
	err := db.WithContext(ctx).Model(model).Select("status").Where("id = ?", id).Take(&current).Error
	if err != nil {
		return "", Translate(err, kind+" "+id)
	}
	return current.Status, fmt.Errorf("%s %s is %s: %w", kind, id, current.Status, ErrConflict)
}

// Page describes one page of a list, newest first.
type Page struct {
	// Limit caps the rows returned; 0 means DefaultLimit, and MaxLimit is the cap.
	Limit int
	// Marker is the id of the last row of the previous page.
	Marker string
}

// Page limits.
const (
	DefaultLimit = 1000
	MaxLimit     = 1000
)

// Paginate orders query newest first (created_at, then id, descending) and
// applies the page: rows after the marker row, at most the limit. It returns
// ErrNotFound when the marker names no row of model.
func Paginate(ctx context.Context, db, query *gorm.DB, model any, p Page) (*gorm.DB, error) {
	limit := p.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = min(max(limit, DefaultLimit), MaxLimit)
		if p.Limit > 0 {
			limit = MaxLimit
		}
	}
	query = query.Order("created_at DESC").Order("id DESC").Limit(limit)
	if p.Marker == "" {
		return query, nil
	}
	var m struct {
		ID        string
		CreatedAt time.Time
	}
	if err := db.WithContext(ctx).Model(model).Select("id", "created_at").Where("id = ?", p.Marker).Take(&m).Error; err != nil {
		return nil, Translate(err, "marker "+p.Marker)
	}
	return query.Where("created_at < ? OR (created_at = ? AND id < ?)", m.CreatedAt, m.CreatedAt, m.ID), nil
}
