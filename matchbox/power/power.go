// Package power drives machines' BMCs by MAC: it looks up a machine's BMC
// settings in the store, calls the controller (matchbox/bmc) and records
// every call as a machine event, with the BMC password redacted from
// every error in every form it may take.
package power

import (
	"context"
	"fmt"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/recorder"
)

// Service runs BMC operations on machines by MAC: it looks the machine's
// settings up, calls the controller and records every call as a machine
// event. Errors, in events and returned, have the password redacted in
// every form it may take in text, whatever the controller let through.
type Service struct {
	Settings   matchbox.BMCSettingsStore
	Controller matchbox.PowerController
	Recorder   *recorder.Recorder
}

func (m *Service) settings(ctx context.Context, mac string) (matchbox.BMC, error) {
	if m == nil || m.Controller == nil {
		return matchbox.BMC{}, fmt.Errorf("bmc control is not configured: %w", matchbox.ErrInvalid)
	}
	b, err := m.Settings.MachineBMC(ctx, mac)
	if err != nil {
		return matchbox.BMC{}, fmt.Errorf("bmc settings of machine %s: %w", mac, err)
	}
	return b, nil
}

// Check returns nil when the machine's BMC can be driven: control is
// configured and the machine has BMC settings (else an error wrapping
// matchbox.ErrNotFound for a machine without them).
func (m *Service) Check(ctx context.Context, mac string) error {
	_, err := m.settings(ctx, mac)
	return err
}

func (m *Service) record(mac string, what string, start time.Time, err error) {
	ev := matchbox.Event{MAC: mac, Kind: matchbox.EventBMC, File: what}
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		ev.Kind = matchbox.EventBMCFailed
		ev.Detail = fmt.Sprintf("%s failed after %v: %v", what, took, err)
	} else {
		ev.Detail = fmt.Sprintf("%s done in %v", what, took)
	}
	if m.Recorder != nil {
		m.Recorder.RecordDistinct(ev)
	}
}

// PowerState asks the machine's BMC for its power state.
func (m *Service) PowerState(ctx context.Context, mac string) (matchbox.PowerState, error) {
	b, err := m.settings(ctx, mac)
	if err != nil {
		return matchbox.PowerUnknown, err
	}
	start := time.Now()
	st, err := m.Controller.PowerState(ctx, b)
	err = matchbox.RedactError(err, b.Password)
	what := "power status"
	if err == nil {
		what += ": " + string(st)
	}
	m.record(mac, what, start, err)
	return st, err
}

// SetPower asks the machine's BMC to change its power.
func (m *Service) SetPower(ctx context.Context, mac string, action matchbox.PowerAction) error {
	b, err := m.settings(ctx, mac)
	if err != nil {
		return err
	}
	start := time.Now()
	err = matchbox.RedactError(m.Controller.SetPower(ctx, b, action), b.Password)
	m.record(mac, "power "+string(action), start, err)
	return err
}

// SetBootDevice sets the machine's next boot device through its BMC.
func (m *Service) SetBootDevice(ctx context.Context, mac string, dev matchbox.BootDevice, efi bool) error {
	b, err := m.settings(ctx, mac)
	if err != nil {
		return err
	}
	start := time.Now()
	err = matchbox.RedactError(m.Controller.SetBootDevice(ctx, b, dev, efi), b.Password)
	what := "boot device " + string(dev)
	if efi {
		what += " (uefi)"
	}
	m.record(mac, what, start, err)
	return err
}
