package engine

import (
	"bytes"
	"fmt"
	"os"
)

// DefaultContainer is the repository container of backups that name none.
const DefaultContainer = "backups"

// ReadKeyFile reads a repository key (Options.Key) from a file, without
// the surrounding white space.
func ReadKeyFile(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("repository key: %w", err)
	}
	return bytes.TrimSpace(key), nil
}
