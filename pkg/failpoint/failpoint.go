// Package failpoint lets tests stop a daemon at a named point of its work,
// to crash something there and see that nothing is lost. It is off unless
// the environment variable BLOCKVAULT_FAILPOINT is "name:dir": a process
// reaching point name then creates dir/name.reached and waits until
// dir/name.go exists (or for ten minutes). Production runs never set it.
package failpoint

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

var (
	once      sync.Once
	armedName string
	armedDir  string
)

func load() {
	name, dir, ok := strings.Cut(os.Getenv("BLOCKVAULT_FAILPOINT"), ":")
	if ok && name != "" && dir != "" {
		armedName, armedDir = name, dir
	}
}

// Pause stops the caller at point name when that point is armed, until the
// test lets it go; otherwise it returns at once.
func Pause(name string) {
	once.Do(load)
	if armedName == "" || name != armedName {
		return
	}
	os.WriteFile(filepath.Join(armedDir, name+".reached"), nil, 0o644)
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(armedDir, name+".go")); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
