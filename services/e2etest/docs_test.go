package e2etest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/testenv"
)

// shellBlocks returns the ```sh blocks of a Markdown file, in order.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if cur != nil {
		t.Fatalf("%s: a ```sh block is not closed", path)
	}
	return blocks
}

// TestDocsExamples runs every ```sh block of docs/*.md, a document at a
// time in one bash (so variables carry from block to block), against a
// fresh stack, the way a reader would type them. A block that fails fails
// the test with the output so far.
func TestDocsExamples(t *testing.T) {
	for _, prog := range []string{"bash", "curl", "jq", "nbdcopy", "grpcurl", "cmp"} {
		testenv.LookPath(t, prog)
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, doc := range docs {
		blocks := shellBlocks(t, doc)
		if len(blocks) == 0 {
			continue
		}
		ran++
		t.Run(filepath.Base(doc), func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repository")
			s := Start(t, Options{RepositoryDir: repo, Tokens: true})
			work := t.TempDir()
			// Each block is announced on stderr so a failure shows where.
			var script strings.Builder
			script.WriteString("set -euo pipefail\n")
			for i, b := range blocks {
				script.WriteString("echo '>>> block " + strconv.Itoa(i+1) + "' >&2\n" + b)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
			cmd.Dir = work
			cmd.Env = append(os.Environ(),
				"PATH="+Binaries(t)+string(os.PathListSeparator)+os.Getenv("PATH"),
				"GW=http://"+s.Gateway.Addr, "VM="+s.VolumeManager.Addr, "BS="+s.Backup.Addr,
				"VM_HTTP="+s.MetricsAddr, "BS_HTTP="+s.BackupMetrics,
				"REPO="+repo, "SPARE="+FreeAddr(t),
				"TOKEN="+s.Token("demo", "member"), "ADMIN_TOKEN="+s.Token("admin", "admin"), "SIGNING_KEY="+s.SigningKeyFile)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: the examples failed (%v); output:\n%s", filepath.Base(doc), err, tail(string(out), 80))
			}
			t.Logf("%s: %d blocks ran; output tail:\n%s", filepath.Base(doc), len(blocks), tail(string(out), 15))
		})
	}
	if ran < 2 {
		t.Fatalf("found runnable examples in %d documents under docs/, want the API guide and the operator guide", ran)
	}
}
