// Package engine is the backup engine and its repository format (see
// docs/repository-format.md): a volume is cut into fixed-size chunks aligned
// to the volume; each chunk that is not all zeros is stored once under its
// keyed BLAKE3 hash, zstd-compressed (raw when that is smaller) and, when
// the repository has a key, AES-256-GCM encrypted; one manifest per backup
// lists the chunks. Backups, restores, verification, deletion with garbage
// collection, and export/import of backup records work from the repository
// alone, without any database.
package engine

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// FormatVersion is the repository format this package writes and reads.
const FormatVersion = 1

// Manifest versions. A manifest is version 1 unless it has pieces (an
// incremental backup that stored only the changed parts of some chunks):
// then it is version 2, which older builds refuse by name instead of
// misreading.
const (
	manifestV1       = 1
	manifestV2Pieces = 2
)

// DefaultChunkSize is the chunk size of new containers (see the format
// document for the measurement behind it).
const DefaultChunkSize = 4 << 20

// MinChunkSize and MaxChunkSize bound the chunk size of new containers.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// Errors.
var (
	// ErrWrongKey: the repository key does not open this container.
	ErrWrongKey = errors.New("engine: wrong or missing repository key")
	// ErrCorrupt: an object failed its checks (hash, MAC, decoding).
	ErrCorrupt = errors.New("engine: corrupt object")
	// ErrNoBackup: no manifest of that backup.
	ErrNoBackup = errors.New("engine: no such backup in the repository")
)

// config is a container's "config" object.
type config struct {
	Version    int    `json:"version"`
	ChunkSize  int    `json:"chunk_size"`
	Hash       string `json:"hash"`
	Compressor string `json:"compression"`
	Encryption string `json:"encryption"`
	// Unencrypted containers keep the hash key in the clear (it only makes
	// chunk ids differ between repositories).
	HashKey []byte `json:"hash_key,omitempty"`
	// Encrypted containers keep a salt and the keys wrapped by a key
	// derived from the repository key.
	Salt        []byte    `json:"salt,omitempty"`
	WrappedKeys []byte    `json:"wrapped_keys,omitempty"`
	Created     time.Time `json:"created"`
}

// keys are a container's secrets.
type keys struct {
	hash []byte      // 32 bytes: BLAKE3 key of chunk ids
	aead cipher.AEAD // nil when unencrypted
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func kek(repoKey, salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, repoKey, salt, "blockvault repository key v1", 32)
	if err != nil {
		return nil, err
	}
	return newAEAD(k)
}

// newConfig makes a container config and its keys.
func newConfig(repoKey []byte, chunkSize int) (*config, *keys, error) {
	hashKey := make([]byte, 32)
	rand.Read(hashKey)
	c := &config{Version: FormatVersion, ChunkSize: chunkSize, Hash: "blake3-keyed-256", Compressor: "zstd", Encryption: "none", Created: time.Now().UTC()}
	k := &keys{hash: hashKey}
	if repoKey == nil {
		c.HashKey = hashKey
		return c, k, nil
	}
	dataKey := make([]byte, 32)
	rand.Read(dataKey)
	c.Encryption = "aes-256-gcm"
	c.Salt = make([]byte, 16)
	rand.Read(c.Salt)
	w, err := kek(repoKey, c.Salt)
	if err != nil {
		return nil, nil, err
	}
	nonce := make([]byte, w.NonceSize())
	rand.Read(nonce)
	c.WrappedKeys = w.Seal(nonce, nonce, append(append([]byte{}, hashKey...), dataKey...), []byte("keys"))
	if k.aead, err = newAEAD(dataKey); err != nil {
		return nil, nil, err
	}
	return c, k, nil
}

// openConfig parses a config and unlocks its keys with repoKey.
func openConfig(data, repoKey []byte) (*config, *keys, error) {
	var c config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: config: %v", ErrCorrupt, err)
	}
	if c.Version != FormatVersion {
		return nil, nil, fmt.Errorf("engine: repository format version %d, this build reads %d", c.Version, FormatVersion)
	}
	if c.ChunkSize < 64<<10 || c.ChunkSize > 64<<20 {
		return nil, nil, fmt.Errorf("%w: chunk size %d", ErrCorrupt, c.ChunkSize)
	}
	switch c.Encryption {
	case "none":
		if repoKey != nil {
			return nil, nil, fmt.Errorf("%w: the container is not encrypted but a key was given", ErrWrongKey)
		}
		if len(c.HashKey) != 32 {
			return nil, nil, fmt.Errorf("%w: config hash key", ErrCorrupt)
		}
		return &c, &keys{hash: c.HashKey}, nil
	case "aes-256-gcm":
		if repoKey == nil {
			return nil, nil, fmt.Errorf("%w: the container is encrypted and no key was given", ErrWrongKey)
		}
		w, err := kek(repoKey, c.Salt)
		if err != nil {
			return nil, nil, err
		}
		if len(c.WrappedKeys) < w.NonceSize() {
			return nil, nil, fmt.Errorf("%w: wrapped keys", ErrCorrupt)
		}
		plain, err := w.Open(nil, c.WrappedKeys[:w.NonceSize()], c.WrappedKeys[w.NonceSize():], []byte("keys"))
		if err != nil || len(plain) != 64 {
			return nil, nil, ErrWrongKey
		}
		aead, err := newAEAD(plain[32:])
		if err != nil {
			return nil, nil, err
		}
		return &c, &keys{hash: plain[:32], aead: aead}, nil
	}
	return nil, nil, fmt.Errorf("engine: unknown encryption %q", c.Encryption)
}

