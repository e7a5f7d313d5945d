// Package storetest gives tests real databases: a fresh SQLite file, and a
// throwaway PostgreSQL cluster started with the system's initdb and pg_ctl
// (as the postgres user, since PostgreSQL refuses to run as root), listening
// on 127.0.0.1 only, shared by a test binary and removed when it exits.
package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

var (
	mu      sync.Mutex
	cluster *pgCluster
)

type pgCluster struct {
	dir  string
	port int
	bin  string
}

// Main runs a test binary's tests and stops the PostgreSQL cluster, if one
// was started. Call it from TestMain: os.Exit(storetest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		cluster.stop()
		cluster = nil
	}
	return code
}

// SQLiteURL returns the URL of a new SQLite database file in a temp dir.
func SQLiteURL(t testing.TB) string {
	t.Helper()
	return "sqlite://" + filepath.Join(t.TempDir(), "test.db")
}

// PostgresURL returns the URL of a new, empty database in the shared
// throwaway cluster, starting the cluster on first use. A missing
// PostgreSQL installation fails the test in CI and skips it elsewhere.
func PostgresURL(t testing.TB) string {
	t.Helper()
	c := startCluster(t)
	name := "t_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	db, err := sql.Open("pgx", c.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("storetest: create database: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", c.url("postgres"))
		if err == nil {
			db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			db.Close()
		}
	})
	return c.url(name)
}

// Each runs fn as a subtest on SQLite and on PostgreSQL.
func Each(t *testing.T, fn func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLiteURL(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, PostgresURL(t)) })
}

func (c *pgCluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

func startCluster(t testing.TB) *pgCluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		return cluster
	}
	bin := pgBinDir()
	if bin == "" {
		testenv.Missing(t, "PostgreSQL server binaries (initdb, pg_ctl; Debian package postgresql)")
	}
	testenv.RequireRoot(t)
	if _, err := user.Lookup("postgres"); err != nil {
		testenv.Missing(t, "the postgres system user")
	}
	runuser := testenv.LookPath(t, "runuser")
	dir, err := os.MkdirTemp("", "blockvault-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("storetest: chown: %v: %s", err, out)
	}
	os.Chmod(dir, 0o700)
	data := filepath.Join(dir, "data")
	out, err := exec.Command(runuser, "-u", "postgres", "--", filepath.Join(bin, "initdb"),
		"-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("storetest: initdb: %v: %s", err, out)
	}
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200", port, dir)
		cmd := exec.Command(runuser, "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"),
			"-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start")
		out, err := cmd.CombinedOutput()
		if err == nil {
			cluster = &pgCluster{dir: dir, port: port, bin: bin}
			break
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			os.RemoveAll(dir)
			t.Fatalf("storetest: pg_ctl start: %v: %s\n%s", err, out, log)
		}
	}
	// Wait until it accepts connections.
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := sql.Open("pgx", cluster.url("postgres"))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
		}
		if err == nil {
			return cluster
		}
		if time.Now().After(deadline) {
			t.Fatalf("storetest: PostgreSQL did not accept connections: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *pgCluster) stop() {
	exec.Command("runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"),
		"-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop").Run()
	os.RemoveAll(c.dir)
}

// pgBinDir finds the directory of initdb and pg_ctl.
func pgBinDir() string {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p)
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	best, bestV := "", -1
	for _, m := range matches {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if v > bestV {
			best, bestV = filepath.Dir(m), v
		}
	}
	return best
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
