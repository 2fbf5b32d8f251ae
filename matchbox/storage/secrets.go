package storage

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"matchbox.dev/matchbox"
)

// BMC settings are stored in their own bucket, keyed by MAC, sealed with
// AES-256-GCM under a key kept outside the database (a file the server is
// given, see DB.SetSecretKey), so a copy of the database alone does not
// reveal BMC passwords.

// errNoSecretKey is the error of BMC settings on a store without a key.
var errNoSecretKey = errors.New("BMC settings: the store has no secret key to seal them with")

// secretKey returns the key that seals BMC settings.
func (db *DB) secretKey() (*SecretKey, error) {
	if k := db.key.Load(); k != nil {
		return k, nil
	}
	return nil, errNoSecretKey
}

// SecretKey seals BMC credentials.
type SecretKey struct{ aead cipher.AEAD }

// LoadOrCreateSecretKey reads the key file (64 hex digits), creating it
// with a new random key (mode 0600) when it does not exist.
func LoadOrCreateSecretKey(path string) (*SecretKey, bool, error) {
	data, err := os.ReadFile(path)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, false, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("create secret key file: %w", err)
		}
		if _, err := io.WriteString(f, hex.EncodeToString(key)+"\n"); err != nil {
			f.Close()
			os.Remove(path)
			return nil, false, fmt.Errorf("write secret key file: %w", err)
		}
		if err := f.Close(); err != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("write secret key file: %w", err)
		}
		data, created = []byte(hex.EncodeToString(key)), true
	} else if err != nil {
		return nil, false, fmt.Errorf("secret key file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != 32 {
		return nil, false, fmt.Errorf("secret key file %s: want 64 hexadecimal digits (a 256-bit key)", path)
	}
	k, err := NewSecretKey(key)
	return k, created, err
}

// NewSecretKey returns a key from 32 bytes.
func NewSecretKey(key []byte) (*SecretKey, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &SecretKey{aead}, nil
}

// sealedBMC is a BMC record as stored, before sealing. Records written
// before the TLS settings existed have neither: their BMC's certificate is
// verified against the trusted CAs.
type sealedBMC struct {
	Address        string `json:"address"`
	Provider       string `json:"provider,omitempty"`
	Username       string `json:"username,omitempty"`
	Password       string `json:"password,omitempty"`
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
	TLSInsecure    bool   `json:"tls_insecure_skip_verify,omitempty"`
}

func (k *SecretKey) seal(mac string, b matchbox.BMC) ([]byte, error) {
	plain, err := json.Marshal(sealedBMC(b))
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	// The MAC is authenticated data: a record moved to another machine's
	// key does not open.
	return k.aead.Seal(nonce, nonce, plain, []byte(mac)), nil
}

func (k *SecretKey) open(mac string, data []byte) (matchbox.BMC, error) {
	n := k.aead.NonceSize()
	if len(data) < n {
		return matchbox.BMC{}, errors.New("BMC record too short")
	}
	plain, err := k.aead.Open(nil, data[:n], data[n:], []byte(mac))
	if err != nil {
		return matchbox.BMC{}, fmt.Errorf("BMC settings of %s do not open with this secret key (was the key file replaced?)", mac)
	}
	var s sealedBMC
	if err := json.Unmarshal(plain, &s); err != nil {
		return matchbox.BMC{}, err
	}
	return matchbox.BMC(s), nil
}

