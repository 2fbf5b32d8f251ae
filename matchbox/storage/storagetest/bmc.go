package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// bmcOf is machine i's BMC settings.
func bmcOf(i int, password string) matchbox.BMC {
	return matchbox.BMC{Address: fmt.Sprintf("10.0.1.%d:623", i), Provider: "ipmitool", Username: "admin", Password: password}
}

const bmcPassword = "s3cret-BMC-pa55"

func runBMC(t *testing.T, h Harness) {
	t.Run("Settings", func(t *testing.T) {
		s, _ := openKeyed(t, h)
		ctx := t.Context()
		b := bmcOf(1, bmcPassword)
		// BMC settings register a machine that never booted.
		if err := s.SetMachineBMC(ctx, mac(99), b); err != nil {
			t.Errorf("BMC of an unknown machine: %v", err)
		}
		if m, err := s.GetMachine(ctx, mac(99)); err != nil || m.MAC != mac(99) || s.MachineCount() != 1 {
			t.Errorf("machine registered by its BMC settings: %+v, %v, count %d", m, err, s.MachineCount())
		}
		if _, err := s.MachineBMC(ctx, mac(1)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("MachineBMC of a machine without: %v, want ErrNotFound", err)
		}
		record(t, s, discover(1))
		if err := s.SetMachineBMC(ctx, mac(1), matchbox.BMC{Address: "10.0.0.9"}); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("first settings without a password: %v, want ErrInvalid", err)
		}
		if err := s.SetMachineBMC(ctx, mac(1), b); err != nil {
			t.Fatal(err)
		}
		// An update without a password keeps the stored one for the same
		// destination only: another address, provider or user needs it
		// again, and a refused update changes nothing.
		if err := s.SetMachineBMC(ctx, mac(1), matchbox.BMC{Address: "10.0.0.10", Provider: "redfish", Username: "root"}); !errors.Is(err, matchbox.ErrInvalid) ||
			!strings.Contains(err.Error(), "password") {
			t.Errorf("moving the BMC without its password: %v", err)
		}
		if got, err := s.MachineBMC(ctx, mac(1)); err != nil || got != b {
			t.Errorf("after a refused update: %+v, %v", got, err)
		}
		same := bmcOf(1, "")
		same.Provider = "IPMItool"
		if err := s.SetMachineBMC(ctx, mac(1), same); err != nil {
			t.Fatal(err)
		}
		if got, err := s.MachineBMC(ctx, mac(1)); err != nil || got.Password != bmcPassword {
			t.Errorf("update to the same destination without a password: %+v, %v", got, err)
		}
		pinned := matchbox.BMC{Address: "10.0.0.10", Provider: "redfish", Username: "root", Password: "new-" + bmcPassword, TLSFingerprint: strings.Repeat("AB:", 31) + "AB"}
		if err := s.SetMachineBMC(ctx, mac(1), pinned); err != nil {
			t.Fatal(err)
		}
		pinned.TLSFingerprint = strings.Repeat("ab", 32) // stored in its canonical form
		if got, err := s.MachineBMC(ctx, "52-54-00-00-00-01"); err != nil || got != pinned {
			t.Errorf("MachineBMC = %+v, %v; want %+v", got, err, pinned)
		}
		for _, bad := range []matchbox.BMC{{Address: ""}, {Address: "a b"}, {Address: "10.0.0.1", Provider: "telnet"},
			{Address: "10.0.0.1:http"}, {Address: "10.0.0.1:70000"}, {Address: "10.0.0.1", TLSFingerprint: "abc"},
			{Address: "10.0.0.1", TLSFingerprint: strings.Repeat("ab", 32), TLSInsecure: true},
			{Address: "10.0.0.1", Provider: "ipmitool", TLSInsecure: true}} {
			bad.Password = bmcPassword
			if err := s.SetMachineBMC(ctx, mac(1), bad); !errors.Is(err, matchbox.ErrInvalid) {
				t.Errorf("SetMachineBMC(%+v): %v, want ErrInvalid", bad, err)
			}
		}
		if err := s.DeleteMachineBMC(ctx, mac(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.MachineBMC(ctx, mac(1)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("MachineBMC after DeleteMachineBMC: %v, want ErrNotFound", err)
		}
		if err := s.DeleteMachineBMC(ctx, mac(1)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("DeleteMachineBMC twice: %v, want ErrNotFound", err)
		}
		if _, err := s.GetMachine(ctx, mac(1)); err != nil {
			t.Errorf("the machine after DeleteMachineBMC: %v", err)
		}
	})

	// Passwords are sealed: the storage never holds them in the clear.
	t.Run("Sealed", func(t *testing.T) {
		if h.Raw == nil {
			t.Skip("the harness cannot read the raw storage")
		}
		s, _ := openKeyed(t, h)
		for i := range 3 {
			if err := s.SetMachineBMC(t.Context(), mac(i), bmcOf(i, bmcPassword)); err != nil {
				t.Fatal(err)
			}
		}
		raw := h.Raw(t)
		if !bytes.Contains(raw, []byte(mac(1))) {
			t.Fatalf("the raw storage (%d bytes) does not hold the machine's key: the check reads the wrong thing", len(raw))
		}
		if bytes.Contains(raw, []byte(bmcPassword)) {
			t.Error("a BMC password is in the storage in the clear")
		}
	})

	t.Run("NoKey", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		if err := s.SetMachineBMC(ctx, mac(1), bmcOf(1, bmcPassword)); err == nil || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("SetMachineBMC without a key: %v, want an error naming the missing secret key", err)
		}
		if _, err := s.GetMachine(ctx, mac(1)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("a refused SetMachineBMC registered the machine: %v", err)
		}
		if _, err := s.MachineBMC(ctx, mac(1)); err == nil || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("MachineBMC without a key: %v, want an error naming the missing secret key", err)
		}
	})

	// Settings sealed under one key do not open under another (a store
	// given another key file after a restart, or a replica with another).
	t.Run("WrongKey", func(t *testing.T) {
		other := h.Reopen
		if h.Replica != nil {
			other = h.Replica
		}
		if other == nil {
			t.Skip("no second store over the same storage")
		}
		s, _ := openKeyed(t, h)
		ctx := t.Context()
		if err := s.SetMachineBMC(ctx, mac(1), bmcOf(1, bmcPassword)); err != nil {
			t.Fatal(err)
		}
		s2 := other(t)
		s2.SetSecretKey(newKey(t))
		if _, err := s2.MachineBMC(ctx, mac(1)); err == nil || errors.Is(err, matchbox.ErrNotFound) || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("MachineBMC with another key: %v, want an error naming the key", err)
		}
		// Nor does an update keeping the stored password go through.
		if err := s2.SetMachineBMC(ctx, mac(1), bmcOf(1, "")); err == nil || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("SetMachineBMC keeping a password sealed with another key: %v", err)
		}
	})
}

// hasBMC checks a machine's stored BMC settings.
func hasBMC(t *testing.T, s storage.Store, i int, want matchbox.BMC) {
	t.Helper()
	if got, err := s.MachineBMC(t.Context(), mac(i)); err != nil || got != want {
		t.Errorf("MachineBMC(%s) = %+v, %v; want %+v", mac(i), got, err, want)
	}
}
