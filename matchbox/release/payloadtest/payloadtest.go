// Package payloadtest builds Flatcar update payloads (CrAU files) for
// tests, signed with keys the tests make, as Flatcar's signing side builds
// them (update_engine's delta_generator and payload signer): a header, a
// DeltaArchiveManifest with REPLACE operations over the data blobs and
// new_partition_info, the blobs, and a Signatures message over every byte
// before it, for which the manifest accounts with a no-op operation.
package payloadtest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// BlockSize is the manifest's block_size.
const BlockSize = 4096

// Signer is one signature of a payload.
type Signer struct {
	Key *rsa.PrivateKey
	// Version is the Signature.version; 0 numbers the signatures as
	// update_engine does: the last one 2, the one before 1, and so on.
	Version uint32
}

// Payload describes a payload to build. The zero value with Signers set is
// a valid payload with two small blobs.
type Payload struct {
	// Blobs are the data of the REPLACE operations, written one after the
	// other to the new partition; nil means two blocks of pseudo-random
	// bytes.
	Blobs [][]byte
	// Signers sign the payload; none leaves it unsigned (the manifest then
	// has no signatures_offset and signatures_size).
	Signers []Signer
	// NoNewPartitionInfo leaves new_partition_info out of the manifest.
	NoNewPartitionInfo bool
	// NoOperationHashes leaves data_sha256_hash out of the operations.
	NoOperationHashes bool
	// Gap puts this many bytes between the last blob and the signature
	// blob (signatures_offset counts them).
	Gap int
	// SignatureLen overrides the length of every signature (padded with
	// zeros or cut); 0 keeps the key's.
	SignatureLen int
}

// Signed returns a valid payload of the default blobs signed by key with a
// version 2 signature.
func Signed(key *rsa.PrivateKey) []byte {
	b, err := Payload{Signers: []Signer{{Key: key}}}.Build()
	if err != nil {
		panic(err)
	}
	return b
}

// Build returns the payload's bytes.
func (p Payload) Build() ([]byte, error) {
	blobs := p.Blobs
	if blobs == nil {
		blobs = [][]byte{fill(BlockSize, 1), fill(2*BlockSize, 2)}
	}
	var data, partition []byte
	var ops [][]byte
	block := uint64(0)
	for _, b := range blobs {
		blocks := (uint64(len(b)) + BlockSize - 1) / BlockSize
		op := protowire.AppendTag(nil, 1, protowire.VarintType) // type
		op = protowire.AppendVarint(op, 0)                      // REPLACE
		op = appendVarintField(op, 2, uint64(len(data)))        // data_offset
		op = appendVarintField(op, 3, uint64(len(b)))           // data_length
		extent := appendVarintField(nil, 1, block)              // start_block
		extent = appendVarintField(extent, 2, blocks)           // num_blocks
		op = appendBytesField(op, 6, extent)                    // dst_extents
		if !p.NoOperationHashes {
			sum := sha256.Sum256(b)
			op = appendBytesField(op, 8, sum[:]) // data_sha256_hash
		}
		ops = append(ops, op)
		data = append(data, b...)
		padded := make([]byte, blocks*BlockSize)
		copy(padded, b)
		partition = append(partition, padded...)
		block += blocks
	}
	data = append(data, make([]byte, p.Gap)...)

	// The signature blob's size is known before signing: the Signatures
	// message with signatures of the final lengths.
	var sigBlobLen int
	if len(p.Signers) > 0 {
		dummy := make([][]byte, len(p.Signers))
		for i, s := range p.Signers {
			dummy[i] = make([]byte, p.sigLen(s.Key))
		}
		sigBlobLen = len(p.signatures(dummy))
	}

	var m []byte
	for _, op := range ops {
		m = appendBytesField(m, 1, op) // partition_operations
	}
	if len(p.Signers) > 0 {
		// The no-op operation that covers the signature blob.
		noop := appendVarintField(nil, 1, 0)
		noop = appendVarintField(noop, 2, uint64(len(data)))
		noop = appendVarintField(noop, 3, uint64(sigBlobLen))
		m = appendBytesField(m, 2, noop) // noop_operations
	}
	m = appendVarintField(m, 3, BlockSize) // block_size
	if len(p.Signers) > 0 {
		m = appendVarintField(m, 4, uint64(len(data)))  // signatures_offset
		m = appendVarintField(m, 5, uint64(sigBlobLen)) // signatures_size
	}
	if !p.NoNewPartitionInfo {
		sum := sha256.Sum256(partition)
		info := appendVarintField(nil, 1, uint64(len(partition))) // size
		info = appendBytesField(info, 2, sum[:])                  // hash
		m = appendBytesField(m, 9, info)                          // new_partition_info
	}

	out := []byte("CrAU")
	out = binary.BigEndian.AppendUint64(out, 1)
	out = binary.BigEndian.AppendUint64(out, uint64(len(m)))
	out = append(out, m...)
	out = append(out, data...)
	if len(p.Signers) == 0 {
		return out, nil
	}
	digest := sha256.Sum256(out)
	sigs := make([][]byte, len(p.Signers))
	for i, s := range p.Signers {
		sig, err := rsa.SignPKCS1v15(rand.Reader, s.Key, crypto.SHA256, digest[:])
		if err != nil {
			return nil, err
		}
		sigs[i] = resize(sig, p.sigLen(s.Key))
	}
	blob := p.signatures(sigs)
	if len(blob) != sigBlobLen {
		return nil, fmt.Errorf("payloadtest: signature blob of %d bytes, manifest says %d", len(blob), sigBlobLen)
	}
	return append(out, blob...), nil
}

func (p Payload) sigLen(key *rsa.PrivateKey) int {
	if p.SignatureLen > 0 {
		return p.SignatureLen
	}
	return key.Size()
}

// signatures encodes a Signatures message.
func (p Payload) signatures(sigs [][]byte) []byte {
	var b []byte
	for i, sig := range sigs {
		version := p.Signers[i].Version
		if version == 0 {
			version = uint32(2 + 1 - len(sigs) + i)
		}
		s := appendVarintField(nil, 1, uint64(version))
		s = appendBytesField(s, 2, sig)
		b = appendBytesField(b, 1, s)
	}
	return b
}

// PublicPEM returns key's public half as update_engine's key file holds
// it: a PEM "PUBLIC KEY" (SubjectPublicKeyInfo).
func PublicPEM(key *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// NewKey generates an RSA-2048 key, the size of Flatcar's payload key.
func NewKey() *rsa.PrivateKey {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return key
}

// ManifestOffset is where the manifest starts: after the magic, the
// format version and the manifest length.
const ManifestOffset = 4 + 8 + 8

// ManifestLen returns the manifest length a payload's header gives.
func ManifestLen(payload []byte) int {
	return int(binary.BigEndian.Uint64(payload[12:20]))
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

// fill returns n bytes of a pattern that differs per seed.
func fill(n int, seed byte) []byte {
	b := bytes.Repeat([]byte{seed}, n)
	for i := range b {
		b[i] ^= byte(i * 7)
	}
	return b
}

func resize(b []byte, n int) []byte {
	if len(b) >= n {
		return b[:n]
	}
	return append(b, make([]byte, n-len(b))...)
}
