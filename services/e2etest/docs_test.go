package e2etest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
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
	for _, prog := range []string{"bash", "curl", "jq", "nbdcopy", "grpcurl", "cmp", "openstack", "cinder"} {
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

// The daemons and the CLI, as the documents name them.
var daemonNames = []string{"volume-manager", "backup-service", "api-gateway"}

// flagInfo is one flag of a binary, from its --help.
type flagInfo struct {
	value bool   // takes a value
	def   string // its default, as --help prints it ("" when none)
}

// cliCommand is one command of the blockvault CLI, from its --help.
type cliCommand struct {
	path  string
	subs  map[string]*cliCommand
	flags map[string]flagInfo // local and inherited, by long name
	short map[string]string   // shorthand -> long name
}

// binaryFacts is what the binaries say of themselves: each daemon's
// flags, the CLI's command tree.
type binaryFacts struct {
	daemons map[string]map[string]flagInfo
	cli     *cliCommand
	any     map[string]bool // every flag of every binary and command
	make    map[string]bool // the Makefile's targets
	// commands and flags count what the checks looked at.
	commands, flags int
}

var (
	goFlagLine  = regexp.MustCompile(`^  -([a-z0-9-]+)(?: (\S+))?$`)
	goDefault   = regexp.MustCompile(`\(default "?([^")]*)"?\)$`)
	cobraFlag   = regexp.MustCompile(`^\s+(?:-([a-zA-Z]), )?--([a-z0-9-]+)(?: ([a-zA-Z0-9]+))?(?:\s{2,}|$)`)
	cobraSubcmd = regexp.MustCompile(`^  ([a-z][a-z0-9-]*)\s{2,}`)
)

func helpOf(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(Binaries(t), bin), append(args, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s --help: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// daemonFlags parses a Go flag package --help.
func daemonFlags(help string) map[string]flagInfo {
	flags := map[string]flagInfo{"help": {}}
	var cur string
	for _, l := range strings.Split(help, "\n") {
		if m := goFlagLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
			flags[cur] = flagInfo{value: m[2] != ""}
			continue
		}
		if m := goDefault.FindStringSubmatch(strings.TrimSpace(l)); m != nil && cur != "" {
			f := flags[cur]
			f.def = m[1]
			flags[cur] = f
		}
	}
	return flags
}

// cliTree reads the CLI's command tree from the --help of each command.
func cliTree(t *testing.T, path ...string) *cliCommand {
	t.Helper()
	c := &cliCommand{path: strings.Join(append([]string{"blockvault"}, path...), " "), subs: map[string]*cliCommand{},
		flags: map[string]flagInfo{}, short: map[string]string{}}
	section := ""
	for _, l := range strings.Split(helpOf(t, "blockvault", path...), "\n") {
		if strings.HasSuffix(l, ":") && !strings.HasPrefix(l, " ") {
			section = l
			continue
		}
		switch section {
		case "Available Commands:":
			if m := cobraSubcmd.FindStringSubmatch(l); m != nil && m[1] != "help" {
				c.subs[m[1]] = nil
			}
		case "Flags:", "Global Flags:":
			if m := cobraFlag.FindStringSubmatch(l); m != nil {
				c.flags[m[2]] = flagInfo{value: m[3] != ""}
				if m[1] != "" {
					c.short[m[1]] = m[2]
				}
			}
		}
	}
	for name := range c.subs {
		c.subs[name] = cliTree(t, append(append([]string{}, path...), name)...)
	}
	return c
}

func readBinaryFacts(t *testing.T) *binaryFacts {
	t.Helper()
	f := &binaryFacts{daemons: map[string]map[string]flagInfo{}, any: map[string]bool{}}
	for _, d := range daemonNames {
		f.daemons[d] = daemonFlags(helpOf(t, d))
		if len(f.daemons[d]) < 8 {
			t.Fatalf("%s --help: read only %d flags:\n%s", d, len(f.daemons[d]), helpOf(t, d))
		}
		for name := range f.daemons[d] {
			f.any[name] = true
		}
	}
	f.cli = cliTree(t)
	mk, err := os.ReadFile(filepath.Join(repoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	f.make = map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(mk), -1) {
		f.make[m[1]] = true
	}
	var walk func(c *cliCommand)
	walk = func(c *cliCommand) {
		for name := range c.flags {
			f.any[name] = true
		}
		for _, s := range c.subs {
			walk(s)
		}
	}
	walk(f.cli)
	if len(f.cli.subs) < 5 || f.cli.subs["backup"] == nil || f.cli.subs["backup"].subs["restore"] == nil {
		t.Fatalf("the CLI's command tree read from --help looks wrong: %d top-level commands", len(f.cli.subs))
	}
	return f
}

// hasFlag reports whether flags holds name, or a flag starting with
// name's prefix when name ends in * (--s3-*).
func hasFlag[V any](flags map[string]V, name string) bool {
	if p, ok := strings.CutSuffix(name, "*"); ok {
		for n := range flags {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
		return false
	}
	_, ok := flags[name]
	return ok
}

// flagName is the flag a token names ("--listen=x" -> "listen"), or "".
func flagName(tok string) (name string, inline bool) {
	if !strings.HasPrefix(tok, "-") || tok == "-" || tok == "--" {
		return "", false
	}
	name = strings.TrimLeft(tok, "-")
	name, _, inline = strings.Cut(name, "=")
	return name, inline
}

// shellWords splits the start of s into words the way the shell would,
// roughly: quotes and $(...) kept whole, stopping at a pipe, a list or
// redirection operator, a closing parenthesis or a comment.
func shellWords(s string) []string {
	var words []string
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) || strings.ContainsRune("|;&<>)`#", rune(s[i])) {
			return words
		}
		start, depth := i, 0
	word:
		for i < len(s) {
			switch c := s[i]; {
			case c == '\'' || c == '"':
				if j := strings.IndexByte(s[i+1:], c); j >= 0 {
					i += j + 2
					continue
				}
				i = len(s)
			case c == '$' && i+1 < len(s) && (s[i+1] == '(' || s[i+1] == '{'):
				depth++
				i += 2
				continue
			case (c == ')' || c == '}') && depth > 0:
				depth--
			case depth == 0 && (c == ' ' || c == '\t' || strings.ContainsRune("|;&<>)`", rune(c))):
				break word
			}
			i++
		}
		words = append(words, s[start:i])
	}
}

// commandStart finds our binaries' names as commands in a line of shell.
var commandStart = regexp.MustCompile(`(?:^|[\s(|;&])(?:\./)?(?:bin/)?(blockvault|volume-manager|backup-service|api-gateway)(?:\s|$)`)

var (
	confFile = regexp.MustCompile(`^# \S*/(volume-manager|backup-service|api-gateway)\.conf$`)
	confLine = regexp.MustCompile(`^([a-z][a-z0-9-]*): \S`)
)

var makeTarget = regexp.MustCompile(`(?:^|[\s(|;&])make(?: -s)? ([a-z][a-z0-9-]*)`)

// withoutComment drops a shell comment (an unquoted # at a word's start).
func withoutComment(l string) string {
	quote := byte(0)
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t'):
			return l[:i]
		}
	}
	return l
}

