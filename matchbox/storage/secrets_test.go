package storage_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

func TestBMCSettingsSealed(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secret.key")
	key, created, err := storage.LoadOrCreateSecretKey(keyFile)
	if err != nil || !created {
		t.Fatalf("create key: %v, created %v", err, created)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode().Perm())
	}
	if again, created, err := storage.LoadOrCreateSecretKey(keyFile); err != nil || created || again == nil {
		t.Fatalf("reload key: %v, created %v", err, created)
	}
	dbPath := filepath.Join(dir, "m.db")
	db := openBolt(t, dbPath)
	ctx := context.Background()
	const mac, password = "52:54:00:00:00:01", "s3cret-BMC-pa55"
	b := matchbox.BMC{Address: "10.0.0.9:623", Provider: "ipmitool", Username: "admin", Password: password}
	// BMC settings register a machine that never booted.
	if err := db.SetMachineBMC(ctx, key, "52:54:00:00:00:99", b); err != nil {
		t.Errorf("BMC of an unknown machine: %v", err)
	}
	if m, err := db.GetMachine(ctx, "52:54:00:00:00:99"); err != nil || m.MAC != "52:54:00:00:00:99" {
		t.Errorf("machine registered by its BMC settings: %+v, %v", m, err)
	}
	if _, err := db.RecordEvents(ctx, []matchbox.Event{{MAC: mac, Kind: matchbox.EventDHCPDiscover}}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetMachineBMC(ctx, key, mac, matchbox.BMC{Address: "10.0.0.9"}); !errors.Is(err, matchbox.ErrInvalid) {
		t.Errorf("first settings without a password: %v", err)
	}
	if err := db.SetMachineBMC(ctx, key, mac, b); err != nil {
		t.Fatal(err)
	}
	// An update without a password keeps the stored one for the same
	// destination only: another address, provider or user needs it again,
	// and a refused update changes nothing.
	if err := db.SetMachineBMC(ctx, key, mac, matchbox.BMC{Address: "10.0.0.10", Provider: "redfish", Username: "root"}); !errors.Is(err, matchbox.ErrInvalid) ||
		!strings.Contains(err.Error(), "address, provider, username changed") || !strings.Contains(err.Error(), "password") {
		t.Errorf("moving the BMC without its password: %v", err)
	}
	if got, err := db.MachineBMC(ctx, key, mac); err != nil || got != b {
		t.Errorf("after a refused update: %+v, %v", got, err)
	}
	if err := db.SetMachineBMC(ctx, key, mac, matchbox.BMC{Address: "10.0.0.9:623", Provider: "IPMItool", Username: "admin"}); err != nil {
		t.Fatal(err)
	}
	if got, err := db.MachineBMC(ctx, key, mac); err != nil || got.Password != password {
		t.Errorf("update to the same destination without a password: %+v, %v", got, err)
	}
	if err := db.SetMachineBMC(ctx, key, mac, matchbox.BMC{Address: "10.0.0.10", Provider: "redfish", Username: "root", Password: "new-" + password}); err != nil {
		t.Fatal(err)
	}
	got, err := db.MachineBMC(ctx, key, mac)
	if err != nil || got.Password != "new-"+password || got.Address != "10.0.0.10" || got.Provider != "redfish" {
		t.Fatalf("MachineBMC = %+v, %v", got, err)
	}
	// A pin is stored in its canonical form.
	pin := strings.Repeat("AB:", 31) + "AB"
	if err := db.SetMachineBMC(ctx, key, mac, matchbox.BMC{Address: "10.0.0.10", Provider: "redfish", Username: "root", Password: password, TLSFingerprint: pin}); err != nil {
		t.Fatal(err)
	}
	if got, err := db.MachineBMC(ctx, key, mac); err != nil || got.TLSFingerprint != strings.Repeat("ab", 32) {
		t.Errorf("pinned: %+v, %v", got, err)
	}
	for _, bad := range []matchbox.BMC{{Address: ""}, {Address: "a b"}, {Address: "10.0.0.1", Provider: "telnet"},
		{Address: "10.0.0.1:http"}, {Address: "10.0.0.1:70000"},
		{Address: "10.0.0.1", TLSFingerprint: "abc"},
		{Address: "10.0.0.1", TLSFingerprint: strings.Repeat("ab", 32), TLSInsecure: true},
		{Address: "10.0.0.1", Provider: "ipmitool", TLSInsecure: true}} {
		bad.Password = password
		if err := db.SetMachineBMC(ctx, key, mac, bad); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("SetMachineBMC(%+v): %v", bad, err)
		}
	}
	// Another key does not open it.
	other, _, _ := storage.LoadOrCreateSecretKey(filepath.Join(dir, "other.key"))
	if _, err := db.MachineBMC(ctx, other, mac); err == nil || !strings.Contains(err.Error(), "secret key") {
		t.Errorf("MachineBMC with another key: %v", err)
	}
	db.Close()
	// The password is nowhere in the database file.
	raw, _ := os.ReadFile(dbPath)
	if bytes.Contains(raw, []byte(password)) {
		t.Error("the BMC password is in the database file in the clear")
	}
	os.WriteFile(filepath.Join(dir, "bad.key"), []byte("not hex\n"), 0o600)
	if _, _, err := storage.LoadOrCreateSecretKey(filepath.Join(dir, "bad.key")); err == nil || !strings.Contains(err.Error(), "64 hexadecimal") {
		t.Errorf("bad key file: %v", err)
	}
	// Deleting the machine deletes its BMC settings.
	db = openBolt(t, dbPath)
	if err := db.DeleteMachine(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MachineBMC(ctx, key, mac); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("BMC settings of a deleted machine: %v", err)
	}
}