// chunkID is the keyed BLAKE3 hash of a chunk's plaintext, in hex.
func (k *keys) chunkID(h *blake3.Hasher, data []byte) string {
	h.Reset()
	h.Write(data)
	var sum [32]byte
	h.Sum(sum[:0])
	return hex.EncodeToString(sum[:])
}

func (k *keys) hasher() *blake3.Hasher {
	h, err := blake3.NewKeyed(k.hash)
	if err != nil {
		panic(err) // the key is always 32 bytes
	}
	return h
}

// Object header flags.
const (
	objVersion    = 1
	flagZstd      = 1 << 0
	flagEncrypted = 1 << 1
)

// sealObject encodes a chunk or manifest: [version, flags] + payload, the
// payload zstd-compressed when that is smaller, then encrypted when the
// container has a key. The compression goes into scratch's storage and the
// object into objBuf's when they are large enough (the returned slices
// are the buffers to pass next time), so a worker that keeps them
// allocates nothing chunk after chunk. plain must not overlap either.
func (k *keys) sealObject(enc *zstd.Encoder, scratch, objBuf, plain []byte) (obj, scratchOut []byte) {
	hdr := [2]byte{objVersion, 0}
	compressed := enc.EncodeAll(plain, scratch[:0])
	body := plain
	if len(compressed) < len(plain) {
		hdr[1] |= flagZstd
		body = compressed
	}
	if k.aead == nil {
		obj = append(append(objBuf[:0], hdr[:]...), body...)
		return obj, compressed
	}
	hdr[1] |= flagEncrypted
	ns := k.aead.NonceSize()
	if need := 2 + ns + len(body) + k.aead.Overhead(); cap(objBuf) < need {
		objBuf = make([]byte, 0, need)
	}
	obj = objBuf[:2+ns]
	copy(obj, hdr[:])
	rand.Read(obj[2 : 2+ns])
	obj = k.aead.Seal(obj, obj[2:2+ns], body, hdr[:])
	return obj, compressed
}