// checkCommand checks one command line of ours: a daemon's flags against
// its --help, the CLI's subcommands and each command's flags against its
// --help. It returns the problems.
func (f *binaryFacts) checkCommand(bin string, args []string) []string {
	f.commands++
	var probs []string
	if flags, ok := f.daemons[bin]; ok {
		for i := 0; i < len(args); i++ {
			name, inline := flagName(args[i])
			if name == "" {
				continue
			}
			f.flags++
			fi, ok := flags[name]
			if !ok {
				probs = append(probs, fmt.Sprintf("%s has no flag --%s (see %s --help)", bin, name, bin))
				continue
			}
			if fi.value && !inline {
				i++
			}
		}
		return probs
	}
	c := f.cli
	for i := 0; i < len(args); i++ {
		a := args[i]
		if name, inline := flagName(a); name != "" {
			if long, ok := c.short[name]; ok && !strings.HasPrefix(a, "--") {
				name = long
			}
			f.flags++
			fi, ok := c.flags[name]
			if !ok {
				probs = append(probs, fmt.Sprintf("%s has no flag --%s", c.path, name))
				continue
			}
			if fi.value && !inline {
				i++
			}
			continue
		}
		if len(c.subs) == 0 {
			continue // a positional argument
		}
		sub, ok := c.subs[a]
		if !ok {
			probs = append(probs, fmt.Sprintf("%s has no command %q", c.path, a))
			return probs
		}
		c = sub
	}
	return probs
}

