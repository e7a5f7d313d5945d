// Package store opens the database a daemon keeps its tables in (SQLite by
// default, PostgreSQL in production), runs versioned migrations, and
// translates database errors into the store's sentinels once.
package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Sentinel errors of every store.
var (
	// ErrNotFound: no row with that id (in that project).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a conditional update found the row in another state, or a
	// unique key is taken.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the database cannot be reached (down, restarting,
	// the connection dropped); worth retrying.
	ErrUnavailable = errors.New("the database is unavailable")
)

// unavailable reports whether err says the database could not be reached,
// as opposed to a query it refused.
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08: connection exceptions; 57P: the server is shutting down,
		// crashed, or not accepting connections yet.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "failed to connect")
}

// Open connects to the database named by url: "postgres://..." (or
// "postgresql://...") for PostgreSQL, "sqlite://PATH" or a plain file path for
// SQLite. The SQLite file's directory is created if needed.
func Open(ctx context.Context, url string, log *slog.Logger) (*gorm.DB, error) {
	cfg := &gorm.Config{
		Logger:                 newLogger(log),
		NowFunc:                func() time.Time { return time.Now().UTC() },
		TranslateError:         true,
		SkipDefaultTransaction: true,
	}
	var (
		db  *gorm.DB
		err error
	)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		db, err = gorm.Open(postgres.Open(url), cfg)
	default:
		path := strings.TrimPrefix(url, "sqlite://")
		if path == "" {
			return nil, errors.New("store: empty database url")
		}
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("store: create %s: %w", dir, err)
			}
		}
		// WAL and a busy timeout let the daemon's goroutines share the file;
		// foreign keys are off by default in SQLite.
		dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
		db, err = gorm.Open(sqlite.Open(dsn), cfg)
		if err == nil {
			if sqlDB, derr := db.DB(); derr == nil {
				sqlDB.SetMaxOpenConns(1)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: open database: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		return nil, fmt.Errorf("store: database unreachable: %w", err)
	}
	return db, nil
}

// Close closes the database's connections.
func Close(db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Dialect is "postgres" or "sqlite".
func Dialect(db *gorm.DB) string { return db.Dialector.Name() }

// Translate maps a GORM error to the store's sentinels, wrapping it with what
// was being done. nil stays nil.
func Translate(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrRecordNotFound):
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return fmt.Errorf("%s: %w", what, ErrConflict)
	case unavailable(err):
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// Timestamp formats t the way the Block Storage API does
// ("2006-01-02T15:04:05.000000", UTC, no zone), which its clients parse.
func Timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000")
}

type slogLogger struct {
	log   *slog.Logger
	level logger.LogLevel
}

func newLogger(log *slog.Logger) logger.Interface {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &slogLogger{log: log, level: logger.Warn}
}

func (l *slogLogger) LogMode(level logger.LogLevel) logger.Interface {
	c := *l
	c.level = level
	return &c
}

func (l *slogLogger) Info(ctx context.Context, msg string, args ...any) {
	if l.level >= logger.Info {
		l.log.InfoContext(ctx, fmt.Sprintf(msg, args...))
	}
}

func (l *slogLogger) Warn(ctx context.Context, msg string, args ...any) {
	if l.level >= logger.Warn {
		l.log.WarnContext(ctx, fmt.Sprintf(msg, args...))
	}
}

func (l *slogLogger) Error(ctx context.Context, msg string, args ...any) {
	if l.level >= logger.Error {
		l.log.ErrorContext(ctx, fmt.Sprintf(msg, args...))
	}
}

func (l *slogLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if err == nil || errors.Is(err, gorm.ErrRecordNotFound) || l.level < logger.Error {
		if l.level >= logger.Info {
			sql, rows := fc()
			l.log.DebugContext(ctx, "sql", "sql", sql, "rows", rows, "elapsed", time.Since(begin))
		}
		return
	}
	sql, _ := fc()
	l.log.DebugContext(ctx, "sql failed", "sql", sql, "err", err)
}
