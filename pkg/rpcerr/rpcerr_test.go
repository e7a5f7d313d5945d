package rpcerr

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/backupjob"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/cinder"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/volume"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sentinels is the decision for every exported error of the domain
// packages (TestEverySentinelHasACode checks that the list is complete).
var sentinels = map[string]struct {
	err  error
	code codes.Code
}{
	"volume.ErrNotFound":             {volume.ErrNotFound, codes.NotFound},
	"volume.ErrAlreadyExists":        {volume.ErrAlreadyExists, codes.AlreadyExists},
	"volume.ErrInvalidArgument":      {volume.ErrInvalidArgument, codes.InvalidArgument},
	"volume.ErrNoSpace":              {volume.ErrNoSpace, codes.ResourceExhausted},
	"volume.ErrUnsupported":          {volume.ErrUnsupported, codes.Unimplemented},
	"volume.ErrInUse":                {volume.ErrInUse, codes.FailedPrecondition},
	"lifecycle.ErrInvalidTransition": {lifecycle.ErrInvalidTransition, codes.FailedPrecondition},
	"engine.ErrNoBackup":             {engine.ErrNoBackup, codes.NotFound},
	"backupjob.ErrNotFound":          {backupjob.ErrNotFound, codes.NotFound},
	"cinder.ErrInvalidRecord":        {cinder.ErrInvalidRecord, codes.InvalidArgument},
	"cinder.ErrUnsupported":          {cinder.ErrUnsupported, codes.InvalidArgument},
	"cinder.ErrBrokenChain":          {cinder.ErrBrokenChain, codes.FailedPrecondition},
	"cinder.ErrMissing":              {cinder.ErrMissing, codes.NotFound},
	"cinder.ErrCorrupt":              {cinder.ErrCorrupt, codes.DataLoss},
	"backupjob.ErrUnavailable":       {backupjob.ErrUnavailable, codes.Unavailable},
	"engine.ErrCorrupt":              {engine.ErrCorrupt, codes.DataLoss},
	"engine.ErrWrongKey":             {engine.ErrWrongKey, codes.FailedPrecondition},
	"engine.ErrClosed":               {engine.ErrClosed, codes.FailedPrecondition},
	"repository.ErrNotFound":         {repository.ErrNotFound, codes.NotFound},
	"repository.ErrInvalidName":      {repository.ErrInvalidName, codes.InvalidArgument},
	"repository.ErrNoSpace":          {repository.ErrNoSpace, codes.ResourceExhausted},
	"repository.ErrUnavailable":      {repository.ErrUnavailable, codes.Unavailable},
	"quota.ErrExceeded":              {quota.ErrExceeded, codes.ResourceExhausted},
	"quota.ErrInvalidLimits":         {quota.ErrInvalidLimits, codes.InvalidArgument},
	"auth.ErrNoToken":                {auth.ErrNoToken, codes.Unauthenticated},
	"auth.ErrBadToken":               {auth.ErrBadToken, codes.Unauthenticated},
	"auth.ErrExpired":                {auth.ErrExpired, codes.Unauthenticated},
	"auth.ErrPermissionDenied":       {auth.ErrPermissionDenied, codes.PermissionDenied},
	"auth.ErrNoSource":               {auth.ErrNoSource, codes.Internal}, // start-up only
	"store.ErrNotFound":              {store.ErrNotFound, codes.NotFound},
	"store.ErrConflict":              {store.ErrConflict, codes.FailedPrecondition},
	"store.ErrUnavailable":           {store.ErrUnavailable, codes.Unavailable},
	"blockdev.ErrReadOnly":           {blockdev.ErrReadOnly, codes.FailedPrecondition},
	"blockdev.ErrOutOfRange":         {blockdev.ErrOutOfRange, codes.InvalidArgument},
	"rpcerr.ErrInvalidArgument":      {ErrInvalidArgument, codes.InvalidArgument},
	"rpcerr.ErrFailedPrecondition":   {ErrFailedPrecondition, codes.FailedPrecondition},
	"rpcerr.ErrAlreadyExists":        {ErrAlreadyExists, codes.AlreadyExists},
	"rpcerr.ErrUnavailable":          {ErrUnavailable, codes.Unavailable},
}

// domainPackages are the packages whose errors reach the daemons' handlers
// (directories beside this one).
var domainPackages = []string{"volume", "lifecycle", "engine", "repository", "quota", "auth", "store", "blockdev", "rpcerr", "backupjob", "cinder"}

// TestEverySentinelHasACode: each exported Err* variable of the domain
// packages, read from their source, has a decision in sentinels, and Code
// gives it (wrapped, as the packages return them) that code. A sentinel
// added without a decision, or removed, fails here.
func TestEverySentinelHasACode(t *testing.T) {
	found := map[string]bool{}
	for _, pkg := range domainPackages {
		for _, name := range exportedErrors(t, filepath.Join("..", pkg)) {
			found[pkg+"."+name] = true
		}
	}
	var names []string
	for n := range found {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, ok := sentinels[n]
		if !ok {
			t.Errorf("%s has no gRPC code decided: add it to pkg/rpcerr's table and to sentinels here", n)
			continue
		}
		if got := Code(fmt.Errorf("doing something: %w", s.err)); got != s.code {
			t.Errorf("%s: %v, want %v", n, got, s.code)
		}
		if s.code != codes.Internal && !inTable(s.err) {
			t.Errorf("%s gets %v only by accident: name it in pkg/rpcerr's table", n, s.code)
		}
	}
	for n := range sentinels {
		if !found[n] {
			t.Errorf("%s is in sentinels but not declared in its package any more", n)
		}
	}
}

func inTable(err error) bool {
	for _, d := range domain {
		if d.err == err {
			return true
		}
	}
	return false
}

// exportedErrors lists the exported package-level variables named Err* in
// the non-test Go files of dir.
func exportedErrors(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, spec := range g.Specs {
				for _, id := range spec.(*ast.ValueSpec).Names {
					if id.IsExported() && strings.HasPrefix(id.Name, "Err") {
						out = append(out, id.Name)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no Err* variables in %s: is the package still there?", dir)
	}
	return out
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("volume x: %w", store.ErrNotFound), codes.NotFound},
		{Invalid("size must be positive"), codes.InvalidArgument},
		{Precondition("volume is in-use"), codes.FailedPrecondition},
		{Exists("backup b is already registered here"), codes.AlreadyExists},
		{auth.Denied("Policy doesn't allow x"), codes.PermissionDenied},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.AlreadyExists, "x"), codes.AlreadyExists},
		// A status from another daemon, wrapped, keeps its code.
		{fmt.Errorf("volume manager: %w", status.Error(codes.NotFound, "x")), codes.NotFound},
		// The engine's errors as it returns them.
		{fmt.Errorf("engine: the record's backup is not readable in this repository: %w", fmt.Errorf("%w: b1", engine.ErrNoBackup)), codes.NotFound},
		{&engine.ChunkError{ChunkID: "c", Err: fmt.Errorf("%w: authentication failed", engine.ErrCorrupt)}, codes.DataLoss},
		{fmt.Errorf("container c: %w", engine.ErrWrongKey), codes.FailedPrecondition},
		{fmt.Errorf("disk exploded"), codes.Internal},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	for _, err := range []error{Invalid("size must be positive"), auth.Denied("Policy doesn't allow x")} {
		if s, _ := status.FromError(ToStatus(err)); s.Message() != err.Error() {
			t.Errorf("message not kept: %q, want %q", s.Message(), err.Error())
		}
	}
}
