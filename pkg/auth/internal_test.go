package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
	call := func(roles []string, method string) codes.Code {
		tok := Mint(key, Identity{Project: "p", Roles: roles})
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataKey, tok))
		_, err := a.check(ctx, method, nil, internal)
		return status.Code(err)
	}
	for _, c := range []struct {
		roles  []string
		method string
		want   codes.Code
	}{
		{[]string{RoleMember}, "/pkg.v1.InternalService/Anything", codes.PermissionDenied},
		{[]string{RoleMember}, "/pkg.v1.InternalService/AddedLater", codes.PermissionDenied},
		{[]string{RoleService}, "/pkg.v1.InternalService/Anything", codes.OK},
		{[]string{RoleAdmin}, "/pkg.v1.InternalService/Anything", codes.OK},
		{[]string{RoleMember}, "/pkg.v1.InternalServiceX/Anything", codes.OK},
		{[]string{RoleMember}, "/pkg.v1.PublicService/Anything", codes.OK},
	} {
		if got := call(c.roles, c.method); got != c.want {
			t.Errorf("%v calls %s: %v, want %v", c.roles, c.method, got, c.want)
		}
	}
}
