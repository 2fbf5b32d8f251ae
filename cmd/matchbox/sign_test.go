package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// TestSignedEndpoints serves with -key-ring-path and a passphrase from
// MATCHBOX_PASSPHRASE, and checks signatures with the public key only.
func TestSignedEndpoints(t *testing.T) {
	ring, keys := testKeyRing(t, "pass phrase")
	dir := labDataDir(t)
	s := startServer(t, []string{"MATCHBOX_PASSPHRASE=pass phrase"},
		"-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-key-ring-path", ring)
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
