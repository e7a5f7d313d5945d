package nbd

import (
	"math/bits"
	"sync"
)

// Request and reply payloads come from pools, one per power-of-two size,
// so a busy export neither allocates nor zeroes a fresh buffer for every
// READ and WRITE (zeroing alone took a quarter of the CPU time of 4 MiB
// writes through the server).
var payloadPools [payloadClasses]sync.Pool

// payloadClasses is enough classes for maxRequest (32 MiB = 1<<25); a
// larger buffer is simply not pooled.
const payloadClasses = 26

// getPayload returns a buffer of n bytes (n <= maxRequest) whose contents
// are undefined; give it back with putPayload.
func getPayload(n int) *[]byte {
	class := bits.Len(uint(max(n, 1) - 1))
	if class >= len(payloadPools) {
		b := make([]byte, n)
		return &b
	}
	if p, ok := payloadPools[class].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<class)
	return &b
}

// putPayload returns a buffer from getPayload to its pool.
func putPayload(p *[]byte) {
	class := bits.Len(uint(cap(*p) - 1))
	if class >= len(payloadPools) || cap(*p) != 1<<class {
		return
	}
	payloadPools[class].Put(p)
}
