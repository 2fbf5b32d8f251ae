package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// TestSignedEndpoints serves with -key-ring-path and a passphrase from
// MATCHBOX_PASSPHRASE, and checks signatures with the public key only.
func TestSignedEndpoints(t *testing.T) {
	e, err := openpgp.NewEntity("matchbox e2e", "", "e2e@example.invalid", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.EncryptPrivateKeys([]byte("pass phrase"), nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SerializePrivateWithoutSigning(a, nil); err != nil {
		t.Fatal(err)
	}
	a.Close()
	ring := filepath.Join(t.TempDir(), "secring.asc")
	if err := os.WriteFile(ring, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	dir := labDataDir(t)
	s := startServer(t, []string{"MATCHBOX_PASSPHRASE=pass phrase"},
		"-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-key-ring-path", ring)
	keys := openpgp.EntityList{e}
	for _, path := range []string{"/ipxe", "/ignition", "/metadata", "/boot.ipxe"} {
		q := "?mac=52:54:00:00:00:01"
		code, body := fetch(t, s.url+path+q)
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		if code, sig := fetch(t, s.url+path+".sig"+q); code != 200 {
			t.Errorf("%s.sig: %d", path, code)
		} else if _, err := openpgp.CheckDetachedSignature(keys, bytes.NewReader([]byte(body)), bytes.NewReader([]byte(sig)), nil); err != nil {
			t.Errorf("%s.sig does not verify: %v", path, err)
		}
		if code, asc := fetch(t, s.url+path+".asc"+q); code != 200 {
			t.Errorf("%s.asc: %d", path, code)
		} else if _, err := openpgp.CheckArmoredDetachedSignature(keys, bytes.NewReader([]byte(body)), bytes.NewReader([]byte(asc)), nil); err != nil {
			t.Errorf("%s.asc does not verify: %v", path, err)
		}
	}

	// Without the passphrase the server refuses to start, saying why.
	code, out := runCLI(t, nil, "serve", "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m2.db"), "-key-ring-path", ring)
	if code != 1 || !bytes.Contains([]byte(out), []byte("MATCHBOX_PASSPHRASE")) {
		t.Errorf("without passphrase: exit %d, %s", code, out)
	}
}
