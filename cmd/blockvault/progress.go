package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
)

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressPrinter shows a backup's progress: a bar redrawn in place on a
// terminal, or one plain line per update (JSON with --output json).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	json  bool
	last  time.Time
	drawn bool
}

func newProgressPrinter(g *globals) *progressPrinter {
	return &progressPrinter{w: stdout, tty: g.output == "table" && isTerminal(os.Stdout), json: g.output == "json"}
}

func (p *progressPrinter) update(b *backupv1.Backup) {
	if p.json {
		printJSON(p.w, b)
		return
	}
	pr := b.GetProgress()
	line := progressLine(b.GetStatus(), pr)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	// Plain lines, at most one a second, plus every status change.
	if time.Since(p.last) >= time.Second || pr.GetBytesDone() == pr.GetBytesTotal() {
		fmt.Fprintln(p.w, line)
		p.last = time.Now()
	}
}

func (p *progressPrinter) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}

// progressLine renders "[#####.....]  42%  1.2 GiB / 2.0 GiB  310.5 MiB/s  ETA 3s".
func progressLine(st string, pr *backupv1.Progress) string {
	const width = 30
	done, total := pr.GetBytesDone(), pr.GetBytesTotal()
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	frac = min(max(frac, 0), 1)
	n := int(frac * width)
	bar := strings.Repeat("#", n) + strings.Repeat(".", width-n)
	eta := "-"
	if rate := pr.GetRate(); rate > 0 && total > done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	op := pr.GetOperation()
	if op == "" {
		op = "backup"
	}
	return fmt.Sprintf("%-8s %-10s [%s] %3.0f%%  %s / %s  %s/s  ETA %s", op, st, bar, frac*100,
		humanBytes(done), humanBytes(total), humanBytes(int64(pr.GetRate())), eta)
}
