// Package storetest gives tests real databases: a fresh SQLite file, and a
// throwaway PostgreSQL cluster started with the system's initdb and pg_ctl
// (as the postgres user, since PostgreSQL refuses to run as root), listening
// on 127.0.0.1 only, shared by a test binary and removed when it exits.
package storetest

import (
	"context"
	"database/sql"
	"fmt"
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
	cluster *Cluster
)

// Cluster is a throwaway PostgreSQL cluster: initdb and pg_ctl run as the
// postgres user, listening on 127.0.0.1 only, its files in a temp dir.
type Cluster struct {
	dir, bin, runuser string
	port              int
}

// Main runs a test binary's tests and stops the PostgreSQL cluster, if one
// was started. Call it from TestMain: os.Exit(storetest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		cluster.remove()
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
	c := sharedCluster(t)
	name := "t_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	db, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("storetest: create database: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", c.URL("postgres"))
		if err == nil {
			db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			db.Close()
		}
	})
	return c.URL(name)
}

// Each runs fn as a subtest on SQLite and on PostgreSQL.
func Each(t *testing.T, fn func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLiteURL(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, PostgresURL(t)) })
}

// URL is the URL of database db in the cluster.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// NewCluster initialises and starts a cluster private to the test, for
// tests that stop and start it (Stop, Start); it is removed at cleanup.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	c := initCluster(t)
	t.Cleanup(c.remove)
	c.port = testenv.FreePort(t)
	c.Start(t)
	return c
}

// initCluster runs initdb in a new temp dir; a missing PostgreSQL
// installation fails the test in CI and skips it elsewhere.
func initCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		testenv.Missing(t, "PostgreSQL server binaries (initdb, pg_ctl; Debian package postgresql)")
	}
	testenv.RequireRoot(t)
	if _, err := user.Lookup("postgres"); err != nil {
		testenv.Missing(t, "the postgres system user")
	}
	c := &Cluster{bin: bin, runuser: testenv.LookPath(t, "runuser")}
	dir, err := os.MkdirTemp("", "blockvault-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("storetest: chown: %v: %s", err, out)
	}
	os.Chmod(dir, 0o700)
	if out, err := exec.Command(c.runuser, "-u", "postgres", "--", filepath.Join(bin, "initdb"),
		"-D", c.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("storetest: initdb: %v: %s", err, out)
	}
	return c
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) pgctl(args ...string) ([]byte, error) {
	full := append([]string{"-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", c.data()}, args...)
	return exec.Command(c.runuser, full...).CombinedOutput()
}

func (c *Cluster) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200", c.port, c.dir)
	out, err := c.pgctl("-l", filepath.Join(c.dir, "log"), "-o", opts, "-w", "-t", "120", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return nil
}

// Start starts the cluster on its port and waits until it accepts
// connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.start(); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	c.waitReady(t)
}

// Stop stops the cluster: mode "fast" (sessions ended, clean shutdown) or
// "immediate" (a crash: WAL recovery at the next start).
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := c.pgctl("-m", mode, "-w", "-t", "120", "stop"); err != nil {
		t.Fatalf("storetest: pg_ctl stop -m %s: %v: %s", mode, err, out)
	}
}

func (c *Cluster) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(testenv.Patience)
	for {
		db, err := sql.Open("pgx", c.URL("postgres"))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("storetest: PostgreSQL on port %d did not accept connections within %v: %v", c.port, testenv.Patience, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sharedCluster starts the test binary's shared cluster on first use.
func sharedCluster(t testing.TB) *Cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		return cluster
	}
	c := initCluster(t)
	for attempt := 0; ; attempt++ {
		c.port = testenv.FreePort(t)
		err := c.start()
		if err == nil {
			break
		}
		if attempt == 2 {
			c.remove()
			t.Fatalf("storetest: %v", err)
		}
	}
	c.waitReady(t)
	cluster = c
	return c
}

func (c *Cluster) remove() {
	c.pgctl("-m", "immediate", "-w", "stop")
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
