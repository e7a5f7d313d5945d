package cpuprio

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSetNiceRejectsOutOfRange(t *testing.T) {
	for _, n := range []int{-1, 20} {
		err := SetNice(n)
		if err == nil || !strings.Contains(err.Error(), "must be 0 to 19") {
			t.Errorf("SetNice(%d) = %v, want an error naming the range", n, err)
		}
	}
}

// lockedThread runs a goroutine on a thread of its own until release is
// closed and returns that thread's id.
func lockedThread(t *testing.T, release chan struct{}) int {
	tid := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		<-release
	}()
	return <-tid
}

func TestSetNiceReachesEveryThread(t *testing.T) {
	before, err := Nice()
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	// Threads that exist before the call.
	for i := 0; i < 4; i++ {
		lockedThread(t, release)
	}
	want := min(before+3, Max)
	if err := SetNice(want); err != nil {
		t.Fatal(err)
	}
	nices, err := ThreadNices(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for tid, got := range nices {
		if got != want {
			t.Errorf("thread %d has nice %d, want %d", tid, got, want)
		}
	}
	// A thread made afterwards inherits it.
	tid := lockedThread(t, release)
	if got, err := threadNice(os.Getpid(), tid); err != nil || got != want {
		t.Errorf("a new thread has nice %d (%v), want %d", got, err, want)
	}
	if os.Geteuid() == 0 {
		// Root may go back (CAP_SYS_NICE); leave the test binary as it was.
		if err := SetNice(before); err != nil {
			t.Fatal(err)
		}
	}
}