// checkShell checks every command of ours in a line of shell.
func (f *binaryFacts) checkShell(line string) []string {
	line = withoutComment(line)
	var probs []string
	for _, m := range commandStart.FindAllStringSubmatchIndex(line, -1) {
		bin := line[m[2]:m[3]]
		probs = append(probs, f.checkCommand(bin, shellWords(line[m[3]:]))...)
	}
	for _, m := range makeTarget.FindAllStringSubmatch(line, -1) {
		f.commands++
		if !f.make[m[1]] {
			probs = append(probs, fmt.Sprintf("the Makefile has no target %q", m[1]))
		}
	}
	if m := regexp.MustCompile(`QUICKSTART_FLAGS=(\S+)`).FindStringSubmatch(line); m != nil {
		probs = append(probs, f.checkCommand("blockvault", []string{"quickstart", m[1]})...)
	}
	return probs
}

var (
	inlineCode = regexp.MustCompile("`([^`]+)`")
	// configBullet is a bullet naming the daemons whose flags it lists:
	// "- volume-manager and backup-service: `--auth`, ...".
	configBullet = regexp.MustCompile(`^- ([a-z -]+?): `)
	daemonAlias  = map[string][]string{
		"volume-manager": {"volume-manager"}, "backup-service": {"backup-service"}, "api-gateway": {"api-gateway"},
		"all three daemons": daemonNames,
	}
)

// checkDocument checks every command and flag a Markdown document names:
// commands of ours in code blocks (but json) and in inline code, inline
// `--flags` (each must be a flag of some binary), and bullets that list a
// daemon's flags ("- backup-service: `--listen`, ..."), whose every flag
// must be that daemon's. Each problem comes with its line number.
func (f *binaryFacts) checkDocument(text string, commands bool) []string {
	var probs []string
	lines := strings.Split(text, "\n")
	fence := ""
	confOf := ""        // the daemon whose config file a text block shows
	var bullet []string // the daemons of the bullet being read
	for n := 0; n < len(lines); n++ {
		l, at := lines[n], n+1
		report := func(ps []string) {
			for _, p := range ps {
				probs = append(probs, fmt.Sprintf("line %d: %s", at, p))
			}
		}
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "```") {
			if fence == "" {
				fence = strings.TrimPrefix(t, "```") + " "
			} else {
				fence, confOf = "", ""
			}
			continue
		}
		// A config file: "# /etc/blockvault/backup-service.conf", then
		// "key: value" lines whose keys are the daemon's flags.
		if m := confFile.FindStringSubmatch(l); fence != "" && m != nil {
			confOf = m[1]
			continue
		}
		if m := confLine.FindStringSubmatch(l); confOf != "" && m != nil {
			f.flags++
			if !hasFlag(f.daemons[confOf], m[1]) {
				report([]string{fmt.Sprintf("config key %q: %s has no flag --%s", m[1], confOf, m[1])})
			}
			continue
		}
		if fence != "" {
			for strings.HasSuffix(l, "\\") && n+1 < len(lines) {
				n++
				l = strings.TrimSuffix(l, "\\") + " " + lines[n]
			}
			if commands && fence != "json " {
				report(f.checkShell(l))
			}
			continue
		}
		switch m := configBullet.FindStringSubmatch(l); {
		case m != nil:
			bullet = nil
			for _, name := range strings.Split(m[1], " and ") {
				bullet = append(bullet, daemonAlias[strings.TrimSpace(name)]...)
				if daemonAlias[strings.TrimSpace(name)] == nil {
					bullet = nil
					break
				}
			}
		case !strings.HasPrefix(l, "  "):
			bullet = nil
		}
		for _, sm := range inlineCode.FindAllStringSubmatch(l, -1) {
			span := sm[1]
			if commands {
				report(f.checkShell(span))
			}
			if !strings.HasPrefix(span, "--") {
				continue
			}
			name, _ := flagName(strings.Fields(span)[0])
			f.flags++
			if !hasFlag(f.any, name) {
				report([]string{fmt.Sprintf("`--%s`: no binary has this flag", name)})
			}
			for _, d := range bullet {
				if !hasFlag(f.daemons[d], name) {
					report([]string{fmt.Sprintf("`--%s` is listed for %s, which has no such flag", name, d)})
				}
			}
		}
	}
	return probs
}

