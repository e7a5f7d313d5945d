package engine

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzDecoders feeds arbitrary bytes to what reads the repository: the
// container config (openConfig, with and without a key), stored objects
// (openObject) and manifests (decodeManifest). Whatever a damaged or
// hostile repository holds, they return an error or a checked value, never
// panic; a manifest they accept has a chunk list consistent with its size.
func FuzzDecoders(f *testing.F) {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(8<<20))
	repoKey := []byte("0123456789abcdef0123456789abcdef")
	cfgPlain, kPlain, _ := newConfig(nil, DefaultChunkSize)
	cfgEnc, kEnc, _ := newConfig(repoKey, DefaultChunkSize)
	for _, k := range []*keys{kPlain, kEnc} {
		m := &Manifest{Version: FormatVersion, BackupID: "00000000-0000-4000-8000-000000000001", VolumeID: "00000000-0000-4000-8000-000000000002",
			Size: 2 * DefaultChunkSize, ChunkSize: DefaultChunkSize, Chunks: []string{"", ""}}
		if obj, err := k.encodeManifest(enc, m); err == nil {
			f.Add(obj)
		}
		id := k.chunkID(k.hasher(), []byte("some chunk data"))
		m.Pieces = map[int][]Piece{1: {{Length: 4096}, {Length: DefaultChunkSize - 8192, ID: id, Offset: 4096}, {Length: 4096, ID: id}}}
		if obj, err := k.encodeManifest(enc, m); err == nil {
			f.Add(obj)
		}
		obj, _ := k.sealObject(enc, nil, nil, []byte("some chunk data"))
		f.Add(obj)
	}
	for _, c := range []*config{cfgPlain, cfgEnc} {
		if b, err := json.Marshal(c); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("{}"))
	f.Add([]byte{0, 1, 2, 3})

	f.Fuzz(func(t *testing.T, data []byte) {
		openConfig(data, nil)
		openConfig(data, repoKey)
		for _, k := range []*keys{kPlain, kEnc} {
			k.openObject(dec, bytes.Clone(data), nil)
			m, err := k.decodeManifest(dec, data)
			if err == nil {
				n := (m.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize)
				if m.ChunkSize <= 0 || int64(len(m.Chunks)) != n {
					t.Fatalf("accepted a manifest of size %d, chunk size %d with %d chunks", m.Size, m.ChunkSize, len(m.Chunks))
				}
			}
		}
	})
}
