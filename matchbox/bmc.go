package matchbox

import (
	"context"
	"fmt"
	"time"
)

// PowerState is a machine's power as its BMC reports it, normalised over
// the providers' spellings.
type PowerState string

// Power states.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// PowerAction is what a BMC is asked to do with a machine's power.
type PowerAction string

// Power actions: soft asks the operating system to shut down (ACPI), off
// cuts power at once, reset restarts a running machine.
const (
	ActionOn    PowerAction = "on"
	ActionOff   PowerAction = "off"
	ActionSoft  PowerAction = "soft"
	ActionReset PowerAction = "reset"
)

// PowerActions lists the power actions in a stable order.
var PowerActions = []PowerAction{ActionOn, ActionOff, ActionSoft, ActionReset}

// BootDevice is a one-time boot device.
type BootDevice string

// Boot devices.
const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
)

// PowerController drives BMCs. Every method bounds itself in time; errors
// never contain the BMC password.
type PowerController interface {
	PowerState(ctx context.Context, b BMC) (PowerState, error)
	SetPower(ctx context.Context, b BMC, action PowerAction) error
	// SetBootDevice sets the device for the next boot only; efi asks for
	// UEFI rather than legacy BIOS boot.
	SetBootDevice(ctx context.Context, b BMC, dev BootDevice, efi bool) error
}

// BMCSettingsStore returns a machine's BMC settings, password included.
type BMCSettingsStore interface {
	MachineBMC(ctx context.Context, mac string) (BMC, error)
}

// Machine events of BMC operations and of the reinstall workflow.
const (
	EventBMC       EventKind = "bmc"
	EventBMCFailed EventKind = "bmc.failed"
	EventWorkflow  EventKind = "workflow"
	EventReport    EventKind = "install.report"
)

// FromMachine reports whether events of this kind come from the machine
// itself (a request or a report) rather than from matchbox acting on it:
// only those say when the machine was last seen, at which address, with
// which group and profile.
func (k EventKind) FromMachine() bool {
	return k != EventBMC && k != EventBMCFailed && k != EventWorkflow
}

// BMCs runs BMC operations on machines by MAC: it looks the machine's
// settings up, calls the controller and records every call as a machine
// event (never with credentials).
type BMCs struct {
	Settings   BMCSettingsStore
	Controller PowerController
	Recorder   *Recorder
}

func (m *BMCs) settings(ctx context.Context, mac string) (BMC, error) {
	if m == nil || m.Controller == nil {
		return BMC{}, fmt.Errorf("bmc control is not configured: %w", ErrInvalid)
	}
	b, err := m.Settings.MachineBMC(ctx, mac)
	if err != nil {
		return BMC{}, fmt.Errorf("bmc settings of machine %s: %w", mac, err)
	}
	return b, nil
}

func (m *BMCs) record(mac string, what string, start time.Time, err error) {
	ev := Event{MAC: mac, Kind: EventBMC, File: what}
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		ev.Kind = EventBMCFailed
		ev.Detail = fmt.Sprintf("%s failed after %v: %v", what, took, err)
	} else {
		ev.Detail = fmt.Sprintf("%s done in %v", what, took)
	}
	if m.Recorder != nil {
		m.Recorder.RecordDistinct(ev)
	}
}

// PowerState asks the machine's BMC for its power state.
func (m *BMCs) PowerState(ctx context.Context, mac string) (PowerState, error) {
	b, err := m.settings(ctx, mac)
	if err != nil {
		return PowerUnknown, err
	}
	start := time.Now()
	st, err := m.Controller.PowerState(ctx, b)
	what := "power status"
	if err == nil {
		what += ": " + string(st)
	}
	m.record(mac, what, start, err)
	return st, err
}

// SetPower asks the machine's BMC to change its power.
func (m *BMCs) SetPower(ctx context.Context, mac string, action PowerAction) error {
	b, err := m.settings(ctx, mac)
	if err != nil {
		return err
	}
	start := time.Now()
	err = m.Controller.SetPower(ctx, b, action)
	m.record(mac, "power "+string(action), start, err)
	return err
}

// SetBootDevice sets the machine's next boot device through its BMC.
func (m *BMCs) SetBootDevice(ctx context.Context, mac string, dev BootDevice, efi bool) error {
	b, err := m.settings(ctx, mac)
	if err != nil {
		return err
	}
	start := time.Now()
	err = m.Controller.SetBootDevice(ctx, b, dev, efi)
	what := "boot device " + string(dev)
	if efi {
		what += " (uefi)"
	}
	m.record(mac, what, start, err)
	return err
}
