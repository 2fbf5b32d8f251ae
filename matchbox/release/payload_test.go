package release

import (
	"bytes"
	"compress/gzip"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox/release/payloadtest"
)

// Keys are slow to make: the tests share two.
var testKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	return [2]*rsa.PrivateKey{payloadtest.NewKey(), payloadtest.NewKey()}
})

func payloadKey() *rsa.PrivateKey { return testKeys()[0] }
func otherKey() *rsa.PrivateKey   { return testKeys()[1] }

func build(t testing.TB, p payloadtest.Payload) []byte {
	t.Helper()
	b, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyPayload(t *testing.T) {
	key := payloadKey()
	// The first blob is not a whole number of blocks: the partition has it
	// padded with zeros.
	a, b := bytes.Repeat([]byte("a"), 5000), bytes.Repeat([]byte("b"), payloadtest.BlockSize)
	data := build(t, payloadtest.Payload{Blobs: [][]byte{a, b}, Signers: []payloadtest.Signer{{Key: key}}})
	info, err := VerifyPayload(t.Context(), bytes.NewReader(data), int64(len(data)), &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	partition := append(append(bytes.Clone(a), make([]byte, 2*payloadtest.BlockSize-len(a))...), b...)
	sum1, sum256, part := sha1.Sum(data), sha256.Sum256(data), sha256.Sum256(partition)
	want := PayloadInfo{Size: int64(len(data)), SHA1: sum1[:], SHA256: sum256[:], NewPartitionSize: uint64(len(partition)), NewPartitionSHA256: part[:]}
	if diff := cmp.Diff(want, info); diff != "" {
		t.Errorf("VerifyPayload (-want +got):\n%s", diff)
	}

	// An extension payload passes the same way, and a file works as the
	// reader.
	path := filepath.Join(t.TempDir(), "oem-qemu.gz")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ext, err := VerifyExtensionPayload(t.Context(), f, int64(len(data)), &key.PublicKey)
	if err != nil || !cmp.Equal(ext, info) {
		t.Errorf("VerifyExtensionPayload = %+v, %v; want %+v", ext, err, info)
	}
}

// Every way a payload can be wrong is refused with the error update_engine
// would fail it with.
func TestVerifyPayloadRefuses(t *testing.T) {
	key, other := payloadKey(), otherKey()
	valid := payloadtest.Signed(key)
	mlen := payloadtest.ManifestLen(valid)
	dataStart := payloadtest.ManifestOffset + mlen
	flip := func(at int) []byte {
		b := bytes.Clone(valid)
		b[at] ^= 0x40
		return b
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(valid)
	zw.Close()
	hugeManifest := bytes.Clone(valid)
	binary.BigEndian.PutUint64(hugeManifest[12:20], 1<<62)
	version2 := bytes.Clone(valid)
	binary.BigEndian.PutUint64(version2[4:12], 2)

	for _, tc := range []struct {
		name string
		data []byte
		code int
		// extension is the result for VerifyExtensionPayload when it
		// differs: -1 accepted.
		extension int
		reason    string
	}{
		{name: "flipped data byte", data: flip(dataStart + 10), code: 29, reason: "does not match its operation's SHA-256"},
		{name: "flipped data byte, no operation hashes", data: flipIn(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: key}}, NoOperationHashes: true}, 10),
			code: 38, extension: 18, reason: "no SHA-256"},
		{name: "flipped manifest byte", data: flip(dataStart - 1), code: 18, reason: "does not verify"},
		{name: "flipped header byte", data: flip(1), code: 21, reason: "not a CrAU payload"},
		{name: "flipped signature byte", data: flip(len(valid) - 5), code: 18, reason: "does not verify"},
		{name: "wrong key", data: build(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: other}}}), code: 18, reason: "does not verify"},
		{name: "no signature", data: build(t, payloadtest.Payload{}), code: 17, reason: "unsigned"},
		{name: "signature version 1", data: build(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: key, Version: 1}}}),
			code: 18, extension: -1, reason: "no version 2 signature"},
		{name: "version 2 signature by another key, version 1 by the key", data: build(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: key}, {Key: other}}}),
			code: 18, extension: -1, reason: "version 2 signature does not verify"},
		{name: "signature longer than twice the key", data: build(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: key}}, SignatureLen: 2*256 + 1}),
			code: 18, reason: "longer than twice"},
		{name: "no new_partition_info", data: build(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: key}}, NoNewPartitionInfo: true}),
			code: 12, reason: "new_partition_info"},
		{name: "gap before the signature blob", data: build(t, payloadtest.Payload{Signers: []payloadtest.Signer{{Key: key}}, Gap: 3}),
			code: 28, reason: "not right after the last data blob"},
		{name: "trailing bytes", data: append(bytes.Clone(valid), 0), code: 11, reason: "trailing data after the signature blob (1 bytes)"},
		{name: "truncated", data: valid[:len(valid)-1], code: 11, reason: "truncated"},
		{name: "truncated in the manifest", data: valid[:dataStart-3], code: 11, reason: "runs past the end"},
		{name: "truncated in the header", data: valid[:10], code: 11, reason: "shorter than the 20-byte header"},
		{name: "empty", data: nil, code: 11, reason: "truncated"},
		{name: "huge manifest length", data: hugeManifest, code: 11, reason: "runs past the end"},
		{name: "format version 2", data: version2, code: 0, reason: "format version 2"},
		{name: "gzip", data: gz.Bytes(), code: 21, reason: "a gzip file"},
		{name: "garbage manifest", data: garbageManifest(valid), code: 23, reason: "manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(which string, err error, code int) {
				t.Helper()
				if code == -1 {
					if err != nil {
						t.Errorf("%s: %v; want it accepted", which, err)
					}
					return
				}
				var pe *PayloadError
				if !errors.Is(err, ErrBadPayload) || !errors.As(err, &pe) || pe.Code != code {
					t.Fatalf("%s: %v; want ErrBadPayload with code %d", which, err, code)
				}
				if which == "VerifyPayload" && !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("%s: %q does not say %q", which, err, tc.reason)
				}
			}
			_, err := VerifyPayload(t.Context(), bytes.NewReader(tc.data), int64(len(tc.data)), &key.PublicKey)
			check("VerifyPayload", err, tc.code)
			t.Log(err)
			ext := tc.code
			if tc.extension != 0 {
				ext = tc.extension
			}
			_, err = VerifyExtensionPayload(t.Context(), bytes.NewReader(tc.data), int64(len(tc.data)), &key.PublicKey)
			check("VerifyExtensionPayload", err, ext)
			// Reading the same bytes as a stream of unknown length (a
			// download without Content-Length) ends the same.
			_, err = verifyPayload(t.Context(), bytes.NewReader(tc.data), -1, &key.PublicKey, osPayload)
			if !errors.Is(err, ErrBadPayload) {
				t.Errorf("streamed: %v; want ErrBadPayload", err)
			}
		})
	}
}

