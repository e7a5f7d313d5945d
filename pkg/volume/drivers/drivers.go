// Package drivers is the registry of the volume manager's storage drivers:
// each is registered explicitly here (no init()), by the volume.Factory its
// package exports, with its name, its own settings and their flags.
package drivers

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/pkg/volume/rbd"
)

// ErrUnknown: no driver of that name is registered.
var ErrUnknown = errors.New("unknown storage driver")

// Registry is a set of drivers by name.
type Registry struct {
	factories []volume.Factory
}

// New returns a registry of the given drivers. Two drivers of one name are
// a programming error: it panics.
func New(factories ...volume.Factory) *Registry {
	r := &Registry{}
	for _, f := range factories {
		if _, err := r.Lookup(f.Name); err == nil {
			panic(fmt.Sprintf("drivers: two drivers named %q", f.Name))
		}
		r.factories = append(r.factories, f)
	}
	return r
}

// Default is the registry of blockvault's drivers: file (the default) and
// rbd (a stub that says so in a binary built without it).
func Default() *Registry { return New(file.Factory(), rbd.Factory()) }

// Names are the registered drivers' names, in the order of registration.
func (r *Registry) Names() []string {
	names := make([]string, len(r.factories))
	for i, f := range r.factories {
		names[i] = f.Name
	}
	return names
}

// Lookup returns the driver of that name, or an error wrapping ErrUnknown
// that names the drivers there are.
func (r *Registry) Lookup(name string) (volume.Factory, error) {
	for _, f := range r.factories {
		if f.Name == name {
			return f, nil
		}
	}
	return volume.Factory{}, fmt.Errorf("driver %q: %w: want %s", name, ErrUnknown, orList(r.Names()))
}

// Config returns the default settings of the driver of that name.
func (r *Registry) Config(name string) (volume.DriverConfig, error) {
	f, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	return f.NewConfig(), nil
}

// Flags binds --driver to name and every registered driver's flags, each
// into settings of its own (so a config file or environment may hold the
// settings of drivers not chosen). After parsing, Bound.Config returns the
// chosen driver's settings.
func (r *Registry) Flags(fs *flag.FlagSet, name *string) *Bound {
	b := &Bound{reg: r, name: name, configs: map[string]volume.DriverConfig{}}
	var usage []string
	for _, f := range r.factories {
		usage = append(usage, fmt.Sprintf("%s (%s)", f.Name, f.Summary))
		c := f.NewConfig()
		c.Flags(fs)
		b.configs[f.Name] = c
	}
	fs.StringVar(name, "driver", *name, "storage driver: "+orList(usage))
	return b
}

// Bound is every driver's settings bound to flags.
type Bound struct {
	reg     *Registry
	name    *string
	configs map[string]volume.DriverConfig
}

// Config returns the settings of the driver --driver names.
func (b *Bound) Config() (volume.DriverConfig, error) {
	if c, ok := b.configs[*b.name]; ok {
		return c, nil
	}
	_, err := b.reg.Lookup(*b.name)
	return nil, err
}

func orList(s []string) string {
	switch len(s) {
	case 0:
		return "none"
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
