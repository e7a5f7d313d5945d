// Package cpuprio lowers the CPU priority (the nice value) of the running
// process: of every one of its threads, since Linux keeps a nice value per
// thread and a new thread inherits the value of the thread that made it.
//
// The backup service runs at nice 10 by default: when it competes for CPU
// with the workloads whose volumes it backs up (the volume manager serving
// their writes, or the guests on the node), they win, and the backup takes
// the CPU time they leave. With nothing else running it runs as fast. A
// nice value only weighs threads against others in the same autogroup or
// CPU cgroup; across cgroups (systemd units) CPUWeight= does that job.
package cpuprio

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Max is the highest nice value (the lowest priority).
const Max = 19

// SetNice sets the nice value of every thread of the process to n (0 to
// Max). Raising it needs no privilege; lowering it below what the process
// has needs CAP_SYS_NICE, and the error says so.
func SetNice(n int) error {
	if n < 0 || n > Max {
		return fmt.Errorf("nice %d: must be 0 to %d", n, Max)
	}
	// Threads made while the list is walked inherit from a thread that
	// may not be set yet, and a thread still being made (its nice value
	// already copied from its maker) may not be listed yet. So walk
	// again, setting every thread whose nice value is not n (read, not
	// remembered: a thread id can be reused), until two passes a moment
	// apart find nothing to set.
	clean := 0
	for pass := 0; pass < 50 && clean < 2; pass++ {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("nice: list the process's threads: %w", err)
		}
		fresh := 0
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if cur, err := threadNice(os.Getpid(), tid); err != nil || cur == n {
				continue // ended meanwhile, or already set
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // the thread ended meanwhile
				}
				return fmt.Errorf("nice %d for thread %d: %w (lowering the nice value needs CAP_SYS_NICE)", n, tid, err)
			}
			fresh++
		}
		if fresh > 0 {
			clean = 0
			continue
		}
		clean++
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Nice returns the nice value of the calling thread.
func Nice() (int, error) {
	return threadNice(os.Getpid(), unix.Gettid())
}

// ThreadNices returns the nice value of every thread of process pid, by
// thread id (threads that end while they are read are left out).
func ThreadNices(pid int) (map[int]int, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if n, err := threadNice(pid, tid); err == nil {
			out[tid] = n
		}
	}
	return out, nil
}

// threadNice reads a thread's nice value from /proc (field 19 of stat).
func threadNice(pid, tid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	// After ')': state is field 3, so nice (field 19) is fields[16].
	if len(fields) < 17 {
		return 0, fmt.Errorf("thread %d: short stat line", tid)
	}
	return strconv.Atoi(fields[16])
}
