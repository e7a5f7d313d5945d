package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
	"github.com/google/uuid"
)

// TestNBDTools: the volume manager's NBD exports work with the standard
// tools (libnbd's nbdinfo and nbdcopy, qemu-img): an attached volume shows
// its size and a base:allocation map matching what was written, copies out
// byte-identical to its file in the pool, and compares equal to it (and
// unequal to a modified copy); an attached snapshot is read-only, holds the
// point-in-time data, and the server itself refuses writes to it; unknown
// and withdrawn export names are refused at the handshake.
func TestNBDTools(t *testing.T) {
	nbdinfo := testenv.LookPath(t, "nbdinfo")
	nbdcopy := testenv.LookPath(t, "nbdcopy")
	qemuImg := testenv.LookPath(t, "qemu-img")
	s := Start(t, Options{NoGateway: true})
	ctx := context.Background()
	work := t.TempDir()

	const size = 32 << 20
	vol, att, dev := attached(t, s, size)
	ci := att.GetConnectionInfo()
	checkNBDConnection(t, ci, size, false)
	volURI := nbdURI(ci)
	exportAddr := net.JoinHostPort(ci.GetData().GetHost(), strconv.Itoa(int(ci.GetData().GetPort())))
	if exportAddr != s.NBDAddr {
		t.Fatalf("connection info points at %s, the NBD server listens on %s", exportAddr, s.NBDAddr)
	}

	// Data at known offsets, holes between (and before the last region).
	regions := []nbdExtent{
		{0, 1 << 20},
		{8 << 20, 1 << 20},
		{20 << 20, 64 << 10},
		{size - 256<<10, 256 << 10},
	}
	want := make([]byte, size)
	for _, r := range regions {
		buf := want[r.off : r.off+r.len]
		rand.Read(buf)
		buf[0] = 0xff // never all zero
		if _, err := dev.WriteAt(buf, r.off); err != nil {
			t.Fatalf("write %d+%d: %v", r.off, r.len, err)
		}
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	pool := volumeFile(s, vol.GetId())
	if got, err := os.ReadFile(pool); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the pool file does not hold what was written through NBD (err %v)", err)
	}

	// nbdinfo: size, read-write, base:allocation offered.
	info := nbdInfoJSON(t, nbdinfo, volURI)
	if info.Size != size || info.ReadOnly || !info.hasContext(nbd.MetaContextAllocation) || !info.CanTrim || !info.CanZero {
		t.Fatalf("nbdinfo --json on the volume export: %+v", info)
	}
	// nbdinfo --map: data exactly where it was written, holes (reading as
	// zero) elsewhere.
	wantMap := nbdtExpectedMap(regions, size)
	gotMap := nbdInfoMap(t, nbdinfo, volURI)
	if !nbdtEqualExtents(gotMap, wantMap) {
		t.Fatalf("nbdinfo --map on the volume export:\n got  %v\n want %v", gotMap, wantMap)
	}
	// nbdinfo --map in text form says the same.
	out, err := exec.Command(nbdinfo, "--map", volURI).CombinedOutput()
	if err != nil || strings.Count(string(out), "data") != len(regions) || !strings.Contains(string(out), "hole,zero") {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}

	// nbdcopy: the export copies out byte-identical to the pool file.
	copied := filepath.Join(work, "out.img")
	nbdtRun(t, nbdcopy, volURI, copied)
	nbdtSameFile(t, copied, pool)
	nbdtSameBytes(t, copied, want)

	// qemu-img: convert gives the same bytes; compare agrees with the pool
	// file and disagrees with a copy changed in data or in a hole.
	converted := filepath.Join(work, "out2.img")
	nbdtRun(t, qemuImg, "convert", "-f", "raw", "-O", "raw", volURI, converted)
	nbdtSameBytes(t, converted, want)
	nbdtRun(t, qemuImg, "compare", "-f", "raw", "-F", "raw", volURI, pool)
	for _, off := range []int64{8<<20 + 12345, 4 << 20} { // in data, in a hole
		modified := filepath.Join(work, fmt.Sprintf("modified-%d.img", off))
		b := bytes.Clone(want)
		b[off] ^= 0x5a
		if err := os.WriteFile(modified, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(qemuImg, "compare", "-f", "raw", "-F", "raw", volURI, modified).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "mismatch") {
			t.Fatalf("qemu-img compare against a copy changed at %d: %v (want exit 1, a mismatch)\n%s", off, err, out)
		}
	}

	// A snapshot, then the volume changes (in data and in a hole).
	sr, err := s.Volumes.CreateSnapshot(ctx, &volumev1.CreateSnapshotRequest{ProjectId: project,
		Snapshot: &volumev1.SnapshotInput{VolumeId: vol.GetId(), Force: true, Name: "nbdtools"}})
	if err != nil {
		t.Fatal(err)
	}
	snapID := sr.GetSnapshot().GetId()
	after := bytes.Clone(want)
	for _, r := range []nbdExtent{{0, 64 << 10}, {4 << 20, 1 << 20}} {
		buf := after[r.off : r.off+r.len]
		rand.Read(buf)
		buf[0] = 0xee
		if _, err := dev.WriteAt(buf, r.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	nbdtSameBytes(t, pool, after)

	// The snapshot's export is read-only and holds the data of its time.
	sa, err := volumev1.NewVolumeManagerInternalServiceClient(s.dial(s.VolumeManager.Addr)).AttachSnapshot(ctx, &volumev1.AttachSnapshotRequest{ProjectId: project, SnapshotId: snapID,
		Connector: &volumev1.Connector{Host: "checker"}})
	if err != nil {
		t.Fatal(err)
	}
	sci := sa.GetConnectionInfo()
	checkNBDConnection(t, sci, size, true)
	if sci.GetData().GetExportName() == ci.GetData().GetExportName() {
		t.Fatal("the snapshot's export has the volume's export name")
	}
	snapURI := nbdURI(sci)
	sinfo := nbdInfoJSON(t, nbdinfo, snapURI)
	if sinfo.Size != size || !sinfo.ReadOnly || sinfo.CanTrim || sinfo.CanZero || !sinfo.hasContext(nbd.MetaContextAllocation) {
		t.Fatalf("nbdinfo --json on the snapshot export: %+v", sinfo)
	}
	out, err = exec.Command(nbdinfo, "--is", "read-only", snapURI).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --is read-only on the snapshot export: %v %s", err, out)
	}
	if err := exec.Command(nbdinfo, "--is", "read-only", volURI).Run(); err == nil {
		t.Fatal("nbdinfo --is read-only says the volume's read-write export is read-only")
	}
	// The snapshot's map never shows a hole where it has data.
	smap := nbdInfoMap(t, nbdinfo, snapURI)
	if nbdtCovered(smap) != size {
		t.Fatalf("the snapshot's map covers %d bytes: %v", nbdtCovered(smap), smap)
	}
	for _, r := range regions {
		for _, e := range smap {
			if e.Hole && e.Offset < r.off+r.len && r.off < e.Offset+e.Length {
				t.Fatalf("the snapshot's map shows a hole %v over data %v", e, r)
			}
		}
	}
	snapCopy := filepath.Join(work, "snap.img")
	nbdtRun(t, nbdcopy, snapURI, snapCopy)
	nbdtSameBytes(t, snapCopy, want)
	nbdtRun(t, qemuImg, "compare", "-f", "raw", "-F", "raw", snapURI, copied)
	if out, err := exec.Command(qemuImg, "compare", "-f", "raw", "-F", "raw", snapURI, pool).CombinedOutput(); err == nil {
		t.Fatalf("qemu-img compare: the snapshot equals the changed volume\n%s", out)
	}

	// Writes to the snapshot are refused: by the server itself (a raw NBD
	// WRITE gets EPERM; the same request to the volume's export succeeds),
	// by the Go client and by nbdcopy.
	garbage := bytes.Repeat([]byte{0xab}, 4096)
	errno, ro, err := rawNBDWrite(exportAddr, sci.GetData().GetExportName(), 8<<20, garbage)
	if err != nil || errno != 1 || !ro {
		t.Fatalf("raw NBD WRITE to the snapshot export: errno %d, read-only flag %v, %v (want EPERM)", errno, ro, err)
	}
	errno, ro, err = rawNBDWrite(exportAddr, ci.GetData().GetExportName(), 30<<20, garbage)
	if err != nil || errno != 0 || ro {
		t.Fatalf("raw NBD WRITE to the volume export: errno %d, read-only flag %v, %v (want success)", errno, ro, err)
	}
	copy(after[30<<20:], garbage)
	sdev := dialExport(t, sci)
	if !sdev.ReadOnly() {
		t.Fatal("the Go client sees the snapshot export read-write")
	}
	if _, err := sdev.WriteAt(garbage, 0); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("Go client write to the snapshot export: %v", err)
	}
	src := filepath.Join(work, "garbage.img")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0xcd}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nbdcopy, src, snapURI).CombinedOutput(); err == nil {
		t.Fatalf("nbdcopy into the snapshot export succeeded\n%s", out)
	} else {
		t.Logf("nbdcopy into the snapshot export: %v: %s", err, bytes.TrimSpace(out))
	}
	sdev.Close()
	nbdtRun(t, nbdcopy, snapURI, snapCopy)
	nbdtSameBytes(t, snapCopy, want)
	nbdtSameBytes(t, pool, after)

	// Unknown export names are refused at the handshake.
	wrong := "nbd://" + exportAddr + "/" + uuid.NewString()
	if out, err := exec.Command(nbdinfo, wrong).CombinedOutput(); err == nil {
		t.Fatalf("nbdinfo on an unknown export name succeeded:\n%s", out)
	} else {
		t.Logf("nbdinfo on an unknown export name: %v: %s", err, bytes.TrimSpace(out))
	}
	if _, err := nbd.Dial(ctx, "tcp", exportAddr, nbd.DialOptions{ExportName: uuid.NewString()}); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("Go client on an unknown export name: %v", err)
	}
	if out, err := exec.Command(qemuImg, "info", wrong).CombinedOutput(); err == nil {
		t.Fatalf("qemu-img info on an unknown export name succeeded:\n%s", out)
	}

	// Detach and delete; the withdrawn names are refused, nothing is served.
	if _, err := volumev1.NewVolumeManagerInternalServiceClient(s.dial(s.VolumeManager.Addr)).DetachSnapshot(ctx, &volumev1.DetachSnapshotRequest{ProjectId: project, SnapshotId: snapID}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nbdinfo, snapURI).CombinedOutput(); err == nil {
		t.Fatalf("nbdinfo on a detached snapshot's export succeeded:\n%s", out)
	}
	if _, err := s.Volumes.DeleteSnapshot(ctx, &volumev1.DeleteSnapshotRequest{ProjectId: project, SnapshotId: snapID}); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if _, err := s.Volumes.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: project, AttachmentId: att.GetId()}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nbdinfo, volURI).CombinedOutput(); err == nil {
		t.Fatalf("nbdinfo on a detached volume's export succeeded:\n%s", out)
	}
	if n := s.Metric(s.MetricsAddr, "blockvault_exports"); n != 0 {
		t.Fatalf("%v exports served after the detaches", n)
	}
	if _, err := s.Volumes.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: project, VolumeId: vol.GetId()}); err != nil {
		t.Fatal(err)
	}
}

