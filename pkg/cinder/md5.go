package cinder

import (
	"runtime"

	md5simd "github.com/minio/md5-simd"
)

// Every object's md5 is checked, and md5 is serial: an object's sum takes
// one CPU at crypto/md5's speed (about 900 MB/s on a 2020s x86 core), the
// costliest step of a restore. Where several objects are read at once,
// their md5s are computed side by side in the SIMD lanes of
// github.com/minio/md5-simd (16 with AVX-512, 8 with AVX2): one core then
// hashes 8 streams about twice as fast as crypto/md5 hashes one, 16 about
// 2.7 times, but 3 no faster and 1 at two thirds of the speed. So the
// lanes are used where there are enough objects to keep them filled, and
// more objects are read at once than there are CPUs.

// laneObjects is the fewest objects that are hashed in SIMD lanes.
const laneObjects = 4

// laneWorkers is how many objects are read at once where their md5s share
// a server's lanes (at least; one more than the CPUs where that is more):
// a server's 16 lanes, which took 0.3 CPU-s a GiB restored off 8 (zlib,
// 50 MiB objects, 2 CPUs); the buffers shrink to keep their sum.
const laneWorkers = 16

// serverLanes is how many workers share one md5-simd server: 16 lanes,
// one CPU's worth of hashing.
const serverLanes = 16

// md5s hands out the md5 hashers of a restore's or a verify's workers.
type md5s struct {
	servers []md5simd.Server // none: crypto/md5
}

// planMD5 returns how many of objects to read at once, and their md5
// hashers; close them once the workers are done.
func planMD5(objects int) (int, *md5s) {
	w := min(workers(), max(objects, 1))
	if objects < laneObjects {
		return w, &md5s{}
	}
	w = min(max(workers(), laneWorkers), objects)
	m := &md5s{}
	for range (w + serverLanes - 1) / serverLanes {
		m.servers = append(m.servers, md5simd.NewServer())
	}
	return w, m
}

// forWorker returns the md5 hasher maker of worker i.
func (m *md5s) forWorker(i int) func() md5simd.Hasher {
	if len(m.servers) == 0 {
		return md5simd.StdlibHasher
	}
	s := m.servers[i/serverLanes%len(m.servers)]
	return s.NewHash
}

func (m *md5s) close() {
	for _, s := range m.servers {
		s.Close()
	}
}

// workers is how many objects a restore or a verify reads at once where
// each is hashed alone: one per CPU (decompressing and hashing are the
// work), and one more to keep the CPUs busy while a worker waits on the
// repository or the target.
func workers() int { return max(runtime.GOMAXPROCS(0), 2) + 1 }
