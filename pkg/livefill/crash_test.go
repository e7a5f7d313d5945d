package livefill_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockvault/blockvault/pkg/livefill"
	"github.com/blockvault/blockvault/pkg/testenv"
)

const crashEnv = "LIVEFILL_CRASH_DIR"

// crashOpts are the options of the crash test's fill, before and after
// the crash.
var crashOpts = livefill.Options{SourceID: "b", TargetZeroed: true, RegionSize: 256 << 10, SyncEvery: 8 * mib, Workers: 2}

const crashSize = 48 * mib

// crashWrite is the k-th write of the crash test's child: where, and what.
func crashWrite(k int) (off int64, data []byte) {
	rng := rand.New(rand.NewPCG(uint64(k), 99))
	n := 1 + rng.Int64N(300<<10)
	off = rng.Int64N(crashSize - n)
	data = make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32() | 1)
	}
	return off, data
}

// TestCrashDuringFill: a process filling a device, with writes going on,
// is killed with SIGKILL mid-fill. Reopened from its state file, the
// device reads every write the process was told was done, and the backup
// everywhere else, before and after the fill resumes and ends.
func TestCrashDuringFill(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	fx := newFixture(t, crashSize, nil)
	targetPath := filepath.Join(fx.dir, "target.img")
	emptyFile(t, targetPath, crashSize)
	state := filepath.Join(fx.dir, "state")
	logPath := filepath.Join(fx.dir, "log")

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDuringFill$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), crashEnv+"="+fx.dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(testenv.Patience)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte("ready\n")) {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the child exited before it was ready: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child was not ready within %v\n%s", testenv.Patience, out.String())
		}
	}
	time.Sleep(time.Duration(rand.Int64N(int64(200 * time.Millisecond))))
	cmd.Process.Signal(syscall.SIGKILL)
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the child: %v, want it killed\n%s", err, out.String())
	}

	// What the child was told was done, and the write it was making.
	want := fx.want(t)
	var skip [][2]int64
	done, inFlight := 0, -1
	lf, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(lf)
	for sc.Scan() {
		var k int
		switch {
		case strings.HasPrefix(sc.Text(), "I "):
			fmt.Sscanf(sc.Text(), "I %d", &k)
			inFlight = k
		case strings.HasPrefix(sc.Text(), "D "):
			fmt.Sscanf(sc.Text(), "D %d", &k)
			off, data := crashWrite(k)
			copy(want[off:], data)
			done++
			inFlight = -1
		case strings.HasPrefix(sc.Text(), "complete"):
			t.Fatal("the fill completed before the kill: the test tests nothing")
		}
	}
	lf.Close()
	if inFlight >= 0 {
		// Told nothing of it: either content may be there, even a part.
		off, data := crashWrite(inFlight)
		skip = append(skip, [2]int64{off, off + int64(len(data))})
	}
	st, err := livefill.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed after %d writes acknowledged, with %d of %d regions durable", done, st.Filled, st.Regions)
	if st.Filled == 0 || st.Complete() {
		t.Fatalf("killed with %d of %d regions durable: want mid-fill", st.Filled, st.Regions)
	}

	target := openFile(t, targetPath)
	d := open(t, target, fx.reader(t), state, crashOpts)
	same(t, "the device reopened after the crash", readAll(t, d), want, skip...)
	if err := d.Fill(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(targetPath)
	same(t, "the target after the resumed fill", got, want, skip...)
}

// crashChild runs in the child: a fill with writes, logging each write
// before it is made ("I k") and once it returned ("D k"), until killed.
func crashChild(t *testing.T, dir string) {
	e := openEngine(t, filepath.Join(dir, "repo"), nil)
	r, err := e.OpenBackup(context.Background(), "backups", "b", engineReaderOptions())
	if err != nil {
		t.Fatal(err)
	}
	target := openFile(t, filepath.Join(dir, "target.img"))
	d, err := livefill.Open(target, &slowDevice{Device: r, delay: 25 * time.Millisecond}, filepath.Join(dir, "state"), crashOpts)
	if err != nil {
		t.Fatal(err)
	}
	go d.Fill(context.Background(), nil)
	log, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; ; k++ {
		off, data := crashWrite(k)
		fmt.Fprintf(log, "I %d\n", k)
		if _, err := d.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(log, "D %d\n", k)
		if k == 10 {
			fmt.Fprintf(log, "ready\n")
		}
		if d.Complete() {
			fmt.Fprintf(log, "complete\n")
			select {}
		}
	}
}
