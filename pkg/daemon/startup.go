package daemon

import (
	"log/slog"
	"time"
)

// Startup logs a daemon's start-up steps as they finish, each with how long
// it took, so an operator (or a test waiting for the daemon) can see from
// the log where a slow start spends its time.
type Startup struct {
	log   *slog.Logger
	begin time.Time
	last  time.Time
}

// NewStartup starts timing a daemon's start-up; it logs that it began.
func NewStartup(log *slog.Logger, name string) *Startup {
	now := time.Now()
	log.Info(name+" starting", "version", Version)
	return &Startup{log: log, begin: now, last: now}
}

// Step logs that a step finished: what, how long it took and the time since
// the start, with args as more attributes.
func (s *Startup) Step(what string, args ...any) {
	now := time.Now()
	s.log.Info("start-up: "+what, append([]any{"took", now.Sub(s.last).Round(time.Millisecond),
		"since_start", now.Sub(s.begin).Round(time.Millisecond)}, args...)...)
	s.last = now
}
