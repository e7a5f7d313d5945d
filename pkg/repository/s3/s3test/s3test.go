// Package s3test starts a real S3 server for tests: versitygw with its
// posix backend on a temporary directory, on 127.0.0.1, stopped when the test
// ends. A missing versitygw fails the test in CI and skips it elsewhere.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/repository/s3"
	"github.com/blockvault/blockvault/pkg/testenv"
)

// Server is a running S3 server.
type Server struct {
	Config s3.Config
	cmd    *exec.Cmd
	done   chan struct{}
	log    string
}

// Stop kills the server (for fault tests); cleanup does it anyway.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Start runs versitygw and returns a config for a fresh bucket on it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := testenv.LookPath(t, "versitygw")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o755)
	key := make([]byte, 10)
	rand.Read(key)
	access, secret := "AK"+hex.EncodeToString(key), hex.EncodeToString(append(key, key...))
	for attempt := 0; attempt < 3; attempt++ {
		addr := testenv.FreeAddr(t)
		var err error
		logPath := filepath.Join(dir, fmt.Sprintf("versitygw-%d.log", attempt))
		logf, _ := os.Create(logPath)
		cmd := exec.Command(bin, "--port", addr, "--access", access, "--secret", secret, "posix", data)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		s := &Server{cmd: cmd, done: make(chan struct{}), log: logPath}
		go func() { cmd.Wait(); logf.Close(); close(s.done) }()
		t.Cleanup(s.Stop)
		cfg := s3.Config{Endpoint: addr, Bucket: "blockvault-test", AccessKey: access, SecretKey: secret, Region: "us-east-1", CreateBucket: true}
		deadline := time.Now().Add(testenv.Patience)
		for time.Now().Before(deadline) {
			select {
			case <-s.done:
				deadline = time.Time{}
				continue
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = s3.New(ctx, cfg)
			cancel()
			if err == nil {
				s.Config = cfg
				return s
			}
			time.Sleep(100 * time.Millisecond)
		}
		s.Stop()
		log, _ := os.ReadFile(logPath)
		t.Logf("versitygw did not answer on %s within %v (attempt %d): %v\n%s", addr, testenv.Patience, attempt, err, log)
	}
	t.Fatal("could not start versitygw")
	return nil
}
