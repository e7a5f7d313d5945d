package volume

import (
	"flag"
	"log/slog"
)

// Factory is how a driver registers with the volume manager (see
// pkg/volume/drivers): its name, its settings with their flags, and how to
// open it. Each driver package exports one.
type Factory struct {
	// Name is what --driver takes.
	Name string
	// Summary says in --driver's help what the driver keeps volumes in.
	Summary string
	// NewConfig returns the driver's settings with their defaults.
	NewConfig func() DriverConfig
}

// DriverConfig is one driver's own settings.
type DriverConfig interface {
	// Flags binds the settings to flags of fs. Every driver's flags are on
	// the volume manager's command line, so each names its driver in its
	// help, and no two drivers share a flag name.
	Flags(fs *flag.FlagSet)
	// Validate checks the settings before the driver is opened, naming the
	// flag that is wrong.
	Validate() error
	// Open opens the driver.
	Open(OpenOptions) (Driver, error)
}

// OpenOptions is what the volume manager gives a driver whichever it is.
type OpenOptions struct {
	// DataDir is the volume manager's data directory; a driver that keeps
	// files keeps them under it.
	DataDir string
	// DisableSnapshotOpen makes the driver refuse to open snapshots, so
	// backups of in-use volumes take a temporary clone.
	DisableSnapshotOpen bool
	Logger              *slog.Logger
}
