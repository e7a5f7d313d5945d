package nbd

import "testing"

func TestPayloadPools(t *testing.T) {
	for _, n := range []int{0, 1, 512, 4096, 4097, 1 << 20, 4<<20 + 1, maxRequest, maxRequest + 1} {
		p := getPayload(n)
		if len(*p) != n {
			t.Fatalf("getPayload(%d) has %d bytes", n, len(*p))
		}
		if cap(*p) < n {
			t.Fatalf("getPayload(%d) has capacity %d", n, cap(*p))
		}
		putPayload(p)
		q := getPayload(n)
		if len(*q) != n {
			t.Fatalf("getPayload(%d) after a put has %d bytes", n, len(*q))
		}
		putPayload(q)
	}
}
