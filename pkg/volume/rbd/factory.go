package rbd

import (
	"errors"
	"flag"

	"github.com/blockvault/blockvault/pkg/volume"
)

// Factory registers the rbd driver: --driver rbd, with --ceph-conf,
// --ceph-user, --rbd-pool and --rbd-namespace. In a binary built without
// the driver, opening it says so (ErrNotCompiled).
func Factory() volume.Factory {
	return volume.Factory{Name: "rbd", Summary: "Ceph RBD images; needs a binary built with -tags rbd",
		NewConfig: func() volume.DriverConfig { return &Config{} }}
}

// Flags implements volume.DriverConfig.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfPath, "ceph-conf", c.ConfPath, "rbd driver: the ceph.conf naming the monitors and keyring (default: librados's search, /etc/ceph/ceph.conf)")
	fs.StringVar(&c.User, "ceph-user", c.User, "rbd driver: the cephx client id, without \"client.\" (default: admin)")
	fs.StringVar(&c.Pool, "rbd-pool", c.Pool, "rbd driver: the pool that holds the volumes' images")
	fs.StringVar(&c.Namespace, "rbd-namespace", c.Namespace, "rbd driver: an RBD namespace in the pool (default: none)")
}

// Validate implements volume.DriverConfig.
func (c *Config) Validate() error {
	if c.Pool == "" {
		return errors.New("driver rbd needs --rbd-pool (the Ceph pool of the volumes' images)")
	}
	return nil
}

// Open implements volume.DriverConfig.
func (c *Config) Open(o volume.OpenOptions) (volume.Driver, error) {
	cfg := *c
	cfg.DisableSnapshotOpen = cfg.DisableSnapshotOpen || o.DisableSnapshotOpen
	if cfg.Logger == nil {
		cfg.Logger = o.Logger
	}
	d, err := New(cfg)
	if err != nil {
		return nil, err // it names the driver, the pool and the cluster
	}
	return d, nil
}
