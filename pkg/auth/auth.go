// Package auth turns the token of a request (the X-Auth-Token header, the
// same in gRPC metadata "x-auth-token") into an identity: a project and
// roles. Tokens come from a token file (one "token project roles [user]"
// line each) or are signed with a key (Mint makes them); "noauth" accepts
// every request as an admin of the project it names, for development only.
//
// The daemons check tokens in a gRPC interceptor (Interceptors): a request
// names its project (project_id), and a token that is not an admin's may
// only name its own project; every method of an Internal service (the
// volume manager's daemon-to-daemon one) needs the service or admin role.
// Handlers ask FromContext for admin-only actions. The errors are this
// package's (ErrNoToken, ErrBadToken, ErrExpired, ErrPermissionDenied);
// pkg/rpcerr gives them their gRPC codes, so the interceptors run inside
// rpcerr's (pkg/daemon chains them so).
package auth

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Roles.
const (
	RoleMember = "member"
	RoleAdmin  = "admin"
	// RoleService is a daemon calling another (the backup service calling
	// the volume manager): an admin that may also call internal RPCs.
	RoleService = "service"
)

// Modes.
const (
	ModeToken  = "token"
	ModeNoAuth = "noauth"
)

// Identity is who a token stands for.
type Identity struct {
	Project string   `json:"p"`
	Roles   []string `json:"r"`
	User    string   `json:"u,omitempty"`
	// Expires is the end of a signed token's life (Unix seconds; 0 = never).
	Expires int64 `json:"exp,omitempty"`
}

// Has reports whether the identity has role.
func (i Identity) Has(role string) bool { return slices.Contains(i.Roles, role) }

// Admin reports whether the identity may act on every project.
func (i Identity) Admin() bool { return i.Has(RoleAdmin) || i.Has(RoleService) }

// Errors; pkg/rpcerr gives them their gRPC codes.
var (
	// ErrNoToken, ErrBadToken, ErrExpired: the call is not authenticated
	// (Unauthenticated).
	ErrNoToken  = errors.New("authentication required: send a token in X-Auth-Token")
	ErrBadToken = errors.New("the token is not valid")
	ErrExpired  = errors.New("the token has expired")
	// ErrPermissionDenied: the caller's token is good but its roles or
	// project do not allow the call (PermissionDenied). The errors that
	// wrap it (Denied) say which policy refused what.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNoSource: a start-up error (New), never a request's.
	ErrNoSource   = errors.New("auth: token mode needs a token file (--auth-token-file) or a signing key (--auth-signing-key-file); --auth noauth turns authentication off, for development only")
	errRoleFormat = errors.New("roles must be member, admin or service")
)

// Denied returns an ErrPermissionDenied error whose text is the formatted
// message (the whole of it: "Policy doesn't allow ...").
func Denied(format string, args ...any) error {
	return &denial{msg: fmt.Sprintf(format, args...)}
}

type denial struct{ msg string }

func (e *denial) Error() string { return e.msg }
func (e *denial) Unwrap() error { return ErrPermissionDenied }

// Config selects how tokens are checked.
type Config struct {
	// Mode is "token" (the default) or "noauth".
	Mode string
	// TokenFile holds "token project role[,role] [user]" lines.
	TokenFile string
	// SigningKeyFile holds the key (32 bytes or more) signed tokens are
	// checked with.
	SigningKeyFile string
}

// Authenticator checks tokens.
type Authenticator struct {
	mode string
	key  []byte

	file    string
	mu      sync.Mutex
	modTime time.Time
	tokens  map[string]Identity
}

// New returns an Authenticator for cfg.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{mode: cfg.Mode}
	switch cfg.Mode {
	case ModeNoAuth:
		return a, nil
	case ModeToken, "":
		a.mode = ModeToken
	default:
		return nil, fmt.Errorf("auth %q: want token or noauth", cfg.Mode)
	}
	if cfg.TokenFile == "" && cfg.SigningKeyFile == "" {
		return nil, ErrNoSource
	}
	if cfg.SigningKeyFile != "" {
		key, err := ReadKey(cfg.SigningKeyFile)
		if err != nil {
			return nil, err
		}
		a.key = key
	}
	if cfg.TokenFile != "" {
		a.file = cfg.TokenFile
		if err := a.reload(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// ReadKey reads a signing key file (surrounding whitespace ignored).
func ReadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth signing key: %w", err)
	}
	key = bytes.TrimSpace(key)
	if len(key) < 32 {
		return nil, fmt.Errorf("auth signing key %s: %d bytes, want at least 32", path, len(key))
	}
	return key, nil
}

