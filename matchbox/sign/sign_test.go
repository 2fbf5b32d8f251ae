package sign

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// writeKeyRing generates a key and writes its private key ring to a file,
// armored or binary, optionally protected by a passphrase.
func writeKeyRing(t *testing.T, armored bool, passphrase string) (string, *openpgp.Entity) {
	t.Helper()
	e, err := openpgp.NewEntity("matchbox test", "", "test@example.invalid", nil)
	if err != nil {
		t.Fatal(err)
	}
	if passphrase != "" {
		if err := e.EncryptPrivateKeys([]byte(passphrase), nil); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	w := &buf
	var aw interface{ Close() error }
	if armored {
		a, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
		if err != nil {
			t.Fatal(err)
		}
		aw = a
		if err := e.SerializePrivateWithoutSigning(a, nil); err != nil {
			t.Fatal(err)
		}
	} else if err := e.SerializePrivateWithoutSigning(w, nil); err != nil {
		t.Fatal(err)
	}
	if aw != nil {
		aw.Close()
	}
	path := filepath.Join(t.TempDir(), "secring")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, e
}

func TestLoadKeyRingAndSign(t *testing.T) {
	msg := []byte("#!ipxe\nkernel /assets/vmlinuz\nboot\n")
	for _, tc := range []struct {
		name       string
		armored    bool
		protect    string
		passphrase string
		wantErr    string
	}{
		{name: "binary", armored: false},
		{name: "armored", armored: true},
		{name: "protected", armored: true, protect: "s3cret", passphrase: "s3cret"},
		{name: "protected binary", armored: false, protect: "s3cret", passphrase: "s3cret"},
		{name: "missing passphrase", armored: true, protect: "s3cret", wantErr: "MATCHBOX_PASSPHRASE"},
		{name: "wrong passphrase", armored: true, protect: "s3cret", passphrase: "nope", wantErr: "decrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, e := writeKeyRing(t, tc.armored, tc.protect)
			s, err := LoadKeyRing(path, []byte(tc.passphrase))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var sig, asc bytes.Buffer
			if err := s.Sign(&sig, msg); err != nil {
				t.Fatal(err)
			}
			if err := s.SignArmored(&asc, msg); err != nil {
				t.Fatal(err)
			}
			// Verify against the public key alone, as a machine would.
			ring := openpgp.EntityList{e}
			if _, err := openpgp.CheckDetachedSignature(ring, bytes.NewReader(msg), bytes.NewReader(sig.Bytes()), nil); err != nil {
				t.Errorf("binary signature: %v", err)
			}
			if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(msg), bytes.NewReader(asc.Bytes()), nil); err != nil {
				t.Errorf("armored signature: %v", err)
			}
			if err := s.Verify(append(msg, '!'), sig.Bytes()); err == nil {
				t.Error("signature verifies a changed message")
			}
		})
	}
}

func TestLoadKeyRingErrors(t *testing.T) {
	dir := t.TempDir()
	pub := filepath.Join(dir, "pub.asc")
	e, err := openpgp.NewEntity("pub only", "", "pub@example.invalid", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a, _ := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err := e.Serialize(a); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := os.WriteFile(pub, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		filepath.Join(dir, "missing"): "no such file",
		pub:                           "no private part",
		garbage:                       "key ring",
	} {
		if _, err := LoadKeyRing(path, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", filepath.Base(path), err, want)
		}
	}
}
