package store

import (
	"context"
	"fmt"
	"time"

	"github.com/blockvault/blockvault/pkg/lifecycle"
	"gorm.io/gorm"
)

// Transition applies event ev of machine m to the row id of model's table:
// the status becomes the event's target, only if it is one of the event's
// sources, with extra columns set in the same statement. It is the
// compare-and-swap every status change goes through, and the only writer of
// the status and previous_status columns. An event m lacks (or extra naming
// those columns) is ErrInvalidTransition and writes nothing. When the row is
// in another status it returns ErrConflict (wrapped, naming the current
// status) and that status; when absent, ErrNotFound. On success it returns
// the new status.
func Transition(ctx context.Context, db *gorm.DB, model any, m lifecycle.Machine, ev lifecycle.Event, id string, extra map[string]any) (string, error) {
	r, err := m.Rule(ev)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", m.Kind, id, err)
	}
	set := map[string]any{"status": r.To, "updated_at": time.Now().UTC()}
	for k, v := range extra {
		if k == "status" || k == "previous_status" {
			return "", fmt.Errorf("%s %s: %s: the lifecycle table sets %s: %w", m.Kind, id, ev, k, lifecycle.ErrInvalidTransition)
		}
		set[k] = v
	}
	if r.KeepPrevious {
		set["previous_status"] = gorm.Expr("status")
	}
	if len(r.ToPrevious) > 0 {
		// The right-hand sides read the row as it was, so previous_status
		// is read before it is cleared.
		set["status"] = gorm.Expr("CASE WHEN previous_status IN ? THEN previous_status ELSE ? END", r.ToPrevious, r.To)
		set["previous_status"] = ""
	}
	q := db.WithContext(ctx).Model(model).Where("id = ?", id)
	if !r.AnySource {
		q = q.Where("status IN ?", r.From)
	}
	res := q.Updates(set)
	if res.Error != nil {
		return "", Translate(res.Error, "update "+m.Kind+" "+id)
	}
	var current struct{ Status string }
	if res.RowsAffected == 1 && len(r.ToPrevious) == 0 {
		return r.To, nil
	}
	err = db.WithContext(ctx).Model(model).Select("status").Where("id = ?", id).Take(&current).Error
	if err != nil {
		return "", Translate(err, m.Kind+" "+id)
	}
	if res.RowsAffected == 1 {
		return current.Status, nil
	}
	return current.Status, fmt.Errorf("%s %s is %s: %w", m.Kind, id, current.Status, ErrConflict)
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
