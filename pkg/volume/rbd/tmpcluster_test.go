//go:build rbd && cgo

package rbd_test

// Temporary: uses a cluster started by hand (CEPH_DIR=/tmp/ceph-dev bash
// /work/shared/ceph/start-ceph.sh) until testenv.StartCeph lands.

import (
	"bytes"
	"fmt"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

type cephCluster struct{ Dir, Conf, Pool string }

func startCeph(t testing.TB) *cephCluster {
	return &cephCluster{Dir: "/tmp/ceph-dev", Conf: "/tmp/ceph-dev/ceph.conf", Pool: "rbd"}
}

func (c *cephCluster) run(t testing.TB, prog string, args ...string) string {
	t.Helper()
	cmd := exec.Command(prog, append([]string{"--conf", c.Conf}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", prog, args, err, stderr.Bytes())
	}
	return string(out)
}

func (c *cephCluster) RBD(t testing.TB, args ...string) string  { return c.run(t, "rbd", args...) }
func (c *cephCluster) Ceph(t testing.TB, args ...string) string { return c.run(t, "ceph", args...) }

var nsCounter atomic.Int64

func (c *cephCluster) NewNamespace(t testing.TB) string {
	ns := fmt.Sprintf("t%d-%d", nsCounter.Add(1), time.Now().UnixNano()%1e6)
	c.RBD(t, "namespace", "create", c.Pool+"/"+ns)
	return ns
}