// openObject decodes what sealObject made. It decrypts in place in obj and
// decompresses into dst's storage (appending to dst[:0]) when it is large
// enough, so the result may share storage with either.
func (k *keys) openObject(dec *zstd.Decoder, obj, dst []byte) ([]byte, error) {
	if len(obj) < 2 || obj[0] != objVersion {
		return nil, fmt.Errorf("%w: bad object header", ErrCorrupt)
	}
	flags := obj[1]
	body := obj[2:]
	if flags&flagEncrypted != 0 {
		if k.aead == nil {
			return nil, fmt.Errorf("%w: encrypted object in an unencrypted container", ErrCorrupt)
		}
		ns := k.aead.NonceSize()
		if len(body) < ns {
			return nil, fmt.Errorf("%w: short object", ErrCorrupt)
		}
		p, err := k.aead.Open(body[ns:ns], body[:ns], body[ns:], obj[:2])
		if err != nil {
			return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
		}
		body = p
	} else if k.aead != nil {
		return nil, fmt.Errorf("%w: unencrypted object in an encrypted container", ErrCorrupt)
	}
	if flags&flagZstd != 0 {
		p, err := dec.DecodeAll(body, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		body = p
	}
	return body, nil
}

// Manifest describes one backup: enough to restore it from the repository
// alone.
type Manifest struct {
	Version    int       `json:"version"`
	BackupID   string    `json:"backup_id"`
	VolumeID   string    `json:"volume_id"`
	ParentID   string    `json:"parent_id,omitempty"`
	Size       int64     `json:"size"`
	ChunkSize  int       `json:"chunk_size"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	DataChunks int64     `json:"data_chunks"`
	NewChunks  int64     `json:"new_chunks"`
	NewBytes   int64     `json:"new_bytes"`
	// Chunks lists the chunk id of each chunk of the volume, in order; ""
	// is an all-zero chunk, never stored, or a chunk made of pieces.
	Chunks []string `json:"chunks"`
	// Pieces, by chunk index, describes the chunks an incremental backup
	// stored in part: the changed ranges as objects of their own, the rest
	// as ranges of the parent's objects. Chunks[i] is "" for them.
	Pieces map[int][]Piece `json:"pieces,omitempty"`
	// MAC is the keyed BLAKE3 of the manifest with MAC empty.
	MAC string `json:"mac"`
}

// Piece is a range of a chunk: Length bytes of the plaintext of object ID
// from Offset on, or Length zero bytes when ID is "". The pieces of a
// chunk follow each other and cover it.
type Piece struct {
	Length int64  `json:"length"`
	ID     string `json:"id,omitempty"`
	Offset int64  `json:"offset,omitempty"`
}

// chunkLength is the length of chunk i of a volume of size bytes.
func chunkLength(size, cs int64, i int) int64 { return min(cs, size-int64(i)*cs) }

// eachID calls fn with every object id the manifest references (an id
// may come more than once).
func (m *Manifest) eachID(fn func(id string)) {
	for _, id := range m.Chunks {
		if id != "" {
			fn(id)
		}
	}
	for _, ps := range m.Pieces {
		for _, p := range ps {
			if p.ID != "" {
				fn(p.ID)
			}
		}
	}
}

// hasData says whether chunk i is stored (not all zeros).
func (m *Manifest) hasData(i int) bool {
	if m.Chunks[i] != "" {
		return true
	}
	for _, p := range m.Pieces[i] {
		if p.ID != "" {
			return true
		}
	}
	return false
}

// checkPieces checks that each split chunk's pieces cover it exactly.
func (m *Manifest) checkPieces() error {
	n := len(m.Chunks)
	cs := int64(m.ChunkSize)
	for i, ps := range m.Pieces {
		if i < 0 || i >= n || m.Chunks[i] != "" || len(ps) == 0 {
			return fmt.Errorf("%w: manifest pieces of chunk %d", ErrCorrupt, i)
		}
		var sum int64
		for _, p := range ps {
			if p.Length <= 0 || p.Length > cs || p.Offset < 0 || p.Offset > cs || p.ID != "" && !validID(p.ID) || p.ID == "" && p.Offset != 0 {
				return fmt.Errorf("%w: manifest piece of chunk %d", ErrCorrupt, i)
			}
			sum += p.Length
		}
		if sum != chunkLength(m.Size, cs, i) {
			return fmt.Errorf("%w: the pieces of chunk %d cover %d bytes, not the chunk", ErrCorrupt, i, sum)
		}
	}
	return nil
}

func (k *keys) manifestMAC(m *Manifest) (string, error) {
	c := *m
	c.MAC = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	return k.chunkID(k.hasher(), append([]byte("manifest\x00"), b...)), nil
}

func (k *keys) encodeManifest(enc *zstd.Encoder, m *Manifest) ([]byte, error) {
	m.Version = manifestV1
	if len(m.Pieces) > 0 {
		m.Version = manifestV2Pieces
	}
	mac, err := k.manifestMAC(m)
	if err != nil {
		return nil, err
	}
	m.MAC = mac
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	obj, _ := k.sealObject(enc, nil, nil, b)
	return obj, nil
}

func (k *keys) decodeManifest(dec *zstd.Decoder, obj []byte) (*Manifest, error) {
	plain, err := k.openObject(dec, obj, nil)
	if err != nil {
		return nil, err
	}
	var m Manifest
	d := json.NewDecoder(bytes.NewReader(plain))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	if m.Version != manifestV1 && m.Version != manifestV2Pieces || m.Version == manifestV1 && m.Pieces != nil {
		return nil, fmt.Errorf("engine: manifest version %d, this build reads %d and %d", m.Version, manifestV1, manifestV2Pieces)
	}
	mac, err := k.manifestMAC(&m)
	if err != nil || mac != m.MAC {
		return nil, fmt.Errorf("%w: manifest MAC mismatch", ErrCorrupt)
	}
	if m.ChunkSize <= 0 || m.Size < 0 || int64(len(m.Chunks)) != (m.Size+int64(m.ChunkSize)-1)/int64(m.ChunkSize) {
		return nil, fmt.Errorf("%w: manifest chunk list does not cover the volume", ErrCorrupt)
	}
	for _, id := range m.Chunks {
		if id != "" && !validID(id) {
			return nil, fmt.Errorf("%w: bad chunk id in manifest", ErrCorrupt)
		}
	}
	if err := m.checkPieces(); err != nil {
		return nil, err
	}
	return &m, nil
}

func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
