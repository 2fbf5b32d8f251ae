package bmc

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/bmc/bmcsim"
)

// The simulators' credentials. The password is distinctive so that a leak
// into an error message cannot go unnoticed; wrongPassword is what the
// failing tests send instead, and must not leak either.
const (
	testUser      = "admin"
	testPassword  = "pw-Secret-42"
	wrongPassword = "pw-Wrong-Guess-77"
)

// hangGuard bounds every controller call made through within: it only keeps
// a broken controller from hanging the test binary, it is no speed
// assertion.
const hangGuard = 30 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startRedfish starts a Redfish simulator and returns the BMC settings that
// reach it with the redfish provider, its certificate pinned.
func startRedfish(t *testing.T, on bool) (*bmcsim.RedfishSim, matchbox.BMC) {
	t.Helper()
	sim := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: testUser, Password: testPassword, InitialPower: on})
	return sim, matchbox.BMC{
		Address:        net.JoinHostPort(sim.Host, sim.Port),
		Provider:       "redfish",
		Username:       testUser,
		Password:       testPassword,
		TLSFingerprint: sim.Fingerprint(),
	}
}

// within runs f in a goroutine and returns how long it took and its error;
// it fails the test if f has not returned after hangGuard.
func within(t *testing.T, what string, f func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(hangGuard):
		t.Fatalf("%s: no return after %v", what, hangGuard)
		return 0, nil
	}
}

// checkCleanError checks an operation's error as the controller promises it:
// present, naming the BMC's address, on one line, and free of passwords.
func checkCleanError(t *testing.T, what string, err error, b matchbox.BMC) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	msg := err.Error()
	t.Logf("%s: %s", what, msg)
	if !strings.Contains(msg, b.Address) {
		t.Errorf("%s: error does not name the address %s: %q", what, b.Address, msg)
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("%s: error is not one line: %q", what, msg)
	}
	for _, pw := range []string{testPassword, wrongPassword, b.Password} {
		if pw != "" && strings.Contains(msg, pw) {
			t.Errorf("%s: error contains a password: %q", what, msg)
		}
	}
}

