package storage

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
)

// BMC settings sealed before the TLS settings existed open with neither
// (their certificate is then verified against the trusted CAs), and keep
// their password only for the destination they had: pinning a
// certificate or skipping its verification needs the password again.
func TestBMCSettingsStoredBeforeTLS(t *testing.T) {
	ctx := context.Background()
	db, err := OpenBolt(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := NewSecretKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	db.SetSecretKey(key)
	const mac = "52:54:00:00:00:41"
	// The record exactly as the earlier code wrote it.
	legacy := []byte(`{"address":"10.0.0.41:443","provider":"redfish","username":"admin","password":"old-pw"}`)
	nonce := make([]byte, key.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	sealed := key.aead.Seal(nonce, nonce, legacy, []byte(mac))
	if err := db.kv.Update(func(tx kvTx) error { return tx.Bucket(bucketBMC).Put([]byte(mac), sealed) }); err != nil {
		t.Fatal(err)
	}
	want := matchbox.BMC{Address: "10.0.0.41:443", Provider: "redfish", Username: "admin", Password: "old-pw"}
	got, err := db.MachineBMC(ctx, mac)
	if err != nil || got != want {
		t.Fatalf("legacy record: %+v, %v", got, err)
	}
	for _, change := range []matchbox.BMC{
		{Address: "10.0.0.41:443", Provider: "redfish", Username: "admin", TLSFingerprint: strings.Repeat("0f", 32)},
		{Address: "10.0.0.41:443", Provider: "redfish", Username: "admin", TLSInsecure: true},
	} {
		if err := db.SetMachineBMC(ctx, mac, change); !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), "tls_") {
			t.Errorf("trusting another certificate without the password: %v", err)
		}
	}
	if got, err := db.MachineBMC(ctx, mac); err != nil || got != want {
		t.Errorf("after refused updates: %+v, %v", got, err)
	}
	pinned := matchbox.BMC{Address: "10.0.0.41:443", Provider: "redfish", Username: "admin", Password: "old-pw", TLSFingerprint: strings.Repeat("0f", 32)}
	if err := db.SetMachineBMC(ctx, mac, pinned); err != nil {
		t.Fatal(err)
	}
	if got, err := db.MachineBMC(ctx, mac); err != nil || got != pinned {
		t.Errorf("pinned with the password: %+v, %v", got, err)
	}
}
