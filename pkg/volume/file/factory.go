package file

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/blockvault/blockvault/pkg/volume"
)

// Factory registers the file driver: --driver file, with --file-mode; the
// pool is <data-dir>/pool unless Config.Dir says otherwise.
func Factory() volume.Factory {
	return volume.Factory{Name: "file", Summary: "files under data-dir/pool",
		NewConfig: func() volume.DriverConfig { return &Config{Mode: ModeAuto} }}
}

// Flags implements volume.DriverConfig.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Mode, "file-mode", c.Mode, "file driver point-in-time mode: auto, reflink, copy-before-write")
}

// Validate implements volume.DriverConfig.
func (c *Config) Validate() error {
	switch c.Mode {
	case ModeAuto, ModeReflink, ModeCopyBeforeWrite:
		return nil
	}
	return fmt.Errorf("file-mode %q: want auto, reflink or copy-before-write", c.Mode)
}

// Open implements volume.DriverConfig.
func (c *Config) Open(o volume.OpenOptions) (volume.Driver, error) {
	cfg := *c
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(o.DataDir, "pool")
	}
	cfg.DisableSnapshotOpen = cfg.DisableSnapshotOpen || o.DisableSnapshotOpen
	if cfg.Logger == nil {
		cfg.Logger = o.Logger
	}
	d, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return d, nil
}
