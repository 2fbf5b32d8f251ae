package release

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"

	"matchbox.dev/matchbox"
)

// The key Flatcar release images verify update payloads with, installed as
// /usr/share/update_engine/update-payload-key.pub.pem: flatcar/scripts
// sdk_container/src/third_party/coreos-overlay/coreos-base/coreos-au-key/files/official-v2.pub.pem
// (RSA-2048, md5 1404475232f7d055fe0b977021b70601). It is not the OpenPGP
// image signing key.
//
//go:embed update-payload-key.pub.pem
var defaultPayloadKey []byte

// DefaultPayloadKey returns Flatcar's official update payload key, the
// embedded copy of the key release images verify payloads with.
func DefaultPayloadKey() *rsa.PublicKey {
	key, err := ParsePayloadKey(defaultPayloadKey)
	if err != nil {
		panic("release: the embedded payload key does not parse: " + err.Error())
	}
	return key
}

// ParsePayloadKey parses a PEM RSA public key, as update_engine reads
// its key file: "PUBLIC KEY" (SubjectPublicKeyInfo), or "RSA PUBLIC KEY"
// (PKCS #1).
func ParsePayloadKey(data []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("payload key: no PEM block: %w", matchbox.ErrInvalid)
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("payload key: %v: %w", err, matchbox.ErrInvalid)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("payload key: a %T, not an RSA key: %w", k, matchbox.ErrInvalid)
		}
		return rk, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("payload key: %v: %w", err, matchbox.ErrInvalid)
		}
		return k, nil
	}
	return nil, fmt.Errorf("payload key: a PEM %q block, not a public key: %w", block.Type, matchbox.ErrInvalid)
}

// PayloadInfo is what the update service tells machines about a verified
// payload.
type PayloadInfo struct {
	// Size is the payload's length in bytes (Omaha's package size).
	Size int64 `json:"size"`
	// SHA1 and SHA256 are the raw digests of the whole file (Omaha wants
	// SHA1 and SHA256 in base64, and SHA256 in hex for extensions); in
	// JSON they are base64, standard alphabet, padded.
	SHA1   []byte `json:"sha1"`
	SHA256 []byte `json:"sha256"`
	// NewPartitionSize and NewPartitionSHA256 are the manifest's
	// new_partition_info: the size and SHA-256 of the partition (or
	// extension image) the payload writes.
	NewPartitionSize   uint64 `json:"new_partition_size"`
	NewPartitionSHA256 []byte `json:"new_partition_sha256"`
}

// ErrBadPayload is returned, wrapped in a *PayloadError, for an update
// payload that would not be installed.
var ErrBadPayload = errors.New("bad update payload")

// PayloadError says why a payload was refused.
type PayloadError struct {
	// Code is the update_engine error code (ActionExitCode) a machine
	// would report for the payload; 0 when update_engine would not refuse
	// it but ue-rs or matchbox's bounds do.
	Code   int
	Reason string
}

func (e *PayloadError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("%v: %s (update_engine would fail it with error %d)", ErrBadPayload, e.Reason, e.Code)
	}
	return fmt.Sprintf("%v: %s", ErrBadPayload, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBadPayload) hold.
func (e *PayloadError) Unwrap() error { return ErrBadPayload }

// update_engine's error codes (ActionExitCode) a payload can cause.
const (
	codeSizeMismatch        = 11 // kActionCodePayloadSizeMismatchError
	codeVerification        = 12 // kActionCodeDownloadPayloadVerificationError (no new_partition_info)
	codeSignatureExpected   = 17 // kActionCodeSignedDeltaPayloadExpectedError
	codePubKeyVerification  = 18 // kActionCodeDownloadPayloadPubKeyVerificationError
	codeBadMagic            = 21 // kActionCodeDownloadInvalidMetadataMagicString
	codeManifestParse       = 23 // kActionCodeDownloadManifestParseError
	codeOperationExecution  = 28 // kActionCodeDownloadOperationExecutionError (blob out of place)
	codeOperationHash       = 29 // kActionCodeDownloadOperationHashMismatch
	codeOperationHashAbsent = 38 // kActionCodeDownloadOperationHashMissingError
)