// checkNBDConnection asserts the shape of an NBD connection info.
func checkNBDConnection(t *testing.T, ci *volumev1.ConnectionInfo, size int64, readOnly bool) {
	t.Helper()
	d := ci.GetData()
	if ci.GetDriverVolumeType() != "nbd" || d.GetHost() == "" || d.GetPort() <= 0 || d.GetExportName() == "" ||
		d.GetReadOnly() != readOnly || d.GetSizeBytes() != size || d.GetDevicePath() != "" {
		t.Fatalf("connection info %v, want an NBD export of %d bytes, read-only %v", ci, size, readOnly)
	}
	// The harness serves plain TCP on loopback; a TLS export would need
	// nbds:// and certificates.
	if d.GetTls() {
		t.Fatalf("connection info says TLS, the test stack serves plain NBD: %v", ci)
	}
}

// nbdURI is the NBD URI (as libnbd and qemu spell it) of an export.
func nbdURI(ci *volumev1.ConnectionInfo) string {
	d := ci.GetData()
	scheme := "nbd"
	if d.GetTls() {
		scheme = "nbds"
	}
	return scheme + "://" + net.JoinHostPort(d.GetHost(), strconv.Itoa(int(d.GetPort()))) + "/" + d.GetExportName()
}

func nbdtRun(t *testing.T, prog string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Patience)
	defer cancel()
	if out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(prog), strings.Join(args, " "), err, out)
	}
}

