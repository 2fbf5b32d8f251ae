package release

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"matchbox.dev/matchbox"
)

// maxSignatureSize bounds a detached signature (and version.txt) held in
// memory; real ones are well under 2 KiB.
const maxSignatureSize = 64 << 10

// readKeyRing parses an ASCII-armored or binary public key ring that holds
// at least one key able to sign.
func readKeyRing(data []byte) (openpgp.EntityList, error) {
	var ring openpgp.EntityList
	var err error
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		ring, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		ring, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("not an OpenPGP public key: %v: %w", err, matchbox.ErrInvalid)
	}
	for _, e := range ring {
		if sig, _ := e.PrimarySelfSignature(); sig != nil && sig.FlagsValid && sig.FlagSign {
			return ring, nil
		}
		for _, s := range e.Subkeys {
			if s.Sig.FlagsValid && s.Sig.FlagSign {
				return ring, nil
			}
		}
	}
	return nil, fmt.Errorf("the key ring holds no key that may sign: %w", matchbox.ErrInvalid)
}

// describeKeys names the keys of a ring for error messages.
func describeKeys(ring openpgp.EntityList) string {
	var d []string
	for _, e := range ring {
		s := fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
		if id := e.PrimaryIdentity(); id != nil {
			s += " " + id.Name
		}
		d = append(d, s)
	}
	return strings.Join(d, ", ")
}

// hasValidSigningKey reports whether some key of the ring may sign at t.
func hasValidSigningKey(ring openpgp.EntityList, t time.Time) bool {
	for _, e := range ring {
		if _, ok := e.SigningKey(t); ok {
			return true
		}
	}
	return false
}

// signature is a parsed detached signature, ready to check data against.
type signature struct {
	raw    []byte // as the server sent it (binary or armored), kept next to the file
	binary []byte
}

// parseSignature decodes a detached signature (binary or ASCII-armored) and
// checks that the key ring holds the key that made it, so a wrong or
// outdated key fails before a large file is fetched.
func (m *Mirror) parseSignature(raw []byte) (signature, error) {
	bin := raw
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("-----BEGIN PGP")) {
		block, err := armor.Decode(bytes.NewReader(raw))
		if err != nil {
			return signature{}, fmt.Errorf("armored signature: %w", err)
		}
		if block.Type != openpgp.SignatureType {
			return signature{}, fmt.Errorf("armored block is a %s, not a signature", block.Type)
		}
		if bin, err = io.ReadAll(io.LimitReader(block.Body, maxSignatureSize)); err != nil {
			return signature{}, fmt.Errorf("armored signature: %w", err)
		}
	}
	packets := packet.NewReader(bytes.NewReader(bin))
	var issuers []string
	for {
		p, err := packets.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return signature{}, fmt.Errorf("malformed signature: %w", err)
		}
		sig, ok := p.(*packet.Signature)
		if !ok {
			return signature{}, errors.New("malformed signature: holds a packet that is not a signature")
		}
		if sig.IssuerKeyId == nil {
			continue
		}
		if len(m.ring.KeysByIdUsage(*sig.IssuerKeyId, packet.KeyFlagSign)) > 0 {
			return signature{raw: raw, binary: bin}, nil
		}
		issuers = append(issuers, fmt.Sprintf("%016X", *sig.IssuerKeyId))
	}
	if len(issuers) == 0 {
		return signature{}, errors.New("malformed signature: no signature with an issuer")
	}
	return signature{}, fmt.Errorf("made by key %s, which the key ring does not hold (Flatcar adds a signing subkey every year: is the key current?)",
		strings.Join(issuers, ", "))
}

// check reads signed to its end and verifies the signature over it.
//
// A signature made while its key was valid stays valid after the key
// expires: Flatcar's signing subkeys expire yearly but old releases keep
// their signatures. go-crypto checks expiry against config.Now() and, by
// its documented contract, checks everything else (the signature itself,
// critical notations, revocation of the primary key, the user id and the
// subkey) before expiry, so ErrKeyExpired and ErrSignatureExpired mean
// "valid but not now". Those two are re-checked at the signature's
// creation time; any other failure, revocation included, stands.
func (m *Mirror) check(signed io.Reader, sig signature) error {
	now := time.Now()
	cfg := &packet.Config{Time: func() time.Time { return now }}
	s, signer, err := openpgp.VerifyDetachedSignature(m.ring, signed, bytes.NewReader(sig.binary), cfg)
	if err == nil {
		return nil
	}
	if s == nil || signer == nil ||
		!(errors.Is(err, pgperrors.ErrKeyExpired) || errors.Is(err, pgperrors.ErrSignatureExpired)) {
		return err
	}
	return validWhenSigned(signer, s, now)
}

// validWhenSigned checks that the keys behind a cryptographically valid,
// unrevoked signature were unexpired when it was made.
func validWhenSigned(signer *openpgp.Entity, s *packet.Signature, now time.Time) error {
	made := s.CreationTime
	if s.SigExpired(now) {
		return fmt.Errorf("signature made %s: expired or dated in the future", made.UTC().Format(time.RFC3339))
	}
	primarySig, _ := signer.PrimarySelfSignature()
	if primarySig == nil {
		return errors.New("the signing key has no self-signature")
	}
	if signer.PrimaryKey.KeyExpired(primarySig, made) || lifetimeOver(primarySig, made) {
		return fmt.Errorf("the primary key %X was not valid when the signature was made (%s)",
			signer.PrimaryKey.Fingerprint, made.UTC().Format(time.RFC3339))
	}
	if *s.IssuerKeyId == signer.PrimaryKey.KeyId {
		return nil
	}
	for _, sub := range signer.Subkeys {
		if sub.PublicKey.KeyId != *s.IssuerKeyId || !sub.Sig.FlagsValid || !sub.Sig.FlagSign {
			continue
		}
		if sub.PublicKey.KeyExpired(sub.Sig, made) || lifetimeOver(sub.Sig, made) ||
			(sub.Sig.EmbeddedSignature != nil && lifetimeOver(sub.Sig.EmbeddedSignature, made)) {
			return fmt.Errorf("signing subkey %X was not valid when the signature was made (%s)",
				sub.PublicKey.Fingerprint, made.UTC().Format(time.RFC3339))
		}
		return nil
	}
	return fmt.Errorf("signing key %016X not found", *s.IssuerKeyId)
}

// lifetimeOver reports whether a self-signature with a lifetime had expired
// at t. Unlike Signature.SigExpired it does not fail self-signatures
// re-issued after t (a refreshed binding still vouches for the past).
func lifetimeOver(sig *packet.Signature, t time.Time) bool {
	if sig.SigLifetimeSecs == nil || *sig.SigLifetimeSecs == 0 {
		return false
	}
	return t.After(sig.CreationTime.Add(time.Duration(*sig.SigLifetimeSecs) * time.Second))
}

// badSignature builds the error for a file whose signature fails.
func (m *Mirror) badSignature(file string, reason error) error {
	return fmt.Errorf("%s: signature does not verify with the key (%s): %v: %w", file, m.keyDesc, reason, ErrBadSignature)
}