func refuse(code int, format string, args ...any) error {
	return &PayloadError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

const (
	payloadMagic = "CrAU"
	// headerSize is the magic, the format version and the manifest length.
	headerSize = 4 + 8 + 8
	// maxManifestSize bounds the manifest held in memory. Flatcar's
	// manifests are some 100 KiB (a REPLACE_BZ operation per MiB of a
	// 1 GiB partition).
	maxManifestSize = 16 << 20
	// maxSignatureBlobSize bounds the Signatures message; Flatcar's holds
	// two 256-byte signatures.
	maxSignatureBlobSize = 64 << 10
	// signatureVersion is the Signature.version update_engine verifies
	// (kSignatureMessageCurrentVersion); other slots it ignores.
	signatureVersion = 2
)

// VerifyPayload checks an OS update payload (flatcar_production_update.gz,
// a CrAU file, not gzip) of size bytes as update_engine checks it before
// installing it: the CrAU header (format version 1), a manifest that
// parses, has new_partition_info and whose operations consume the data
// blobs in order, each with its SHA-256; then, right after the last blob
// and ending the file, a signature blob holding a version 2 signature that
// is an RSA PKCS #1 v1.5 signature by key over the SHA-256 of every byte
// before the blob. key nil means DefaultPayloadKey(). Memory stays bounded
// whatever the file holds. A refused payload's error wraps ErrBadPayload.
func VerifyPayload(ctx context.Context, r io.ReaderAt, size int64, key *rsa.PublicKey) (PayloadInfo, error) {
	return verifyPayloadAt(ctx, r, size, key, osPayload)
}

// VerifyExtensionPayload checks an extension payload (oem-<ID>.gz,
// flatcar-<NAME>.gz) as ue-rs checks it: as VerifyPayload, except that a
// signature in any slot may verify, whatever its version, and that
// operations without a SHA-256 pass (ue-rs checks the extracted image
// against new_partition_info instead).
func VerifyExtensionPayload(ctx context.Context, r io.ReaderAt, size int64, key *rsa.PublicKey) (PayloadInfo, error) {
	return verifyPayloadAt(ctx, r, size, key, extensionPayload)
}

// payloadKind selects the client whose rules a payload must pass.
type payloadKind int

const (
	osPayload        payloadKind = iota // update_engine
	extensionPayload                    // ue-rs (download_sysext)
)

func verifyPayloadAt(ctx context.Context, r io.ReaderAt, size int64, key *rsa.PublicKey, kind payloadKind) (PayloadInfo, error) {
	if size < 0 {
		return PayloadInfo{}, fmt.Errorf("payload size %d: %w", size, matchbox.ErrInvalid)
	}
	return verifyPayload(ctx, io.NewSectionReader(r, 0, size), size, key, kind)
}

// verifyPayload reads a payload from r once, front to end, and verifies
// it; size is its length, or -1 when unknown (a download without a
// Content-Length), in which case r's end is the payload's end.
func verifyPayload(ctx context.Context, r io.Reader, size int64, key *rsa.PublicKey, kind payloadKind) (PayloadInfo, error) {
	if key == nil {
		key = DefaultPayloadKey()
	}
	sum1, sum256 := sha1.New(), sha256.New()
	whole := io.MultiWriter(sum1, sum256)
	// read fills b from r, hashing what it read.
	read := func(b []byte, what string) error {
		n, err := io.ReadFull(r, b)
		whole.Write(b[:n])
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return refuse(codeSizeMismatch, "truncated: the file ends in the %s", what)
		}
		return err
	}

	var hdr [headerSize]byte
	n, err := io.ReadFull(r, hdr[:])
	whole.Write(hdr[:n])
	if !bytes.HasPrefix(hdr[:n], []byte(payloadMagic)[:min(n, len(payloadMagic))]) {
		if n >= 2 && hdr[0] == 0x1f && hdr[1] == 0x8b {
			return PayloadInfo{}, refuse(codeBadMagic, "a gzip file, not a CrAU payload (Flatcar's .gz payloads are not gzip)")
		}
		return PayloadInfo{}, refuse(codeBadMagic, "does not start with %q: not a CrAU payload", payloadMagic)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return PayloadInfo{}, refuse(codeSizeMismatch, "truncated: %d bytes, shorter than the %d-byte header", n, headerSize)
	}
	if err != nil {
		return PayloadInfo{}, err
	}
	if v := binary.BigEndian.Uint64(hdr[4:12]); v != 1 {
		return PayloadInfo{}, refuse(0, "format version %d, want 1", v)
	}
	manifestLen := binary.BigEndian.Uint64(hdr[12:20])
	if size >= 0 && manifestLen > uint64(size-headerSize) {
		return PayloadInfo{}, refuse(codeSizeMismatch, "manifest length %d runs past the end of the %d-byte file", manifestLen, size)
	}
	if manifestLen > maxManifestSize {
		return PayloadInfo{}, refuse(0, "manifest length %d exceeds matchbox's bound of %d bytes", manifestLen, maxManifestSize)
	}
	raw := make([]byte, manifestLen)
	if err := read(raw, "manifest"); err != nil {
		return PayloadInfo{}, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return PayloadInfo{}, refuse(codeManifestParse, "manifest: %v", err)
	}
	if err := m.check(kind); err != nil {
		return PayloadInfo{}, err
	}
	signedLen := headerSize + manifestLen + m.sigOffset
	if size >= 0 {
		switch end := signedLen + m.sigSize; {
		case end > uint64(size):
			return PayloadInfo{}, refuse(codeSizeMismatch, "truncated: the manifest places the signature blob's end at byte %d of a %d-byte file", end, size)
		case end < uint64(size):
			return PayloadInfo{}, refuse(codeSizeMismatch, "trailing data after the signature blob (%d bytes)", uint64(size)-end)
		}
	}

	// The data blobs, each hashed as its operation says.
	var longest uint64
	for _, op := range m.ops {
		longest = max(longest, op.length)
	}
	buf := make([]byte, min(longest, 1<<20))
	opSum := sha256.New()
	for i, op := range m.ops {
		opSum.Reset()
		for left := op.length; left > 0; {
			if err := ctx.Err(); err != nil {
				return PayloadInfo{}, err
			}
			chunk := buf[:min(left, uint64(len(buf)))]
			if err := read(chunk, "data blobs"); err != nil {
				return PayloadInfo{}, err
			}
			opSum.Write(chunk)
			left -= uint64(len(chunk))
		}
		if op.hash != nil && !bytes.Equal(opSum.Sum(nil), op.hash) {
			return PayloadInfo{}, refuse(codeOperationHash, "data blob %d (%d bytes at data offset %d) does not match its operation's SHA-256", i, op.length, op.offset)
		}
	}
	signed := sum256.Sum(nil)

	blob := make([]byte, m.sigSize)
	if err := read(blob, "signature blob"); err != nil {
		return PayloadInfo{}, err
	}
	var extra [1]byte
	switch n, err := io.ReadFull(r, extra[:]); {
	case n > 0:
		return PayloadInfo{}, refuse(codeSizeMismatch, "trailing data after the signature blob")
	case !errors.Is(err, io.EOF):
		return PayloadInfo{}, err
	}
	if err := verifySignatures(blob, signed, key, kind); err != nil {
		return PayloadInfo{}, err
	}
	return PayloadInfo{
		Size:               int64(signedLen + m.sigSize),
		SHA1:               sum1.Sum(nil),
		SHA256:             sum256.Sum(nil),
		NewPartitionSize:   m.newPartition.size,
		NewPartitionSHA256: m.newPartition.hash,
	}, nil
}

