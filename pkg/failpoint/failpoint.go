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
	once       sync.Once
	armedNames map[string]bool
	armedDir   string
)

func load() {
	names, dir, ok := strings.Cut(os.Getenv("BLOCKVAULT_FAILPOINT"), ":")
	if !ok || dir == "" {
		return
	}
	for _, name := range strings.Split(names, ",") {
		if name != "" {
			if armedNames == nil {
				armedNames = map[string]bool{}
			}
			armedNames[name] = true
		}
	}
	armedDir = dir
}

// Pause stops the caller at point name when that point is armed, until the
// test lets it go; otherwise it returns at once.
func Pause(name string) {
	once.Do(load)
	if !armedNames[name] {
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