// flipIn builds p and flips a byte of its data blobs.
func flipIn(t *testing.T, p payloadtest.Payload, at int) []byte {
	b := build(t, p)
	b[payloadtest.ManifestOffset+payloadtest.ManifestLen(b)+at] ^= 1
	return b
}

// garbageManifest replaces a payload's manifest by bytes that are not
// protobuf (a truncated varint field).
func garbageManifest(valid []byte) []byte {
	b := bytes.Clone(valid)
	m := b[payloadtest.ManifestOffset : payloadtest.ManifestOffset+payloadtest.ManifestLen(b)]
	for i := range m {
		m[i] = 0xff
	}
	return b
}

// A length in the header is never trusted for an allocation: a huge
// manifest length in a file that claims to be huge is refused by the bound
// before anything is read.
func TestVerifyPayloadBoundsMemory(t *testing.T) {
	key := payloadKey()
	data := payloadtest.Signed(key)
	binary.BigEndian.PutUint64(data[12:20], 1<<40)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := VerifyPayload(t.Context(), bytes.NewReader(data), 1<<50, &key.PublicKey)
	runtime.ReadMemStats(&after)
	var pe *PayloadError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "bound") {
		t.Fatalf("VerifyPayload: %v; want the manifest bound", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("allocated %d bytes for a refused header", grew)
	}
}

func TestParsePayloadKey(t *testing.T) {
	def := DefaultPayloadKey()
	if def.Size() != 256 || def.E != 65537 {
		t.Errorf("default key: %d bytes, e=%d; want Flatcar's RSA-2048 key", def.Size(), def.E)
	}
	key := payloadKey()
	got, err := ParsePayloadKey(payloadtest.PublicPEM(key))
	if err != nil || !got.Equal(&key.PublicKey) {
		t.Errorf("ParsePayloadKey(PUBLIC KEY) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		if _, err := ParsePayloadKey([]byte(bad)); err == nil {
			t.Errorf("ParsePayloadKey(%q) = nil error", bad)
		}
	}
	// The shipped key does not verify a test payload.
	data := payloadtest.Signed(key)
	if _, err := VerifyPayload(t.Context(), bytes.NewReader(data), int64(len(data)), nil); !errors.Is(err, ErrBadPayload) {
		t.Errorf("a test payload with the default key: %v; want refused", err)
	}
}

// FuzzVerifyPayload: the parser faces the network; whatever it reads, it
// neither panics nor accepts bytes the key did not sign.
func FuzzVerifyPayload(f *testing.F) {
	key := payloadKey()
	valid := payloadtest.Signed(key)
	f.Add(valid)
	f.Add(valid[:payloadtest.ManifestOffset+payloadtest.ManifestLen(valid)])
	f.Add([]byte("CrAU"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := VerifyPayload(t.Context(), bytes.NewReader(data), int64(len(data)), &key.PublicKey)
		// The signed bytes are all but the signature blob: 264 bytes, a
		// Signatures message with one Signature (version, 256 bytes).
		signed := len(valid) - 264
		if err == nil && (len(data) != len(valid) || !bytes.Equal(data[:signed], valid[:signed])) {
			t.Fatalf("accepted bytes the key did not sign")
		}
		if err != nil && !errors.Is(err, ErrBadPayload) {
			t.Fatalf("error not wrapping ErrBadPayload: %v", err)
		}
	})
}