// verifySignatures checks a Signatures message against the digest of the
// signed bytes: update_engine verifies the first signature of version 2
// and no other; ue-rs accepts any signature that verifies.
func verifySignatures(blob, digest []byte, key *rsa.PublicKey, kind payloadKind) error {
	sigs, err := parseSignatures(blob)
	if err != nil {
		return refuse(codePubKeyVerification, "signature blob: %v", err)
	}
	check := func(s payloadSignature) error {
		if len(s.data) > 2*key.Size() {
			return fmt.Errorf("%d bytes, longer than twice the %d-byte key", len(s.data), key.Size())
		}
		return rsa.VerifyPKCS1v15(key, crypto.SHA256, digest, s.data)
	}
	if kind == osPayload {
		var versions []uint32
		for _, s := range sigs {
			if s.hasVersion && s.version == signatureVersion {
				if err := check(s); err != nil {
					return refuse(codePubKeyVerification, "the version %d signature does not verify with the payload key: %v", signatureVersion, err)
				}
				return nil
			}
			versions = append(versions, s.version)
		}
		return refuse(codePubKeyVerification, "no version %d signature (%d signatures, versions %v)", signatureVersion, len(sigs), versions)
	}
	var errs []error
	for i, s := range sigs {
		err := check(s)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("signature %d (version %d): %w", i, s.version, err))
	}
	if len(errs) == 0 {
		return refuse(codePubKeyVerification, "the signature blob holds no signature")
	}
	return refuse(codePubKeyVerification, "no signature verifies with the payload key: %v", errors.Join(errs...))
}

