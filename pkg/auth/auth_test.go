package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSignedTokens(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte(strings.Repeat("s", 40)+"\n"), 0o600)
	a, err := New(Config{Mode: ModeToken, SigningKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ReadKey(keyFile)
	tok := Mint(key, Identity{Project: "p", Roles: []string{RoleMember}, Expires: time.Now().Add(time.Hour).Unix()})
	id, err := a.Authenticate(tok)
	if err != nil || id.Project != "p" || id.Admin() {
		t.Fatalf("good token: %v %+v", err, id)
	}
	// Tampering with the payload (a member making itself admin) breaks the MAC.
	forged := Mint([]byte(strings.Repeat("z", 40)), Identity{Project: "p", Roles: []string{RoleAdmin}})
	payload := strings.Split(forged, ".")[1]
	parts := strings.Split(tok, ".")
	for _, bad := range []string{parts[0] + "." + payload + "." + parts[2], forged, tok + "x", "bvt1.", ""} {
		if _, err := a.Authenticate(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
	old := Mint(key, Identity{Project: "p", Roles: []string{RoleMember}, Expires: time.Now().Add(-time.Second).Unix()})
	if _, err := a.Authenticate(old); !errors.Is(err, ErrExpired) {
		t.Errorf("expired token: %v", err)
	}
	if _, err := New(Config{Mode: ModeToken}); !errors.Is(err, ErrNoSource) {
		t.Errorf("token mode without a source: %v", err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("too short"), 0o600)
	if _, err := New(Config{SigningKeyFile: short}); err == nil {
		t.Error("a short signing key was accepted")
	}
}

func TestTokenFileReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("# token project roles user\n0123456789abcdef-alice team-a member alice\n"), 0o600)
	a, err := New(Config{TokenFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Authenticate("0123456789abcdef-alice"); err != nil || id.Project != "team-a" || id.User != "alice" {
		t.Fatalf("file token: %v %+v", err, id)
	}
	// Revoking is deleting the line.
	os.WriteFile(path, []byte("0123456789abcdef-admin ops admin,member\n"), 0o600)
	future := time.Now().Add(time.Second)
	os.Chtimes(path, future, future)
	if _, err := a.Authenticate("0123456789abcdef-alice"); !errors.Is(err, ErrBadToken) {
		t.Errorf("revoked token: %v", err)
	}
	if id, err := a.Authenticate("0123456789abcdef-admin"); err != nil || !id.Admin() {
		t.Errorf("new admin token: %v %+v", err, id)
	}
	for _, bad := range []string{"short team-a member\n", "0123456789abcdef-x team-a superuser\n", "0123456789abcdef-x team-a\n"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := New(Config{TokenFile: path}); err == nil {
			t.Errorf("token file %q accepted", bad)
		}
	}
}
