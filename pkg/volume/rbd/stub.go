//go:build !(rbd && cgo)

package rbd

import (
	"context"
	"fmt"

	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/volume"
)

// Driver stands in for the rbd driver in a binary built without it; New
// never returns one.
type Driver struct{}

var _ volume.Driver = (*Driver)(nil)

// New reports that the driver is not compiled in (ErrNotCompiled).
func New(cfg Config) (*Driver, error) {
	return nil, fmt.Errorf("rbd driver (pool %q): %w", cfg.Pool, ErrNotCompiled)
}

// Close implements io.Closer.
func (d *Driver) Close() error { return nil }

// Name implements volume.Driver.
func (d *Driver) Name() string { return "rbd" }

// Capabilities implements volume.Driver.
func (d *Driver) Capabilities() volume.Capabilities { return volume.Capabilities{Mode: "rbd-snapshot"} }

func unsupported() error { return fmt.Errorf("%w: %w", volume.ErrUnsupported, ErrNotCompiled) }

// CreateVolume implements volume.Driver.
func (d *Driver) CreateVolume(context.Context, string, int64) error { return unsupported() }

// DeleteVolume implements volume.Driver.
func (d *Driver) DeleteVolume(context.Context, string) error { return unsupported() }

// OpenVolume implements volume.Driver.
func (d *Driver) OpenVolume(context.Context, string, bool) (blockdev.Device, error) {
	return nil, unsupported()
}

// VolumeSize implements volume.Driver.
func (d *Driver) VolumeSize(context.Context, string) (int64, error) { return 0, unsupported() }

// Space implements volume.Driver.
func (d *Driver) Space(context.Context) (int64, int64, error) { return 0, 0, unsupported() }