// manifest is what verification needs of a DeltaArchiveManifest (Flatcar's
// update_engine src/update_engine/update_metadata.proto).
type manifest struct {
	// ops are the operations with data, in the order update_engine
	// performs them: partition_operations, then each procedure's.
	ops                      []dataOp
	hasSigOffset, hasSigSize bool
	sigOffset, sigSize       uint64
	newPartition             *partitionInfo
}

type dataOp struct {
	offset, length uint64
	hash           []byte // nil when absent
	// partition is set for partition_operations, whose hash update_engine
	// requires.
	partition bool
}

type partitionInfo struct {
	size uint64
	hash []byte
}

// Field numbers of update_metadata.proto.
const (
	fieldPartitionOperations = 1  // DeltaArchiveManifest: repeated InstallOperation
	fieldNoopOperations      = 2  // DeltaArchiveManifest: repeated InstallOperation
	fieldSignaturesOffset    = 4  // DeltaArchiveManifest: optional uint64
	fieldSignaturesSize      = 5  // DeltaArchiveManifest: optional uint64
	fieldNewPartitionInfo    = 9  // DeltaArchiveManifest: optional InstallInfo
	fieldProcedures          = 10 // DeltaArchiveManifest: repeated InstallProcedure

	fieldProcedureOperations = 2 // InstallProcedure: repeated InstallOperation

	fieldOpType       = 1 // InstallOperation: required Type
	fieldOpDataOffset = 2 // InstallOperation: optional uint32
	fieldOpDataLength = 3 // InstallOperation: optional uint32
	fieldOpDataSHA256 = 8 // InstallOperation: optional bytes

	fieldInfoSize = 1 // InstallInfo: optional uint64
	fieldInfoHash = 2 // InstallInfo: optional bytes

	fieldSignatures       = 1 // Signatures: repeated Signature
	fieldSignatureVersion = 1 // Signature: optional uint32
	fieldSignatureData    = 2 // Signature: optional bytes
)

