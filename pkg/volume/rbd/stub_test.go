//go:build !(rbd && cgo)

package rbd_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/volume"
	"github.com/blockvault/blockvault/pkg/volume/rbd"
)

// TestNotCompiled: a binary built without librbd says how to get the
// driver, and its stand-in still is a volume.Driver the manager can name.
func TestNotCompiled(t *testing.T) {
	d, err := rbd.New(rbd.Config{Pool: "rbd"})
	if d != nil || !errors.Is(err, rbd.ErrNotCompiled) || !strings.Contains(err.Error(), "-tags rbd") {
		t.Fatalf("New: %v, %v", d, err)
	}
	var _ volume.Driver = (*rbd.Driver)(nil)
}
