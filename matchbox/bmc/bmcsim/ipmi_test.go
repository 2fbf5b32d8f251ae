package bmcsim

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
)

const (
	testIPMIUser = "admin"
	testIPMIPass = "s3cret-ipmi"
)

// newIPMIClient returns a bmclib client restricted to the ipmitool provider,
// pointed at sim with cipher suite 3.
func newIPMIClient(sim *IPMISim, pass string, perProvider time.Duration) *bmclib.Client {
	c := bmclib.NewClient(sim.Host, sim.User, pass,
		bmclib.WithIpmitoolPort(sim.Port),
		bmclib.WithIpmitoolCipherSuite("3"),
		bmclib.WithPerProviderTimeout(perProvider))
	c.Registry.Drivers = c.Registry.For("ipmitool")
	return c
}

// waitIPMI polls cond every 50ms until it is true, failing the test after
// timeout.
func waitIPMI(t *testing.T, sim *IPMISim, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, sim.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readFileString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestIPMIPowerAndBootDevice(t *testing.T) {
	hookDir := t.TempDir()
	hookLog := filepath.Join(hookDir, "hooks")
	fds := filepath.Join(hookDir, "fds")
	sim := StartIPMI(t, IPMIConfig{
		User:     testIPMIUser,
		Password: testIPMIPass,
		// The power-on hook also records its open descriptors, to check that
		// it does not inherit ipmi_sim's UDP socket.
		PowerOn:  "ls -l /proc/$$/fd >" + ipmiShellQuote(fds) + "; echo on >>" + ipmiShellQuote(hookLog),
		PowerOff: "echo off >>" + ipmiShellQuote(hookLog),
	})
	if sim.Power() {
		t.Fatal("Power() = true at start with InitialPower false")
	}
	if d := sim.BootDevice(); d != "" {
		t.Fatalf("BootDevice() = %q at start, want \"\"", d)
	}
	if o, ok := sim.BootOptions(); ok {
		t.Fatalf("BootOptions() = %+v at start, want none", o)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newIPMIClient(sim, testIPMIPass, 10*time.Second)
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open: %v\n%s", err, sim.Log())
	}
	defer c.Close(ctx)

	wantState := func(want string) {
		t.Helper()
		state, err := c.GetPowerState(ctx)
		if err != nil {
			t.Fatalf("GetPowerState: %v\n%s", err, sim.Log())
		}
		if got := strings.TrimSpace(state); got != "Chassis Power is "+want {
			t.Fatalf("GetPowerState = %q, want %q", state, "Chassis Power is "+want)
		}
	}
	setPower := func(state string) {
		t.Helper()
		ok, err := c.SetPowerState(ctx, state)
		if err != nil || !ok {
			t.Fatalf("SetPowerState(%q) = %v, %v\n%s", state, ok, err, sim.Log())
		}
	}
	wantHooks := func(want string) {
		t.Helper()
		waitIPMI(t, sim, "hooks "+strings.Join(strings.Fields(want), ","), 10*time.Second, func() bool {
			return readFileString(hookLog) == want
		})
	}

	wantState("off")

	setPower("on")
	if !sim.Power() {
		t.Fatalf("Power() = false after SetPowerState(on)\n%s", sim.Log())
	}
	wantHooks("on\n")
	wantState("on")
	if strings.Contains(readFileString(fds), "socket:") {
		t.Errorf("power-on hook inherited a socket:\n%s", readFileString(fds))
	}

	// Already on: bmclib checks first and sends nothing; a raw power on
	// runs no hook either (hook runs are numbered synchronously).
	seq := sim.readState(ipmiHookSeqFile)
	setPower("on")
	if out, err := sim.Ipmitool(ctx, "chassis", "power", "on"); err != nil {
		t.Fatalf("raw power on: %v", err)
	} else if !strings.HasPrefix(out, "Chassis Power Control: Up/On") {
		t.Fatalf("raw power on: %q", out)
	}
	if got := sim.readState(ipmiHookSeqFile); got != seq {
		t.Errorf("power on while on started hook run %s (was %s)", got, seq)
	}

	for _, tc := range []struct {
		dev             string
		persistent, efi bool
	}{
		{"pxe", false, true},
		{"disk", true, false},
		{"pxe", true, true},
		{"disk", false, false},
	} {
		ok, err := c.SetBootDevice(ctx, tc.dev, tc.persistent, tc.efi)
		if err != nil || !ok {
			t.Fatalf("SetBootDevice(%q, %v, %v) = %v, %v\n%s", tc.dev, tc.persistent, tc.efi, ok, err, sim.Log())
		}
		if got := sim.BootDevice(); got != tc.dev {
			t.Errorf("after SetBootDevice(%q): BootDevice() = %q", tc.dev, got)
		}
		o, found := sim.BootOptions()
		if !found || o.Device != tc.dev || !o.Valid || o.Persistent != tc.persistent || o.EFI != tc.efi {
			t.Errorf("after SetBootDevice(%q, persistent=%v, efi=%v): BootOptions() = %+v, %v",
				tc.dev, tc.persistent, tc.efi, o, found)
		}
	}

	// ipmi_sim implements a cycle as off, then on one second later.
	setPower("cycle")
	wantHooks("on\noff\non\n")
	waitIPMI(t, sim, "power on after cycle", 5*time.Second, sim.Power)

	// Without a Reset hook, a hard reset runs PowerOff then PowerOn.
	setPower("reset")
	wantHooks("on\noff\non\noff\non\n")
	if !sim.Power() {
		t.Error("Power() = false after reset")
	}

	setPower("off")
	if sim.Power() {
		t.Fatalf("Power() = true after SetPowerState(off)\n%s", sim.Log())
	}
	wantHooks("on\noff\non\noff\non\noff\n")
	wantState("off")

	// A soft shutdown while off changes nothing.
	setPower("soft")
	if sim.Power() {
		t.Error("Power() = true after soft off")
	}
}

func TestIPMIInitialPowerAndRestart(t *testing.T) {
	sim := StartIPMI(t, IPMIConfig{User: testIPMIUser, Password: testIPMIPass, InitialPower: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !sim.Power() {
		t.Fatal("Power() = false with InitialPower true")
	}
	if out, err := sim.Ipmitool(ctx, "chassis", "bootdev", "pxe"); err != nil {
		t.Fatalf("bootdev pxe: %v", err)
	} else if !strings.Contains(out, "Set Boot Device to pxe") {
		t.Fatalf("bootdev pxe: %q", out)
	}
	addr := sim.Addr

	sim.Restart(t)
	if sim.Addr != addr {
		t.Errorf("Addr after Restart = %s, want %s", sim.Addr, addr)
	}
	if !sim.Running() {
		t.Error("Running() = false after Restart")
	}
	c := newIPMIClient(sim, testIPMIPass, 10*time.Second)
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open after Restart: %v\n%s", err, sim.Log())
	}
	state, err := c.GetPowerState(ctx)
	if err != nil || !strings.Contains(state, "Chassis Power is on") {
		t.Errorf("GetPowerState after Restart = %q, %v", state, err)
	}
	if got := sim.BootDevice(); got != "pxe" {
		t.Errorf("BootDevice() after Restart = %q, want pxe", got)
	}
	if o, ok := sim.BootOptions(); !ok || o.Device != "pxe" || o.Persistent || o.EFI {
		t.Errorf("BootOptions() after Restart = %+v, %v", o, ok)
	}
}

func TestIPMIResetHookAndSoftOff(t *testing.T) {
	hookLog := filepath.Join(t.TempDir(), "hooks")
	sim := StartIPMI(t, IPMIConfig{
		User:         testIPMIUser,
		Password:     testIPMIPass,
		InitialPower: true,
		PowerOn:      "echo on >>" + ipmiShellQuote(hookLog),
		PowerOff:     "echo off >>" + ipmiShellQuote(hookLog),
		Reset:        "echo reset >>" + ipmiShellQuote(hookLog),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newIPMIClient(sim, testIPMIPass, 10*time.Second)
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open: %v\n%s", err, sim.Log())
	}
	for _, state := range []string{"reset", "soft"} {
		if ok, err := c.SetPowerState(ctx, state); err != nil || !ok {
			t.Fatalf("SetPowerState(%q) = %v, %v\n%s", state, ok, err, sim.Log())
		}
	}
	if sim.Power() {
		t.Error("Power() = true after soft off")
	}
	waitIPMI(t, sim, "reset and power-off hooks", 10*time.Second, func() bool {
		return readFileString(hookLog) == "reset\noff\n"
	})
}

func TestIPMIWrongPassword(t *testing.T) {
	sim := StartIPMI(t, IPMIConfig{User: testIPMIUser, Password: testIPMIPass})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c := newIPMIClient(sim, "wrong-password", 10*time.Second)
	err := c.Open(ctx)
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	t.Logf("Open with wrong password: %v", err)
	if !strings.Contains(err.Error(), "Unable to establish IPMI v2 / RMCP+ session") {
		t.Errorf("error does not carry ipmitool's message: %v", err)
	}
	// The BMC refuses the session: ipmitool gives up by itself rather
	// than waiting for an answer until the per-provider timeout.
	if strings.Contains(err.Error(), "deadline exceeded") || ctx.Err() != nil {
		t.Errorf("a wrong password ran into a timeout instead of a refusal: %v", err)
	}

	// Unknown user: same failure.
	cu := bmclib.NewClient(sim.Host, "nobody", testIPMIPass,
		bmclib.WithIpmitoolPort(sim.Port), bmclib.WithIpmitoolCipherSuite("3"),
		bmclib.WithPerProviderTimeout(10*time.Second))
	cu.Registry.Drivers = cu.Registry.For("ipmitool")
	if err := cu.Open(ctx); err == nil {
		t.Error("Open with an unknown user succeeded")
	} else {
		t.Logf("Open with unknown user: %v", err)
	}

	// The BMC still serves the right password.
	good := newIPMIClient(sim, testIPMIPass, 10*time.Second)
	if err := good.Open(ctx); err != nil {
		t.Fatalf("Open with the right password after a wrong one: %v\n%s", err, sim.Log())
	}
}

func TestIPMIBMCDown(t *testing.T) {
	sim := StartIPMI(t, IPMIConfig{User: testIPMIUser, Password: testIPMIPass, InitialPower: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A dead BMC makes ipmitool (-N 5, 4 retries) wait ~50s; the
	// per-provider timeout bounds each call instead.
	const perProvider = 2 * time.Second
	c := newIPMIClient(sim, testIPMIPass, perProvider)
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open: %v\n%s", err, sim.Log())
	}

	sim.Stop()
	sim.Stop() // idempotent
	if sim.Running() {
		t.Fatal("Running() = true after Stop")
	}
	if !sim.Power() {
		t.Error("Stop changed the power state")
	}

	// The per-provider timeout ends the call: the caller's context is
	// still live, and the error is the provider's deadline.
	call, cancelCall := context.WithTimeout(ctx, 15*time.Second)
	defer cancelCall()
	state, err := c.GetPowerState(call)
	if err == nil {
		t.Fatalf("GetPowerState with the BMC down = %q, want error", state)
	}
	t.Logf("GetPowerState with BMC down (per-provider timeout %v): %v", perProvider, err)
	if !strings.Contains(err.Error(), "deadline exceeded") || call.Err() != nil {
		t.Errorf("GetPowerState with the BMC down was not ended by the per-provider timeout (caller's context: %v): %v", call.Err(), err)
	}

	err = newIPMIClient(sim, testIPMIPass, perProvider).Open(ctx)
	if err == nil {
		t.Fatal("Open with the BMC down succeeded")
	}
	t.Logf("Open with BMC down: %v", err)

	// A caller that gives up before the per-provider timeout ends the
	// call too: ipmitool is killed, where the per-provider timeout would
	// have said its deadline was exceeded.
	short, cancelShort := context.WithCancel(ctx)
	defer cancelShort()
	stop := time.AfterFunc(time.Second, cancelShort)
	defer stop.Stop()
	ok, err := newIPMIClient(sim, testIPMIPass, 10*time.Second).SetPowerState(short, "off")
	if err == nil || ok {
		t.Fatalf("SetPowerState with the BMC down = %v, %v; want error", ok, err)
	}
	t.Logf("SetPowerState with BMC down, canceled by its caller: %v", err)
	if short.Err() == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("SetPowerState with the BMC down was not ended by its caller (caller's context: %v): %v", short.Err(), err)
	}

	sim.Restart(t)
	if state, err := c.GetPowerState(ctx); err != nil || !strings.Contains(state, "on") {
		t.Errorf("GetPowerState after Restart = %q, %v", state, err)
	}
}

// TestIPMIPortTaken checks that a port taken by someone else is reported
// as errIPMIBind, so that a failure to bind the reserved port says so.
func TestIPMIPortTaken(t *testing.T) {
	sim := StartIPMI(t, IPMIConfig{User: testIPMIUser, Password: testIPMIPass})
	sim.Stop()
	pc, err := net.ListenPacket("udp4", sim.Addr)
	if err != nil {
		t.Fatalf("taking %s: %v", sim.Addr, err)
	}
	defer pc.Close()
	err = sim.start()
	if !errors.Is(err, errIPMIBind) {
		t.Fatalf("start on a taken port = %v, want errIPMIBind\n%s", err, sim.Log())
	}
	t.Logf("start on a taken port: %v", err)
	if sim.Running() {
		t.Error("Running() = true after a failed start")
	}
}

func TestIPMIConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg IPMIConfig
		ok  bool
	}{
		{IPMIConfig{User: "admin", Password: "secret"}, true},
		{IPMIConfig{User: "abcdefghijklmno", Password: "abcdefghijklmnopqrs"}, true},
		{IPMIConfig{User: "admin", Password: "sp ace"}, false},
		{IPMIConfig{User: "", Password: "secret"}, false},
		{IPMIConfig{User: "admin", Password: ""}, false},
		{IPMIConfig{User: "abcdefghijklmnop", Password: "secret"}, false},
		{IPMIConfig{User: "admin", Password: "abcdefghijklmnopqrst"}, false},
		{IPMIConfig{User: "admin", Password: `a"b`}, false},
		{IPMIConfig{User: "admin", Password: "a\nb"}, false},
	} {
		if err := tc.cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("validate(%+v) = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}

// TestIPMILongOddCredentials checks that credentials of the maximum length
// with quotes, dollars and hashes survive lan.conf quoting.
func TestIPMILongOddCredentials(t *testing.T) {
	const user, pass = "u$HOME'#\\n-6789", "p$HOME'x'#\\n-456789"
	sim := StartIPMI(t, IPMIConfig{User: user, Password: pass})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := newIPMIClient(sim, pass, 10*time.Second).Open(ctx); err != nil {
		t.Fatalf("Open: %v\n%s", err, sim.Log())
	}
}

func TestIPMIBootFlagsTrace(t *testing.T) {
	const trace = `> Receive message:
 channel=1 netfn=0x0 cmd=0x8 rs_addr=0x20 rs_lun=0x0 rq_addr=0x81
 rq_lun=0x0 rq_seq=0x6
 00 01
Response message: 1795690818.229373
 cc
Receive message:
 channel=1 netfn=0x0 cmd=0x8 rs_addr=0x20 rs_lun=0x0 rq_addr=0x81
 rq_lun=0x0 rq_seq=0x8
 05 e0 04 00 00 00
Response message: 1795690672.550978
 00
Receive message:
 channel=1 netfn=0x0 cmd=0x8 rs_addr=0x20 rs_lun=0x0 rq_addr=0x81
 rq_lun=0x0 rq_seq=0x9
 05 80 0c 00 00 00
Response message: 1795690672.550978
 ff
Receive message:
 channel=1 netfn=0x0 cmd=0x9 rs_addr=0x20 rs_lun=0x0 rq_addr=0x81
 rq_lun=0x0 rq_seq=0xa
 05 00 00
Response message: 1795690672.550978
 00 01 05 00 08 00 00 00
`
	o, ok := ipmiLastBootFlags(strings.NewReader(trace))
	if !ok {
		t.Fatal("no boot flags found")
	}
	if o.Device != "pxe" || !o.Valid || !o.Persistent || !o.EFI {
		t.Errorf("ipmiLastBootFlags = %+v, want the accepted pxe request", o)
	}
	if _, ok := ipmiLastBootFlags(strings.NewReader("Receive message:\n")); ok {
		t.Error("found boot flags in a trace without any")
	}
}