// portEntry is one listener of a "What runs" table row: the flag that
// sets it, its default address, and the paths the row says it serves.
type portEntry struct {
	flag, addr string
	paths      []string
}

var portFlag = regexp.MustCompile("`(--[a-z-]+) ([0-9.]+:[0-9]+)`")

// portTable reads the rows of the "What runs" table of a document: the
// process in the first column, its listeners in the second.
func portTable(text string) map[string][]portEntry {
	rows := map[string][]portEntry{}
	for _, l := range strings.Split(text, "\n") {
		cells := strings.Split(l, "|")
		if len(cells) < 4 || !strings.HasPrefix(l, "| `") {
			continue
		}
		proc := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if !slices.Contains(daemonNames, proc) {
			continue
		}
		for _, part := range strings.Split(cells[2], ";") {
			m := portFlag.FindStringSubmatch(part)
			if m == nil {
				continue
			}
			e := portEntry{flag: m[1], addr: m[2]}
			for _, sm := range inlineCode.FindAllStringSubmatch(part, -1) {
				if strings.HasPrefix(sm[1], "/") {
					e.paths = append(e.paths, sm[1])
				}
			}
			rows[proc] = append(rows[proc], e)
		}
	}
	return rows
}

// listeningPorts returns the TCP ports process pid listens on.
func listeningPorts(t *testing.T, pid int) []int {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil // the process is gone
	}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			p, _ := strconv.ParseInt(hexPort, 16, 32)
			ports = append(ports, int(p))
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// waitListening waits until d listens on exactly want (30 s at most).
func waitListening(t *testing.T, d *Daemon, want []int) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := listeningPorts(t, d.cmd.Process.Pid)
		if slices.Equal(got, want) {
			// Settled: look again a little later, for a late listener.
			time.Sleep(time.Second)
			if got = listeningPorts(t, d.cmd.Process.Pid); slices.Equal(got, want) {
				return
			}
		}
		if !d.Running() || time.Now().After(deadline) {
			t.Fatalf("%s %s listens on ports %v, want %v (the \"What runs\" table's); log:\n%s", d.Name, strings.Join(d.Args, " "), got, want, tail(d.Logs(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestDocsMatchBinaries holds README.md and docs/*.md to the binaries:
// every command of ours they show (in code blocks and inline code) must
// exist (`blockvault <command> --help`), every flag on it must be in that
// command's --help, every inline `--flag` must be some binary's, a bullet
// listing a daemon's flags must list only its flags; the "What runs"
// tables must give each listener's flag with its real default, and the
// daemons started on those flags must listen on exactly those ports and
// serve the paths named there; the grpcurl the README installs is the one
// CI pins.
func TestDocsMatchBinaries(t *testing.T) {
	facts := readBinaryFacts(t)
	root := repoRoot()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{filepath.Join(root, "README.md")}, docs...)
	texts := map[string]string{}
	for _, d := range docs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		texts[filepath.Base(d)] = string(b)
	}

	t.Run("commands and flags", func(t *testing.T) {
		for _, d := range docs {
			name := filepath.Base(d)
			commands, flags := facts.commands, facts.flags
			// benchmarks.md's code blocks are a report's output, not commands.
			probs := facts.checkDocument(texts[name], name != "benchmarks.md")
			for _, p := range probs {
				t.Errorf("%s, %s", name, p)
			}
			commands, flags = facts.commands-commands, facts.flags-flags
			t.Logf("%s: %d commands of ours and %d flags checked", name, commands, flags)
			if name == "README.md" && (commands < 12 || flags < 60) {
				t.Errorf("README.md: only %d commands and %d flags found to check: the checker lost its way", commands, flags)
			}
		}
	})

	t.Run("the checker catches mistakes", func(t *testing.T) {
		// The README with a flag no binary has, a flag listed for a daemon
		// that lacks it, a CLI command that does not exist and a daemon
		// flag that does not exist on a command line.
		bad := strings.Replace(texts["README.md"], "- api-gateway: `--listen`,", "- api-gateway: `--listen`, `--no-such-flag`, `--nbd-listen`,", 1)
		bad = strings.Replace(bad, "### Configuration\n", "### Configuration\n\n```text\n# /etc/blockvault/api-gateway.conf\nlisten: 1.2.3.4:5\nmax-concurrent: 4\n```\n", 1)
		bad = strings.Replace(bad, "bin/blockvault volume list\n", "bin/blockvault volume lists\nbin/volume-manager --listen 127.0.0.1:1 --bogus x\nmake quickstrat\n", 1)
		if bad == texts["README.md"] {
			t.Fatal("the README's lines this test alters are gone: update the test")
		}
		probs := strings.Join(facts.checkDocument(bad, true), "\n")
		for _, want := range []string{"`--no-such-flag`: no binary has this flag", "`--nbd-listen` is listed for api-gateway",
			`blockvault volume has no command "lists"`, "volume-manager has no flag --bogus", `the Makefile has no target "quickstrat"`,
			`config key "max-concurrent": api-gateway has no flag --max-concurrent`} {
			if !strings.Contains(probs, want) {
				t.Errorf("the checker missed %q; it found:\n%s", want, probs)
			}
		}
		if n := len(facts.checkDocument(texts["README.md"], true)); n != 0 {
			t.Errorf("the README itself has %d problems", n)
		}
		if got := portTable(texts["README.md"]); len(got["volume-manager"]) != 3 || len(got["backup-service"]) != 3 || len(got["api-gateway"]) != 1 {
			t.Errorf("the README's \"What runs\" table reads as %v", got)
		}
	})

	t.Run("tools", func(t *testing.T) {
		tools, err := os.ReadFile(filepath.Join(root, ".ci", "tools.sh"))
		if err != nil {
			t.Fatal(err)
		}
		pin := regexp.MustCompile(`github.com/fullstorydev/grpcurl/cmd/grpcurl@v[0-9.]+`).FindString(string(tools))
		if pin == "" {
			t.Fatal(".ci/tools.sh pins no grpcurl")
		}
		if !strings.Contains(texts["README.md"], "go install "+pin+"\n") {
			t.Errorf("the README does not say to install grpcurl as .ci/tools.sh does (go install %s)", pin)
		}
		// Every pinned tool the README names, at the version tools.sh pins.
		named := 0
		for _, m := range regexp.MustCompile(`"([a-z0-9-]+) \S+@(v[0-9.]+)"`).FindAllStringSubmatch(string(tools), -1) {
			if strings.Contains(texts["README.md"], m[1]) {
				named++
				if !regexp.MustCompile(regexp.QuoteMeta(m[1]) + `[^,;()]*?` + regexp.QuoteMeta(m[2]) + `\b`).MatchString(strings.ReplaceAll(texts["README.md"], "\n", " ")) {
					t.Errorf("the README names %s but not at its pinned version %s", m[1], m[2])
				}
			}
		}
		if buf := regexp.MustCompile(`BUF_VERSION=(\S+)`).FindStringSubmatch(string(tools)); buf == nil || !strings.Contains(texts["README.md"], "buf "+buf[1]) {
			t.Errorf("the README does not give buf's pinned version (.ci/tools.sh: %v)", buf)
		}
		if named < 5 {
			t.Errorf("the README names %d of .ci/tools.sh's Go tools, want the four protoc plugins and grpcurl", named)
		}
	})

	t.Run("test names", func(t *testing.T) {
		// Each test, fuzz target or benchmark a document cites as proof
		// exists.
		defined := map[string]bool{}
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			for _, m := range regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)\w+)\(`).FindAllStringSubmatch(string(b), -1) {
				defined[m[1]] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		cited := 0
		for name, text := range texts {
			for _, m := range regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z]\w*`).FindAllString(text, -1) {
				if regexp.MustCompile(`[0-9]{6,}$`).MatchString(m) {
					continue // a temporary directory's name in a report
				}
				cited++
				if !defined[m] {
					t.Errorf("%s cites %s, which no _test.go file defines", name, m)
				}
			}
		}
		if cited < 20 {
			t.Fatalf("found %d citations of tests in the documents", cited)
		}
	})

	t.Run("dependencies", func(t *testing.T) {
		// Each module go.mod requires directly is named in the README's
		// "Dependencies, and why" (its path, or the end of it).
		gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		_, section, _ := strings.Cut(texts["README.md"], "## Dependencies, and why")
		var spans []string
		for _, m := range inlineCode.FindAllStringSubmatch(section, -1) {
			spans = append(spans, m[1])
		}
		direct := 0
		for _, l := range strings.Split(string(gomod), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 || strings.Contains(l, "// indirect") || !strings.Contains(f[0], ".") || !strings.HasPrefix(f[1], "v") {
				continue
			}
			direct++
			if !slices.ContainsFunc(spans, func(s string) bool { return s == f[0] || strings.HasSuffix(f[0], "/"+s) }) {
				t.Errorf("go.mod requires %s; the README's \"Dependencies, and why\" does not say why", f[0])
			}
		}
		if direct < 10 {
			t.Fatalf("read %d direct requirements from go.mod", direct)
		}
	})

	t.Run("ports", func(t *testing.T) {
		tables := map[string]map[string][]portEntry{}
		for _, name := range []string{"README.md", "operations.md"} {
			tables[name] = portTable(texts[name])
			for _, d := range daemonNames {
				if len(tables[name][d]) == 0 {
					t.Fatalf("%s: the \"What runs\" table gives no listener of %s", name, d)
				}
			}
		}
		if !reflect.DeepEqual(tables["README.md"], tables["operations.md"]) {
			t.Errorf("README.md and operations.md list different ports:\n%v\n%v", tables["README.md"], tables["operations.md"])
		}
		rows := tables["README.md"]
		for _, d := range daemonNames {
			for _, e := range rows[d] {
				name, _ := flagName(e.flag)
				if fi, ok := facts.daemons[d][name]; !ok || fi.def != e.addr {
					t.Errorf("%s: the table says %s defaults to %s; --help says %q", d, e.flag, e.addr, fi.def)
				}
			}
		}
		// Start each daemon on the table's flags (free ports instead of
		// the defaults) and compare what it listens on.
		dir := t.TempDir()
		addrs := map[string]map[string]string{} // daemon -> flag -> address
		start := func(name string, extra ...string) *Daemon {
			addrs[name] = map[string]string{}
			var args, want []string
			var ports []int
			for _, e := range rows[name] {
				a := FreeAddr(t)
				addrs[name][e.flag] = a
				args = append(args, e.flag, a)
				want = append(want, a)
				ports = append(ports, portOf(a))
			}
			d := &Daemon{Name: name, Args: append(args, extra...), Log: filepath.Join(dir, name+".log"), t: t}
			d.Start()
			t.Cleanup(d.Stop)
			waitListening(t, d, ports)
			t.Logf("%s listens on exactly %v", name, want)
			return d
		}
		start("volume-manager", "--data-dir", filepath.Join(dir, "vm"), "--auth", "noauth", "--node-id", "n1")
		bs := start("backup-service", "--data-dir", filepath.Join(dir, "bs"), "--auth", "noauth", "--node-id", "n2",
			"--volume-manager", addrs["volume-manager"]["--listen"])
		backends := []string{"--volume-manager", addrs["volume-manager"]["--listen"], "--backup-service", addrs["backup-service"]["--listen"]}
		gw := start("api-gateway", backends...)
		for _, d := range daemonNames {
			for _, e := range rows[d] {
				for _, p := range e.paths {
					url := "http://" + addrs[d][e.flag] + p
					deadline := time.Now().Add(10 * time.Second) // /readyz: the gateway's first look at its backends
					for code, body := httpGet(t, url); code != 200; code, body = httpGet(t, url) {
						if time.Now().After(deadline) {
							t.Errorf("%s: GET %s (the table names %s): %d %s", d, url, p, code, body)
							break
						}
						time.Sleep(100 * time.Millisecond)
					}
				}
			}
		}
		// The gateway's own series, on its REST port.
		rest := "http://" + addrs["api-gateway"]["--listen"]
		httpGet(t, rest+"/v3/demo/volumes")
		httpGet(t, rest+"/v3/demo/volumes/not-a-uuid")
		_, m := httpGet(t, rest+"/metrics")
		for _, series := range []string{
			`blockvault_http_requests_total{code="200",method="GET",route="/v3/{project_id}/volumes"} 1`,
			`blockvault_http_requests_total{code="400",method="GET",route="/v3/{project_id}/volumes/{volume_id}"} 1`,
			`blockvault_http_request_duration_seconds_count{method="GET",route="/v3/{project_id}/volumes"} 1`,
		} {
			if !strings.Contains(m, series+"\n") {
				t.Errorf("the gateway's /metrics lacks %s:\n%s", series, m)
			}
		}
		// --http-listen "" and --nbd-listen "" turn the backup service's
		// HTTP port and its NBD port (live restores) off.
		bsOff := &Daemon{Name: "backup-service", Args: []string{"--listen", FreeAddr(t), "--http-listen", "", "--nbd-listen", "", "--data-dir", filepath.Join(dir, "bs-off"),
			"--auth", "noauth", "--volume-manager", addrs["volume-manager"]["--listen"]}, Log: filepath.Join(dir, "backup-service-off.log"), t: t}
		bsOff.Start()
		t.Cleanup(bsOff.Stop)
		waitListening(t, bsOff, []int{portOf(bsOff.Args[1])})
		bsOff.Stop()
		// --http-listen moves /metrics and /readyz to a port of their own.
		gw.Stop()
		mon := FreeAddr(t)
		gw2 := &Daemon{Name: "api-gateway", Args: append([]string{"--listen", addrs["api-gateway"]["--listen"], "--http-listen", mon}, backends...),
			Log: filepath.Join(dir, "api-gateway-2.log"), t: t}
		gw2.Start()
		t.Cleanup(gw2.Stop)
		waitListening(t, gw2, []int{portOf(addrs["api-gateway"]["--listen"]), portOf(mon)})
		if code, body := httpGet(t, "http://"+mon+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
			t.Errorf("GET /metrics on --http-listen: %d", code)
		}
		if code, _ := httpGet(t, rest+"/metrics"); code != 404 {
			t.Errorf("GET /metrics on the REST port with --http-listen set: %d, want 404", code)
		}
		if code, _ := httpGet(t, rest+"/healthz"); code != 200 {
			t.Errorf("GET /healthz on the REST port with --http-listen set: %d, want 200", code)
		}
		// The gateway's /readyz: 503 once a daemon behind it is gone.
		bs.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for code, _ := httpGet(t, "http://"+mon+"/readyz"); code != http.StatusServiceUnavailable; code, _ = httpGet(t, "http://"+mon+"/readyz") {
			if time.Now().After(deadline) {
				t.Fatalf("the gateway's /readyz answers %d with the backup service stopped, want 503", code)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