// NoAuth reports whether authentication is off.
func (a *Authenticator) NoAuth() bool { return a.mode == ModeNoAuth }

// reload reads the token file again when it changed (tokens can be added
// and revoked without a restart).
func (a *Authenticator) reload() error {
	st, err := os.Stat(a.file)
	if err != nil {
		return fmt.Errorf("auth token file: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens != nil && st.ModTime().Equal(a.modTime) {
		return nil
	}
	tokens, err := parseTokenFile(a.file)
	if err != nil {
		return err
	}
	a.tokens, a.modTime = tokens, st.ModTime()
	return nil
}

func parseTokenFile(path string) (map[string]Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth token file: %w", err)
	}
	defer f.Close()
	out := map[string]Identity{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 3 || len(fs) > 4 {
			return nil, fmt.Errorf("auth token file %s line %d: want \"token project role[,role] [user]\"", path, n)
		}
		if len(fs[0]) < 16 {
			return nil, fmt.Errorf("auth token file %s line %d: a token must be at least 16 characters", path, n)
		}
		roles, err := parseRoles(fs[2])
		if err != nil {
			return nil, fmt.Errorf("auth token file %s line %d: %w", path, n, err)
		}
		id := Identity{Project: fs[1], Roles: roles}
		if len(fs) == 4 {
			id.User = fs[3]
		}
		out[fs[0]] = id
	}
	return out, sc.Err()
}

func parseRoles(s string) ([]string, error) {
	roles := strings.Split(s, ",")
	for _, r := range roles {
		if r != RoleMember && r != RoleAdmin && r != RoleService {
			return nil, fmt.Errorf("role %q: %w", r, errRoleFormat)
		}
	}
	return roles, nil
}

// ParseRoles parses a comma-separated role list.
func ParseRoles(s string) ([]string, error) { return parseRoles(s) }

// signedPrefix starts every signed token.
const signedPrefix = "bvt1."

// Mint returns a token for id signed with key.
func Mint(key []byte, id Identity) string {
	payload, _ := json.Marshal(id)
	p := base64.RawURLEncoding.EncodeToString(payload)
	return signedPrefix + p + "." + base64.RawURLEncoding.EncodeToString(sign(key, p))
}

func sign(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signedPrefix + payload))
	return m.Sum(nil)
}

// Authenticate returns the identity of token. In noauth mode every token
// (or none) is an admin with no project of its own.
func (a *Authenticator) Authenticate(token string) (Identity, error) {
	if a.mode == ModeNoAuth {
		return Identity{Roles: []string{RoleAdmin}, User: "noauth"}, nil
	}
	if token == "" {
		return Identity{}, ErrNoToken
	}
	if a.key != nil && strings.HasPrefix(token, signedPrefix) {
		return a.checkSigned(token)
	}
	if a.file != "" {
		if err := a.reload(); err != nil {
			return Identity{}, err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		for t, id := range a.tokens {
			if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
				return id, nil
			}
		}
	}
	return Identity{}, ErrBadToken
}

func (a *Authenticator) checkSigned(token string) (Identity, error) {
	p, mac, ok := strings.Cut(strings.TrimPrefix(token, signedPrefix), ".")
	if !ok {
		return Identity{}, ErrBadToken
	}
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil || !hmac.Equal(got, sign(a.key, p)) {
		return Identity{}, ErrBadToken
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return Identity{}, ErrBadToken
	}
	var id Identity
	if err := json.Unmarshal(payload, &id); err != nil || id.Project == "" || len(id.Roles) == 0 {
		return Identity{}, ErrBadToken
	}
	if _, err := parseRoles(strings.Join(id.Roles, ",")); err != nil {
		return Identity{}, ErrBadToken
	}
	if id.Expires != 0 && time.Now().Unix() >= id.Expires {
		return Identity{}, ErrExpired
	}
	return id, nil
}

// Flags registers the authentication flags on fs.
func Flags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Mode, "auth", c.Mode, "authentication: token (X-Auth-Token checked against --auth-token-file or --auth-signing-key-file) or noauth (development only: every caller is an admin)")
	fs.StringVar(&c.TokenFile, "auth-token-file", c.TokenFile, "file of \"token project role[,role] [user]\" lines (roles: member, admin, service); re-read when it changes")
	fs.StringVar(&c.SigningKeyFile, "auth-signing-key-file", c.SigningKeyFile, "file holding the key (32 bytes or more) that signed tokens (blockvault token create) are checked with")
}
