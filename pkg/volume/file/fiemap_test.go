package file

import (
	"errors"
	"reflect"
	"testing"
	"unsafe"

	"github.com/blockvault/blockvault/pkg/volume"
)

func TestFiemapLayout(t *testing.T) {
	// struct fiemap is 32 bytes, struct fiemap_extent 56 (linux/fiemap.h).
	var req fiemapRequest
	if s, o := unsafe.Sizeof(fiemapExtent{}), unsafe.Offsetof(req.extents); s != 56 || o != 32 {
		t.Fatalf("fiemap_extent is %d bytes and the extents start at %d, want 56 and 32", s, o)
	}
	if o := unsafe.Offsetof(fiemapExtent{}.flags); o != 40 {
		t.Fatalf("fe_flags at %d, want 40", o)
	}
}

func TestDiffExtents(t *testing.T) {
	const k = 4096
	data := func(logical, physical, length int64) mapping {
		return mapping{logical: logical, physical: physical, length: length}
	}
	flagged := func(m mapping, flags uint32) mapping { m.flags = flags; return m }
	for _, c := range []struct {
		name string
		a, b []mapping
		size int64
		want []volume.Range
	}{
		{name: "holes in both", size: 16 * k},
		{name: "same blocks", a: []mapping{data(0, 100*k, 8*k)}, b: []mapping{data(0, 100*k, 8*k)}, size: 16 * k},
		{name: "same blocks, extents split differently",
			a: []mapping{data(0, 100*k, 8*k)}, b: []mapping{data(0, 100*k, 3*k), data(3*k, 103*k, 5*k)}, size: 8 * k},
		{name: "rewritten in the middle",
			a: []mapping{data(0, 100*k, 8*k)}, b: []mapping{data(0, 100*k, 2*k), data(2*k, 500*k, k), data(3*k, 103*k, 5*k)}, size: 8 * k,
			want: []volume.Range{{Offset: 2 * k, Length: k}}},
		{name: "same physical, other offset",
			a: []mapping{data(0, 100*k, k)}, b: []mapping{data(k, 100*k, k)}, size: 4 * k,
			want: []volume.Range{{Offset: 0, Length: 2 * k}}},
		{name: "data and hole", a: []mapping{data(4*k, 100*k, k)}, size: 8 * k,
			want: []volume.Range{{Offset: 4 * k, Length: k}}},
		{name: "unwritten reads zeros like a hole",
			a: []mapping{flagged(data(0, 100*k, 4*k), fiemapExtentUnwritten)}, b: []mapping{flagged(data(k, 300*k, k), fiemapExtentUnwritten)}, size: 4 * k},
		{name: "unwritten and written at the same place",
			a: []mapping{flagged(data(0, 100*k, 2*k), fiemapExtentUnwritten)}, b: []mapping{data(0, 100*k, 2*k)}, size: 2 * k,
			want: []volume.Range{{Offset: 0, Length: 2 * k}}},
		{name: "shared and last flags do not matter",
			a: []mapping{flagged(data(0, 100*k, 2*k), fiemapExtentShared|fiemapExtentLast)}, b: []mapping{data(0, 100*k, 2*k)}, size: 2 * k},
		{name: "delalloc is never equal",
			a: []mapping{flagged(data(0, 0, 2*k), 0x4)}, b: []mapping{flagged(data(0, 0, 2*k), 0x4)}, size: 2 * k,
			want: []volume.Range{{Offset: 0, Length: 2 * k}}},
		{name: "inline data is never equal",
			a: []mapping{flagged(data(0, 0, 100), 0x200|0x100)}, b: []mapping{flagged(data(0, 0, 100), 0x200|0x100)}, size: 100,
			want: []volume.Range{{Offset: 0, Length: 100}}},
		{name: "encoded is never equal",
			a: []mapping{flagged(data(0, 100*k, k), 0x8)}, b: []mapping{flagged(data(0, 100*k, k), 0x8)}, size: k,
			want: []volume.Range{{Offset: 0, Length: k}}},
		{name: "overlapping extents: all changed",
			a: []mapping{data(0, 100*k, 2*k), data(k, 100*k, 2*k)}, b: []mapping{data(0, 100*k, 3*k)}, size: 4 * k,
			want: []volume.Range{{Offset: 0, Length: 4 * k}}},
		{name: "extents past size are clipped",
			a: []mapping{data(0, 100*k, 2*k), data(2*k, 9*k, 8*k)}, b: []mapping{data(0, 100*k, 2*k)}, size: 3 * k,
			want: []volume.Range{{Offset: 2 * k, Length: k}}},
		{name: "adjacent changes merge",
			a: []mapping{data(0, 100*k, k), data(k, 300*k, k)}, b: []mapping{data(0, 200*k, k), data(k, 400*k, k)}, size: 2 * k,
			want: []volume.Range{{Offset: 0, Length: 2 * k}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, swap := range []bool{false, true} {
				a, b := c.a, c.b
				if swap {
					a, b = b, a
				}
				got, err := diffExtents(sliceExtents(a), sliceExtents(b), c.size)
				if err != nil || !reflect.DeepEqual(got, c.want) {
					t.Errorf("swapped %v: got %v, %v, want %v", swap, got, err, c.want)
				}
			}
		})
	}
}

// sliceExtents yields the extents of ms.
func sliceExtents(ms []mapping) extentSource {
	return func() (mapping, bool, error) {
		if len(ms) == 0 {
			return mapping{}, false, nil
		}
		m := ms[0]
		ms = ms[1:]
		return m, true, nil
	}
}

func TestDiffExtentsError(t *testing.T) {
	boom := errors.New("boom")
	failing := func() (mapping, bool, error) { return mapping{}, false, boom }
	if _, err := diffExtents(sliceExtents(nil), failing, 4096); !errors.Is(err, boom) {
		t.Fatalf("a failing extent map: %v", err)
	}
}

func TestNormalizeRanges(t *testing.T) {
	for _, c := range []struct {
		name        string
		in          []volume.Range
		align, size int64
		want        []volume.Range
	}{
		{name: "empty", align: 4096, size: 1 << 20},
		{name: "rounded out", in: []volume.Range{{Offset: 5000, Length: 10}}, align: 4096, size: 1 << 20,
			want: []volume.Range{{Offset: 4096, Length: 4096}}},
		{name: "sorted and merged", in: []volume.Range{{Offset: 8192, Length: 100}, {Offset: 0, Length: 4096}, {Offset: 4000, Length: 200}},
			align: 4096, size: 1 << 20, want: []volume.Range{{Offset: 0, Length: 12288}}},
		{name: "clipped to size", in: []volume.Range{{Offset: 9000, Length: 100}}, align: 8192, size: 10240,
			want: []volume.Range{{Offset: 8192, Length: 2048}}},
		{name: "contained", in: []volume.Range{{Offset: 0, Length: 1 << 16}, {Offset: 4096, Length: 4096}}, align: 4096, size: 1 << 20,
			want: []volume.Range{{Offset: 0, Length: 1 << 16}}},
		{name: "empty ranges dropped", in: []volume.Range{{Offset: 4096, Length: 0}}, align: 4096, size: 1 << 20},
	} {
		if got := normalizeRanges(c.in, c.align, c.size); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
