// Package validate checks request fields the way both daemons need them and
// returns InvalidArgument errors (rpcerr.Invalid) whose messages name the
// field and the problem.
package validate

import (
	"strings"
	"unicode/utf8"

	"github.com/blockvault/blockvault/pkg/rpcerr"
	"github.com/google/uuid"
)

// MaxNameLen is the longest name or description the API accepts.
const MaxNameLen = 255

// UUID checks that v, named field, is a UUID in canonical form.
func UUID(field, v string) error {
	if v == "" {
		return rpcerr.Invalid("%s is required", field)
	}
	u, err := uuid.Parse(v)
	if err != nil || u.String() != strings.ToLower(v) {
		return rpcerr.Invalid("%s %q is not a valid UUID", field, v)
	}
	return nil
}

// OptionalUUID is UUID for a field that may be empty.
func OptionalUUID(field, v string) error {
	if v == "" {
		return nil
	}
	return UUID(field, v)
}

// Project checks a project id: 1 to 64 characters of letters, digits, '-' and '_'.
func Project(v string) error {
	if v == "" {
		return rpcerr.Invalid("project_id is required")
	}
	if len(v) > 64 {
		return rpcerr.Invalid("project_id is longer than 64 characters")
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return rpcerr.Invalid("project_id %q may contain only letters, digits, '-' and '_'", v)
		}
	}
	return nil
}

// Text checks a free-text field (name, description): valid UTF-8, no control
// characters, at most MaxNameLen characters.
func Text(field, v string) error {
	if !utf8.ValidString(v) {
		return rpcerr.Invalid("%s is not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(v); n > MaxNameLen {
		return rpcerr.Invalid("%s is %d characters long; at most %d are allowed", field, n, MaxNameLen)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return rpcerr.Invalid("%s contains a control character", field)
		}
	}
	return nil
}

// Metadata checks a metadata map: at most 64 keys of 1..255 characters and
// values of at most 255.
func Metadata(m map[string]string) error {
	if len(m) > 64 {
		return rpcerr.Invalid("metadata has %d keys; at most 64 are allowed", len(m))
	}
	for k, v := range m {
		if k == "" {
			return rpcerr.Invalid("metadata keys must not be empty")
		}
		if err := Text("metadata key", k); err != nil {
			return err
		}
		if err := Text("metadata value of "+k, v); err != nil {
			return err
		}
	}
	return nil
}