// ValidateBMC checks BMC settings and returns them with the certificate
// fingerprint in its canonical form.
func ValidateBMC(b matchbox.BMC) (matchbox.BMC, error) {
	if b.Address == "" {
		return b, fmt.Errorf("%w: BMC address is required (HOST or HOST:PORT)", matchbox.ErrInvalid)
	}
	host := b.Address
	if h, p, err := net.SplitHostPort(b.Address); err == nil {
		host = h
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return b, fmt.Errorf("%w: BMC address %s: the port must be a number from 1 to 65535", matchbox.ErrInvalid, matchbox.Quote(b.Address))
		}
	}
	if host == "" || strings.ContainsAny(host, " /\t") {
		return b, fmt.Errorf("%w: BMC address %s: want HOST or HOST:PORT", matchbox.ErrInvalid, matchbox.Quote(b.Address))
	}
	providers, err := matchbox.ParseBMCProviders(b.Provider)
	if err != nil {
		return b, err
	}
	if b.TLSFingerprint, err = matchbox.NormalizeBMCFingerprint(b.TLSFingerprint); err != nil {
		return b, err
	}
	if b.TLSFingerprint != "" && b.TLSInsecure {
		return b, fmt.Errorf("%w: tls_fingerprint and tls_insecure_skip_verify exclude each other: pin the certificate or skip its verification", matchbox.ErrInvalid)
	}
	if (b.TLSFingerprint != "" || b.TLSInsecure) && len(providers) > 0 && !slices.ContainsFunc(providers, func(p string) bool { return p != "ipmitool" && p != "intelamt" }) {
		return b, fmt.Errorf("%w: tls_fingerprint and tls_insecure_skip_verify apply to the HTTPS providers (redfish and the vendor ones), not to %s", matchbox.ErrInvalid, b.Provider)
	}
	return b, nil
}

// SetMachineBMC stores a machine's BMC settings, sealed with the store's
// secret key. An empty password keeps the stored one, but only for the
// same destination: an update that changes where or to whom the
// credential goes (see matchbox.BMCDestinationChanges) must give the
// password again, or it is refused and nothing changes. An unknown
// machine is added to the inventory.
func (db *DB) SetMachineBMC(_ context.Context, mac string, s matchbox.BMC) error {
	key, err := db.secretKey()
	if err != nil {
		return err
	}
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if s, err = ValidateBMC(s); err != nil {
		return err
	}
	created := false
	err = db.update(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketBMC)
		if s.Password == "" {
			old := bk.Get([]byte(norm))
			if old == nil {
				return fmt.Errorf("%w: a password is required for the first BMC settings of %s", matchbox.ErrInvalid, norm)
			}
			prev, err := key.open(norm, old)
			if err != nil {
				return err
			}
			if changed := matchbox.BMCDestinationChanges(prev, s); len(changed) > 0 {
				return fmt.Errorf("%w: BMC settings of %s: %s changed, so give the password again: a stored password is only sent to the BMC address, provider, user and certificate it was given for",
					matchbox.ErrInvalid, norm, strings.Join(changed, ", "))
			}
			s.Password = prev.Password
		}
		sealed, err := key.seal(norm, s)
		if err != nil {
			return err
		}
		// A machine racked but never booted is registered by its BMC
		// settings: it can be reinstalled before its first contact.
		if machines := tx.Bucket(bucketMachines); machines.Get([]byte(norm)) == nil {
			if err := machines.Put([]byte(norm), appendMachine(nil, &matchbox.Machine{MAC: norm})); err != nil {
				return err
			}
			ch.add(kindMachine, norm)
			created = true
		}
		ch.add(kindBMC, norm)
		return bk.Put([]byte(norm), sealed)
	})
	if err == nil && created {
		db.inventory.count.Add(1)
	}
	return err
}

// MachineBMC returns a machine's BMC settings, password included (for the
// BMC client, never for an API answer).
func (db *DB) MachineBMC(_ context.Context, mac string) (matchbox.BMC, error) {
	key, err := db.secretKey()
	if err != nil {
		return matchbox.BMC{}, err
	}
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return matchbox.BMC{}, err
	}
	var out matchbox.BMC
	err = db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(bucketBMC).Get([]byte(norm))
		if data == nil {
			return fmt.Errorf("BMC settings of %s: %w", norm, matchbox.ErrNotFound)
		}
		out, err = key.open(norm, data)
		return err
	})
	return out, err
}

// DeleteMachineBMC removes a machine's BMC settings. It needs no secret
// key: nothing is opened, and DeleteMachine removes them too.
func (db *DB) DeleteMachineBMC(_ context.Context, mac string) error {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	return db.update(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketBMC)
		if bk.Get([]byte(norm)) == nil {
			return fmt.Errorf("BMC settings of machine %q: %w", norm, matchbox.ErrNotFound)
		}
		ch.add(kindBMC, norm)
		return bk.Delete([]byte(norm))
	})
}