// parseManifest decodes a DeltaArchiveManifest as protobuf's C++ parser
// does: fields it does not know, or with another wire type than the
// .proto gives, are skipped; a repeated singular field's last value wins
// (messages merge); an InstallOperation without its required type fails.
func parseManifest(b []byte) (*manifest, error) {
	m := &manifest{}
	var procOps []dataOp
	err := walkMessage(b, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
		switch {
		case num == fieldPartitionOperations && typ == protowire.BytesType:
			op, err := parseOperation(data)
			if err != nil {
				return fmt.Errorf("partition operation: %w", err)
			}
			if op.length > 0 {
				op.partition = true
				m.ops = append(m.ops, op)
			}
		case num == fieldNoopOperations && typ == protowire.BytesType:
			if _, err := parseOperation(data); err != nil {
				return fmt.Errorf("noop operation: %w", err)
			}
		case num == fieldSignaturesOffset && typ == protowire.VarintType:
			m.sigOffset, m.hasSigOffset = v, true
		case num == fieldSignaturesSize && typ == protowire.VarintType:
			m.sigSize, m.hasSigSize = v, true
		case num == fieldNewPartitionInfo && typ == protowire.BytesType:
			if m.newPartition == nil {
				m.newPartition = &partitionInfo{}
			}
			return walkMessage(data, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
				switch {
				case num == fieldInfoSize && typ == protowire.VarintType:
					m.newPartition.size = v
				case num == fieldInfoHash && typ == protowire.BytesType:
					m.newPartition.hash = data
				}
				return nil
			})
		case num == fieldProcedures && typ == protowire.BytesType:
			return walkMessage(data, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
				if num != fieldProcedureOperations || typ != protowire.BytesType {
					return nil
				}
				op, err := parseOperation(data)
				if err != nil {
					return fmt.Errorf("procedure operation: %w", err)
				}
				if op.length > 0 {
					procOps = append(procOps, op)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.ops = append(m.ops, procOps...)
	return m, nil
}

func parseOperation(b []byte) (dataOp, error) {
	var op dataOp
	hasType := false
	err := walkMessage(b, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
		switch {
		case num == fieldOpType && typ == protowire.VarintType:
			hasType = true
		case num == fieldOpDataOffset && typ == protowire.VarintType:
			op.offset = uint64(uint32(v))
		case num == fieldOpDataLength && typ == protowire.VarintType:
			op.length = uint64(uint32(v))
		case num == fieldOpDataSHA256 && typ == protowire.BytesType:
			op.hash = data
		}
		return nil
	})
	if err == nil && !hasType {
		err = errors.New("no type (a required field)")
	}
	return op, err
}

// check applies the rules on the manifest itself, before any blob is read.
func (m *manifest) check(kind payloadKind) error {
	if m.newPartition == nil {
		return refuse(codeVerification, "the manifest has no new_partition_info")
	}
	if !m.hasSigOffset || !m.hasSigSize || m.sigSize == 0 {
		return refuse(codeSignatureExpected, "unsigned: the manifest locates no signature blob")
	}
	if m.sigSize > maxSignatureBlobSize {
		return refuse(0, "signature blob of %d bytes exceeds matchbox's bound of %d bytes", m.sigSize, maxSignatureBlobSize)
	}
	var next uint64
	for i, op := range m.ops {
		if op.offset != next {
			return refuse(codeOperationExecution, "data blob %d is at data offset %d, not right after the previous blob (%d)", i, op.offset, next)
		}
		if op.hash == nil && op.partition && kind == osPayload {
			return refuse(codeOperationHashAbsent, "the partition operation of data blob %d has no SHA-256", i)
		}
		next += op.length
	}
	if m.sigOffset != next {
		return refuse(codeOperationExecution, "the signature blob is at data offset %d, not right after the last data blob (%d)", m.sigOffset, next)
	}
	return nil
}

type payloadSignature struct {
	hasVersion bool
	version    uint32
	data       []byte
}

func parseSignatures(b []byte) ([]payloadSignature, error) {
	var sigs []payloadSignature
	err := walkMessage(b, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
		if num != fieldSignatures || typ != protowire.BytesType {
			return nil
		}
		var s payloadSignature
		if err := walkMessage(data, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
			switch {
			case num == fieldSignatureVersion && typ == protowire.VarintType:
				s.hasVersion, s.version = true, uint32(v)
			case num == fieldSignatureData && typ == protowire.BytesType:
				s.data = data
			}
			return nil
		}); err != nil {
			return err
		}
		sigs = append(sigs, s)
		return nil
	})
	return sigs, err
}

// walkMessage calls fn for each field of the protobuf message b, in wire
// order: v holds a varint's value, data a length-delimited field's bytes
// (a sub-slice of b). Fields of other wire types are skipped.
func walkMessage(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var data []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			data, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType || typ == protowire.BytesType {
			if err := fn(num, typ, v, data); err != nil {
				return err
			}
		}
	}
	return nil
}