func nbdtSameBytes(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s has %d bytes, want %d", filepath.Base(path), len(got), len(want))
	}
	if i := nbdtFirstDiff(got, want); i >= 0 {
		t.Fatalf("%s differs from the expected data at byte %d", filepath.Base(path), i)
	}
}

func nbdtSameFile(t *testing.T, a, b string) {
	t.Helper()
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	nbdtSameBytes(t, a, bb)
}

func nbdtFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// nbdInfo is the part of `nbdinfo --json` the test reads.
type nbdInfo struct {
	Name     string   `json:"export-name"`
	Size     int64    `json:"export-size"`
	ReadOnly bool     `json:"is_read_only"`
	CanTrim  bool     `json:"can_trim"`
	CanZero  bool     `json:"can_zero"`
	Contexts []string `json:"contexts"`
}

func (i nbdInfo) hasContext(name string) bool {
	for _, c := range i.Contexts {
		if c == name {
			return true
		}
	}
	return false
}

func nbdInfoJSON(t *testing.T, nbdinfo, uri string) nbdInfo {
	t.Helper()
	out, err := exec.Command(nbdinfo, "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo --json %s: %v %s", uri, err, nbdtStderr(err))
	}
	var doc struct {
		Protocol   string    `json:"protocol"`
		TLS        bool      `json:"TLS"`
		Structured bool      `json:"structured"`
		Exports    []nbdInfo `json:"exports"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if doc.Protocol != "newstyle-fixed" || doc.TLS || !doc.Structured || len(doc.Exports) != 1 {
		t.Fatalf("nbdinfo --json: protocol %q, TLS %v, structured %v, %d exports\n%s", doc.Protocol, doc.TLS, doc.Structured, len(doc.Exports), out)
	}
	return doc.Exports[0]
}

// nbdExtent is a byte range.
type nbdExtent struct{ off, len int64 }

// nbdMapEntry is one extent of `nbdinfo --map`.
type nbdMapEntry struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	Type   int   `json:"type"`
	Hole   bool  `json:"-"`
}

func (e nbdMapEntry) String() string {
	kind := "data"
	if e.Hole {
		kind = "hole"
	}
	return fmt.Sprintf("%d+%d %s(%d)", e.Offset, e.Length, kind, e.Type)
}

// nbdInfoMap returns the base:allocation map, adjacent extents of the same
// type merged (nbdinfo may split them at request boundaries). A hole must
// also read as zero.
func nbdInfoMap(t *testing.T, nbdinfo, uri string) []nbdMapEntry {
	t.Helper()
	out, err := exec.Command(nbdinfo, "--map", "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo --map --json %s: %v %s", uri, err, nbdtStderr(err))
	}
	var raw []nbdMapEntry
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	var m []nbdMapEntry
	var next int64
	for _, e := range raw {
		if e.Offset != next {
			t.Fatalf("nbdinfo --map: extent at %d, want %d\n%s", e.Offset, next, out)
		}
		next = e.Offset + e.Length
		e.Hole = e.Type&1 != 0
		if e.Hole && e.Type&2 == 0 {
			t.Fatalf("nbdinfo --map: a hole that does not read as zero: %v", e)
		}
		if n := len(m); n > 0 && m[n-1].Type == e.Type {
			m[n-1].Length += e.Length
			continue
		}
		m = append(m, e)
	}
	return m
}

func nbdtStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// nbdtExpectedMap is data over regions (sorted, apart) and holes elsewhere.
func nbdtExpectedMap(regions []nbdExtent, size int64) []nbdMapEntry {
	var m []nbdMapEntry
	var pos int64
	for _, r := range regions {
		if r.off > pos {
			m = append(m, nbdMapEntry{Offset: pos, Length: r.off - pos, Type: 3, Hole: true})
		}
		m = append(m, nbdMapEntry{Offset: r.off, Length: r.len})
		pos = r.off + r.len
	}
	if pos < size {
		m = append(m, nbdMapEntry{Offset: pos, Length: size - pos, Type: 3, Hole: true})
	}
	return m
}

func nbdtEqualExtents(a, b []nbdMapEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Offset != b[i].Offset || a[i].Length != b[i].Length || a[i].Hole != b[i].Hole {
			return false
		}
	}
	return true
}

func nbdtCovered(m []nbdMapEntry) int64 {
	var n int64
	for _, e := range m {
		n += e.Length
	}
	return n
}

// NBD wire constants for rawNBDWrite (doc/proto.md of the NBD project).
const (
	rawNBDMagic      = 0x4e42444d41474943
	rawOptMagic      = 0x49484156454F5054
	rawOptReplyMagic = 0x0003e889045565a9
	rawRequestMagic  = 0x25609513
	rawSimpleReply   = 0x67446698
	rawOptGo         = 7
	rawRepAck        = 1
	rawRepInfo       = 3
	rawRepFlagError  = 1 << 31
	rawCmdWrite      = 1
	rawCmdDisc       = 2
	rawTFlagReadOnly = 1 << 1
	rawFixedNewstyle = 1 << 0
	rawNoZeroes      = 1 << 1
)

// rawNBDWrite speaks the protocol by hand, so nothing on the client side
// keeps a WRITE from reaching the server even on a read-only export: fixed
// newstyle handshake, NBD_OPT_GO for export, one NBD_CMD_WRITE (simple
// reply), NBD_CMD_DISC. It returns the errno the server answered and
// whether it advertised the export read-only.
func rawNBDWrite(addr, export string, off uint64, data []byte) (errno uint32, readOnly bool, err error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, false, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	be := binary.BigEndian

	var hs [18]byte
	if _, err := io.ReadFull(nc, hs[:]); err != nil {
		return 0, false, fmt.Errorf("greeting: %w", err)
	}
	if be.Uint64(hs[0:]) != rawNBDMagic || be.Uint64(hs[8:]) != rawOptMagic || be.Uint16(hs[16:])&rawFixedNewstyle == 0 {
		return 0, false, fmt.Errorf("not a fixed-newstyle NBD server: %x", hs)
	}
	clientFlags := uint32(rawFixedNewstyle)
	if be.Uint16(hs[16:])&rawNoZeroes != 0 {
		clientFlags |= rawNoZeroes
	}
	msg := be.AppendUint32(nil, clientFlags)
	payload := be.AppendUint32(nil, uint32(len(export)))
	payload = append(payload, export...)
	payload = be.AppendUint16(payload, 0) // no information requests
	msg = be.AppendUint64(msg, rawOptMagic)
	msg = be.AppendUint32(msg, rawOptGo)
	msg = be.AppendUint32(msg, uint32(len(payload)))
	msg = append(msg, payload...)
	if _, err := nc.Write(msg); err != nil {
		return 0, false, err
	}
	sawInfo := false
	for {
		var rh [20]byte
		if _, err := io.ReadFull(nc, rh[:]); err != nil {
			return 0, false, fmt.Errorf("option reply: %w", err)
		}
		typ, n := be.Uint32(rh[12:]), be.Uint32(rh[16:])
		if be.Uint64(rh[0:]) != rawOptReplyMagic || be.Uint32(rh[8:]) != rawOptGo || n > 64<<10 {
			return 0, false, fmt.Errorf("bad option reply %x", rh)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(nc, body); err != nil {
			return 0, false, err
		}
		if typ&rawRepFlagError != 0 {
			return 0, false, fmt.Errorf("NBD_OPT_GO refused (%#x): %s", typ, body)
		}
		if typ == rawRepInfo && len(body) >= 12 && be.Uint16(body) == 0 { // NBD_INFO_EXPORT
			sawInfo = true
			readOnly = be.Uint16(body[10:])&rawTFlagReadOnly != 0
		}
		if typ == rawRepAck {
			break
		}
	}
	if !sawInfo {
		return 0, false, errors.New("NBD_OPT_GO: no NBD_INFO_EXPORT")
	}
	req := be.AppendUint32(nil, rawRequestMagic)
	req = be.AppendUint16(req, 0)
	req = be.AppendUint16(req, rawCmdWrite)
	req = be.AppendUint64(req, 0x7e57)
	req = be.AppendUint64(req, off)
	req = be.AppendUint32(req, uint32(len(data)))
	req = append(req, data...)
	if _, err := nc.Write(req); err != nil {
		return 0, readOnly, err
	}
	var rep [16]byte
	if _, err := io.ReadFull(nc, rep[:]); err != nil {
		return 0, readOnly, fmt.Errorf("write reply: %w", err)
	}
	if be.Uint32(rep[0:]) != rawSimpleReply || be.Uint64(rep[8:]) != 0x7e57 {
		return 0, readOnly, fmt.Errorf("bad write reply %x", rep)
	}
	disc := be.AppendUint32(nil, rawRequestMagic)
	disc = be.AppendUint16(disc, 0)
	disc = be.AppendUint16(disc, rawCmdDisc)
	disc = append(disc, make([]byte, 20)...)
	nc.Write(disc)
	return be.Uint32(rep[4:]), readOnly, nil
}
