package e2etest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// diskStat is the kernel's I/O counters of one block device
// (/sys/dev/block/M:m/stat, Documentation/block/stat.rst).
type diskStat struct {
	read, written int64         // bytes
	busy          time.Duration // time with I/O in flight (io_ticks)
}

// diskOf returns the stat file of the block device holding dir, or "" when
// dir is on no block device (tmpfs, overlay).
func diskOf(dir string) string {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return ""
	}
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(st.Dev), unix.Minor(st.Dev))
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// readDiskStat reads the counters at path (a diskOf result); ok is false
// when there are none.
func readDiskStat(path string) (d diskStat, ok bool) {
	if path == "" {
		return d, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return d, false
	}
	f := strings.Fields(string(data))
	if len(f) < 10 {
		return d, false
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	// Fields: reads, merged, sectors read, ms reading, writes, merged,
	// sectors written, ms writing, in flight, io_ticks (ms), ...
	return diskStat{read: n(2) * 512, written: n(6) * 512, busy: time.Duration(n(9)) * time.Millisecond}, true
}

// sub is d - o.
func (d diskStat) sub(o diskStat) diskStat {
	return diskStat{read: d.read - o.read, written: d.written - o.written, busy: d.busy - o.busy}
}
