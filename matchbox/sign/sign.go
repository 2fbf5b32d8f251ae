// Package sign makes detached OpenPGP signatures of rendered configs, served
// as the .sig (binary) and .asc (ASCII-armored) variants of each boot
// endpoint so machines can verify what they fetch.
package sign

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// Signer signs messages with one private key.
type Signer struct {
	entity *openpgp.Entity
}

// LoadKeyRing reads a private key ring (binary, as exported by
// `gpg --export-secret-keys`, or ASCII-armored) and returns a Signer for
// its first key, decrypting it with passphrase when it is protected.
func LoadKeyRing(path string, passphrase []byte) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key ring: %w", err)
	}
	var ring openpgp.EntityList
	if bytes.Contains(data[:min(len(data), 64)], []byte("-----BEGIN PGP")) {
		ring, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		ring, err = openpgp.ReadKeyRing(bufio.NewReader(bytes.NewReader(data)))
	}
	if err != nil {
		return nil, fmt.Errorf("key ring %s: %w", path, err)
	}
	if len(ring) == 0 {
		return nil, fmt.Errorf("key ring %s: no keys", path)
	}
	e := ring[0]
	if e.PrivateKey == nil {
		return nil, fmt.Errorf("key ring %s: the first key has no private part (export it with --export-secret-keys)", path)
	}
	if e.PrivateKey.Encrypted {
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("key ring %s: the key is passphrase-protected; set MATCHBOX_PASSPHRASE", path)
		}
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			return nil, fmt.Errorf("key ring %s: decrypt key: %w", path, err)
		}
	}
	return &Signer{entity: e}, nil
}

// NewSigner returns a Signer for an entity that holds a decrypted private key.
func NewSigner(e *openpgp.Entity) (*Signer, error) {
	if e == nil || e.PrivateKey == nil || e.PrivateKey.Encrypted {
		return nil, errors.New("sign: entity has no usable private key")
	}
	return &Signer{entity: e}, nil
}

// Sign writes a binary detached signature of msg to w.
func (s *Signer) Sign(w io.Writer, msg []byte) error {
	return openpgp.DetachSign(w, s.entity, bytes.NewReader(msg), nil)
}

// SignArmored writes an ASCII-armored detached signature of msg to w.
func (s *Signer) SignArmored(w io.Writer, msg []byte) error {
	return openpgp.ArmoredDetachSign(w, s.entity, bytes.NewReader(msg), nil)
}

// Verify checks a binary or armored detached signature of msg against the
// signer's own key; tests and tools use it.
func (s *Signer) Verify(msg, sig []byte) error {
	ring := openpgp.EntityList{s.entity}
	if bytes.HasPrefix(bytes.TrimSpace(sig), []byte("-----BEGIN")) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return err
		}
		_, err = openpgp.CheckDetachedSignature(ring, bytes.NewReader(msg), blk.Body, nil)
		return err
	}
	_, err := openpgp.CheckDetachedSignature(ring, bytes.NewReader(msg), bytes.NewReader(sig), nil)
	return err
}