func TestNormalizePower(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want matchbox.PowerState
	}{
		{"Chassis Power is on\n", matchbox.PowerOn},
		{"Chassis Power is off", matchbox.PowerOff},
		{"chassis power is ON", matchbox.PowerOn},
		{"On", matchbox.PowerOn},
		{"Off", matchbox.PowerOff},
		{"on", matchbox.PowerOn},
		{" off ", matchbox.PowerOff},
		{"PoweringOn", matchbox.PowerOn},
		{"PoweringOff", matchbox.PowerOff},
		{"Powering Off", matchbox.PowerOff},
		{"SoftOff", matchbox.PowerOff},
		{"", matchbox.PowerUnknown},
		{"weird", matchbox.PowerUnknown},
		{"Chassis Power is", matchbox.PowerUnknown},
		{"Paused", matchbox.PowerUnknown},
	} {
		if got := NormalizePower(tc.raw); got != tc.want {
			t.Errorf("NormalizePower(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

// checkState asks the controller for the power state and compares it with
// want and with what the simulator says.
func checkState(t *testing.T, ctx context.Context, c *Controller, b matchbox.BMC, want matchbox.PowerState) {
	t.Helper()
	got, err := c.PowerState(ctx, b)
	if err != nil {
		t.Fatalf("PowerState: %v", err)
	}
	if got != want {
		t.Errorf("PowerState = %q, want %q", got, want)
	}
}

func TestRedfish(t *testing.T) {
	sim, b := startRedfish(t, false)
	ctx := testContext(t)
	c := New(Config{OperationTimeout: 10 * time.Second, ProviderTimeout: 5 * time.Second})
	// Every operation logs in and must log out again.
	sessions := func(what string) {
		t.Helper()
		if n := sim.Sessions(); n != 0 {
			t.Errorf("after %s: %d Redfish sessions left open", what, n)
		}
	}

	checkState(t, ctx, c, b, matchbox.PowerOff)
	sessions("power status")

	// Each power action, the power the system is left in, and the
	// ComputerSystem.Reset bmclib sends for it ("" for none: the system is
	// already where the action leads).
	for _, tc := range []struct {
		action    matchbox.PowerAction
		wantPower string
		wantReset string
	}{
		{matchbox.ActionOn, "On", "On"},
		{matchbox.ActionOn, "On", ""},
		{matchbox.ActionOff, "Off", "ForceOff"},
		{matchbox.ActionOff, "Off", ""},
		{matchbox.ActionOn, "On", "On"},
		// bmclib reports a Redfish soft power-off as failed even when
		// the BMC accepted it: the controller checks the state instead.
		{matchbox.ActionSoft, "Off", "GracefulShutdown"},
		{matchbox.ActionSoft, "Off", ""},
		{matchbox.ActionOn, "On", "On"},
		{matchbox.ActionReset, "On", "PowerCycle"},
	} {
		before := len(sim.Resets())
		if err := c.SetPower(ctx, b, tc.action); err != nil {
			t.Fatalf("SetPower %s (system %s): %v", tc.action, sim.Power(), err)
		}
		if got := sim.Power(); got != tc.wantPower {
			t.Errorf("after SetPower %s: simulator power %s, want %s", tc.action, got, tc.wantPower)
		}
		resets := sim.Resets()[before:]
		switch {
		case tc.wantReset == "" && len(resets) != 0:
			t.Errorf("SetPower %s sent resets %q, want none", tc.action, resets)
		case tc.wantReset != "" && (len(resets) != 1 || resets[0] != tc.wantReset):
			t.Errorf("SetPower %s sent resets %q, want [%s]", tc.action, resets, tc.wantReset)
		}
		checkState(t, ctx, c, b, NormalizePower(tc.wantPower))
		sessions("power " + string(tc.action))
	}

	for _, tc := range []struct {
		dev  matchbox.BootDevice
		efi  bool
		want bmcsim.RedfishBoot
	}{
		{matchbox.BootPXE, true, bmcsim.RedfishBoot{Target: "Pxe", Enabled: "Once", Mode: "UEFI"}},
		{matchbox.BootDisk, false, bmcsim.RedfishBoot{Target: "Hdd", Enabled: "Once", Mode: "Legacy"}},
		{matchbox.BootPXE, false, bmcsim.RedfishBoot{Target: "Pxe", Enabled: "Once", Mode: "Legacy"}},
		{matchbox.BootDisk, true, bmcsim.RedfishBoot{Target: "Hdd", Enabled: "Once", Mode: "UEFI"}},
	} {
		if err := c.SetBootDevice(ctx, b, tc.dev, tc.efi); err != nil {
			t.Fatalf("SetBootDevice %s efi=%v: %v", tc.dev, tc.efi, err)
		}
		if got := sim.Boot(); got != tc.want {
			t.Errorf("SetBootDevice %s efi=%v: simulator boot %+v, want %+v", tc.dev, tc.efi, got, tc.want)
		}
		sessions("set boot device " + string(tc.dev))
	}

	// A final power off, as the reinstall workflow leaves machines.
	if err := c.SetPower(ctx, b, matchbox.ActionOff); err != nil {
		t.Fatalf("SetPower off: %v", err)
	}
	if got := sim.Power(); got != "Off" {
		t.Errorf("after SetPower off: simulator power %s", got)
	}
	sessions("power off")
}

func TestRedfishErrors(t *testing.T) {
	// Each case does one operation; the BMC is left powered on with no
	// boot override, and a failed operation must not change that.
	ops := []struct {
		name string
		do   func(context.Context, *Controller, matchbox.BMC) error
	}{
		{"power status", func(ctx context.Context, c *Controller, b matchbox.BMC) error {
			_, err := c.PowerState(ctx, b)
			return err
		}},
		{"power off", func(ctx context.Context, c *Controller, b matchbox.BMC) error {
			return c.SetPower(ctx, b, matchbox.ActionOff)
		}},
		{"boot pxe", func(ctx context.Context, c *Controller, b matchbox.BMC) error {
			return c.SetBootDevice(ctx, b, matchbox.BootPXE, true)
		}},
	}
	unchanged := func(t *testing.T, sim *bmcsim.RedfishSim) {
		t.Helper()
		if sim.Power() != "On" || len(sim.Resets()) != 0 || sim.Boot().Target != "None" {
			t.Errorf("a failed operation changed the system: power %s, resets %q, boot %+v", sim.Power(), sim.Resets(), sim.Boot())
		}
	}
	newController := func() *Controller {
		return New(Config{OperationTimeout: 5 * time.Second, ProviderTimeout: 5 * time.Second})
	}

	t.Run("wrong password", func(t *testing.T) {
		sim, b := startRedfish(t, true)
		b.Password = wrongPassword
		ctx := testContext(t)
		c := newController()
		for _, op := range ops {
			_, err := within(t, op.name, func() error { return op.do(ctx, c, b) })
			checkCleanError(t, op.name, err, b)
		}
		unchanged(t, sim)
		if n := sim.Sessions(); n != 0 {
			t.Errorf("%d sessions open after failed logins", n)
		}
	})

	t.Run("refused", func(t *testing.T) {
		sim, b := startRedfish(t, true)
		sim.SetRefuse(503)
		ctx := testContext(t)
		c := newController()
		for _, op := range ops {
			_, err := within(t, op.name, func() error { return op.do(ctx, c, b) })
			checkCleanError(t, op.name+" (503)", err, b)
		}
		unchanged(t, sim)
		// Once the BMC serves again, so does the controller.
		sim.SetRefuse(0)
		checkState(t, ctx, c, b, matchbox.PowerOn)
		if n := sim.Sessions(); n != 0 {
			t.Errorf("%d sessions open after recovery", n)
		}
	})

	t.Run("BMC down", func(t *testing.T) {
		sim, b := startRedfish(t, true)
		sim.Close()
		ctx := testContext(t)
		c := newController()
		for _, op := range ops {
			// within fails the test if the operation does not return.
			_, err := within(t, op.name, func() error { return op.do(ctx, c, b) })
			checkCleanError(t, op.name+" (BMC down)", err, b)
		}
	})

	t.Run("invalid arguments", func(t *testing.T) {
		sim, b := startRedfish(t, true)
		ctx := testContext(t)
		c := newController()
		bad := b
		bad.Provider = "nope"
		for _, tc := range []struct {
			name string
			err  error
		}{
			{"power explode", c.SetPower(ctx, b, "explode")},
			{"power empty", c.SetPower(ctx, b, "")},
			{"boot cdrom", c.SetBootDevice(ctx, b, "cdrom", false)},
			{"provider nope: power status", func() error { _, err := c.PowerState(ctx, bad); return err }()},
			{"provider nope: power on", c.SetPower(ctx, bad, matchbox.ActionOn)},
			{"provider nope: boot pxe", c.SetBootDevice(ctx, bad, matchbox.BootPXE, true)},
		} {
			if !errors.Is(tc.err, matchbox.ErrInvalid) {
				t.Errorf("%s: error %v, want matchbox.ErrInvalid", tc.name, tc.err)
			}
		}
		unchanged(t, sim)
	})
}

func TestProviderPreference(t *testing.T) {
	ctx := testContext(t)
	// ipmitool gets nothing from the Redfish simulator's port (UDP, where
	// only TCP listens): a short provider timeout keeps its failure quick.
	c := New(Config{OperationTimeout: 15 * time.Second, ProviderTimeout: 3 * time.Second})

	for _, pref := range []string{"redfish", "redfish,ipmitool", "ipmitool,redfish"} {
		t.Run(pref, func(t *testing.T) {
			// bmclib's Open tries every preferred provider at once and
			// keeps those that connected, in the order preferred: ipmitool,
			// finding no BMC, is dropped, and redfish serves whatever its
			// rank, so both orders work against a Redfish-only BMC.
			sim, b := startRedfish(t, false)
			b.Provider = pref
			took, err := within(t, "power on", func() error { return c.SetPower(ctx, b, matchbox.ActionOn) })
			if err != nil {
				t.Fatalf("SetPower on: %v", err)
			}
			t.Logf("power on with %s: %v", pref, took)
			if got := sim.Power(); got != "On" {
				t.Errorf("simulator power %s, want On", got)
			}
			checkState(t, ctx, c, b, matchbox.PowerOn)
			if n := sim.Sessions(); n != 0 {
				t.Errorf("%d sessions left open", n)
			}
		})
	}
}

// startIPMI starts an IPMI simulator (Debian's ipmi_sim) and returns the
// BMC settings that reach it with the ipmitool provider.
func startIPMI(t *testing.T, on bool) (*bmcsim.IPMISim, matchbox.BMC) {
	t.Helper()
	if err := bmcsim.IPMIAvailable(); err != nil {
		t.Skipf("IPMI tests need ipmi_sim and ipmitool: %v", err)
	}
	sim := bmcsim.StartIPMI(t, bmcsim.IPMIConfig{User: testUser, Password: testPassword, InitialPower: on})
	return sim, matchbox.BMC{
		Address:  sim.Addr,
		Provider: "ipmitool",
		Username: testUser,
		Password: testPassword,
	}
}

func TestIPMI(t *testing.T) {
	sim, b := startIPMI(t, false)
	ctx := testContext(t)
	// The default cipher suite (3) is the one ipmi_sim implements.
	c := New(Config{OperationTimeout: 15 * time.Second, ProviderTimeout: 10 * time.Second})
	power := func(on bool) string {
		if on {
			return "On"
		}
		return "Off"
	}

	checkState(t, ctx, c, b, matchbox.PowerOff)

	for _, tc := range []struct {
		action matchbox.PowerAction
		wantOn bool
	}{
		{matchbox.ActionOn, true},
		{matchbox.ActionOn, true},
		{matchbox.ActionOff, false},
		{matchbox.ActionOff, false},
		{matchbox.ActionOn, true},
		{matchbox.ActionSoft, false},
		{matchbox.ActionSoft, false},
		{matchbox.ActionOn, true},
		{matchbox.ActionReset, true},
	} {
		if err := c.SetPower(ctx, b, tc.action); err != nil {
			t.Fatalf("SetPower %s (system %s): %v\n%s", tc.action, power(sim.Power()), err, sim.Log())
		}
		if got := sim.Power(); got != tc.wantOn {
			t.Errorf("after SetPower %s: simulator power %s, want %s", tc.action, power(got), power(tc.wantOn))
		}
		checkState(t, ctx, c, b, NormalizePower(power(tc.wantOn)))
	}

	for _, tc := range []struct {
		dev matchbox.BootDevice
		efi bool
	}{
		{matchbox.BootPXE, true},
		{matchbox.BootDisk, false},
		{matchbox.BootPXE, false},
	} {
		if err := c.SetBootDevice(ctx, b, tc.dev, tc.efi); err != nil {
			t.Fatalf("SetBootDevice %s efi=%v: %v\n%s", tc.dev, tc.efi, err, sim.Log())
		}
		if got := sim.BootDevice(); got != string(tc.dev) {
			t.Errorf("SetBootDevice %s efi=%v: simulator boot device %q", tc.dev, tc.efi, got)
		}
		// One time only, with the boot type asked for.
		o, ok := sim.BootOptions()
		if !ok || o.Device != string(tc.dev) || !o.Valid || o.Persistent || o.EFI != tc.efi {
			t.Errorf("SetBootDevice %s efi=%v: simulator boot options %+v (found %v)\n%s", tc.dev, tc.efi, o, ok, sim.Log())
		}
	}

	// The Redfish provider finds no BMC at this address (nothing listens
	// on its TCP port): a preference for it falls back to ipmitool.
	pref := b
	pref.Provider = "redfish,ipmitool"
	checkState(t, ctx, c, pref, matchbox.PowerOn)

	type op struct {
		name string
		do   func(matchbox.BMC) error
	}
	status := op{"power status", func(b matchbox.BMC) error { _, err := c.PowerState(ctx, b); return err }}
	off := op{"power off", func(b matchbox.BMC) error { return c.SetPower(ctx, b, matchbox.ActionOff) }}
	boot := op{"boot pxe", func(b matchbox.BMC) error { return c.SetBootDevice(ctx, b, matchbox.BootPXE, true) }}
	// ipmitool retries a failing session until the provider timeout: the
	// error must still come back within the operation deadline.
	failing := func(what string, b matchbox.BMC, ops ...op) {
		t.Helper()
		for _, op := range ops {
			// within fails the test if the operation does not return;
			// how long it took is logged, not asserted (a shared machine
			// is noisy).
			took, err := within(t, op.name, func() error { return op.do(b) })
			checkCleanError(t, op.name+" ("+what+")", err, b)
			t.Logf("%s (%s) failed after %v", op.name, what, took.Round(time.Millisecond))
		}
	}

	wrong := b
	wrong.Password = wrongPassword
	failing("wrong password", wrong, status, off, boot)
	if !sim.Power() {
		t.Errorf("a failed operation changed the power")
	}

	// Every operation fails the same way, connecting, after the whole
	// provider timeout: one is enough.
	sim.Stop()
	failing("BMC down", b, status)
}
