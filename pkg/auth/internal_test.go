package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

// TestInternalServiceNeedsServiceRole: every method of a service named
// Internal needs the service or admin role, by the service's name (a
// method added later is covered); a service whose name only starts the
// same is not.
func TestInternalServiceNeedsServiceRole(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(strings.Repeat("k", 40)), 0o600)
	a, err := New(Config{Mode: ModeToken, SigningKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ReadKey(keyFile)
	internal := Internal{"pkg.v1.InternalService"}
	call := func(roles []string, method string) error {
		tok := Mint(key, Identity{Project: "p", Roles: roles})
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataKey, tok))
		_, err := a.check(ctx, method, nil, internal)
		return err
	}
	for _, c := range []struct {
		roles  []string
		method string
		denied bool
	}{
		{[]string{RoleMember}, "/pkg.v1.InternalService/Anything", true},
		{[]string{RoleMember}, "/pkg.v1.InternalService/AddedLater", true},
		{[]string{RoleService}, "/pkg.v1.InternalService/Anything", false},
		{[]string{RoleAdmin}, "/pkg.v1.InternalService/Anything", false},
		{[]string{RoleMember}, "/pkg.v1.InternalServiceX/Anything", false},
		{[]string{RoleMember}, "/pkg.v1.PublicService/Anything", false},
	} {
		err := call(c.roles, c.method)
		if c.denied && !errors.Is(err, ErrPermissionDenied) || !c.denied && err != nil {
			t.Errorf("%v calls %s: %v, want denied %v", c.roles, c.method, err, c.denied)
		}
	}
}
