package file

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStagingDuringClone drives withStaging by hand: writes and zeroings
// made while the clone runs return at once, are visible to reads at once,
// stay out of the clone and of the file until the clone is done, and are
// in the file afterwards; a flush waits for them.
func TestStagingDuringClone(t *testing.T) {
	d, err := New(Config{Dir: t.TempDir(), Mode: ModeCopyBeforeWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	const mib = 1 << 20
	if err := d.CreateVolume(ctx, "v", 4*mib); err != nil {
		t.Fatal(err)
	}
	dev, err := d.OpenVolume(ctx, "v", false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	a := bytes.Repeat([]byte{'a'}, 4*mib)
	if _, err := dev.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	st := dev.(*volumeDevice).st
	b := bytes.Repeat([]byte{'b'}, mib)
	clonePath := filepath.Join(t.TempDir(), "clone")
	flushed := make(chan error, 1)

	err = st.withStaging(func() error {
		if _, err := dev.WriteAt(b, mib); err != nil {
			return err
		}
		if err := dev.Zero(3*mib, mib/2); err != nil {
			return err
		}
		// Reads see the staged writes.
		got := make([]byte, 4*mib)
		if _, err := dev.ReadAt(got, 0); err != nil {
			return err
		}
		want := append(append(append([]byte{}, a[:mib]...), b...), a[:mib]...)
		want = append(append(want, make([]byte, mib/2)...), a[:mib/2]...)
		if !bytes.Equal(got, want) {
			t.Error("a read during staging does not show the staged writes")
		}
		// A flush waits until they are in the file.
		go func() { flushed <- dev.Flush() }()
		// The file itself does not have them yet: the clone copies it.
		raw := make([]byte, 4*mib)
		if _, err := st.f.ReadAt(raw, 0); err != nil {
			return err
		}
		if !bytes.Equal(raw, a) {
			t.Error("a staged write reached the file while the clone ran")
		}
		out, err := os.Create(clonePath)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, io.NewSectionReader(st.f, 0, 4*mib))
		time.Sleep(50 * time.Millisecond)
		select {
		case <-flushed:
			t.Error("flush returned before the staged writes were applied")
		default:
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-flushed; err != nil {
		t.Fatalf("flush: %v", err)
	}
	clone, _ := os.ReadFile(clonePath)
	if !bytes.Equal(clone, a) {
		t.Fatal("the clone holds writes made after staging began")
	}
	raw := make([]byte, 4*mib)
	if _, err := st.f.ReadAt(raw, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[mib:2*mib], b) || !bytes.Equal(raw[3*mib:3*mib+mib/2], make([]byte, mib/2)) || !bytes.Equal(raw[:mib], a[:mib]) {
		t.Fatal("the staged writes are not in the file after the clone")
	}
	if st.staging != nil {
		t.Fatal("staging still on after the clone")
	}
}
