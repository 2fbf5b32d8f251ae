package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// The secret key file is created once (mode 0600) and read back after;
// what it seals is checked by the conformance suite.
func TestSecretKeyFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secret.key")
	key, created, err := storage.LoadOrCreateSecretKey(keyFile)
	if err != nil || !created || key == nil {
		t.Fatalf("create key: %v, created %v", err, created)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode().Perm())
	}
	again, created, err := storage.LoadOrCreateSecretKey(keyFile)
	if err != nil || created || again == nil {
		t.Fatalf("reload key: %v, created %v", err, created)
	}
	// The key read back opens what the new one sealed.
	backend := storage.NewMemoryBackend()
	sealer, opener := storage.OpenMemory(backend), storage.OpenMemory(backend)
	sealer.SetSecretKey(key)
	opener.SetSecretKey(again)
	b := matchbox.BMC{Address: "10.0.0.9", Password: "pw"}
	if err := sealer.SetMachineBMC(t.Context(), "52:54:00:00:00:01", b); err != nil {
		t.Fatal(err)
	}
	if got, err := opener.MachineBMC(t.Context(), "52:54:00:00:00:01"); err != nil || got != b {
		t.Errorf("opened with the key read back: %+v, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.key"), []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := storage.LoadOrCreateSecretKey(filepath.Join(dir, "bad.key")); err == nil || !strings.Contains(err.Error(), "64 hexadecimal") {
		t.Errorf("bad key file: %v", err)
	}
}
