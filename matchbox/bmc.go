package matchbox

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"
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
// never contain the BMC password (power.Service redacts them again, in
// every form: see RedactSecret).
type PowerController interface {
	PowerState(ctx context.Context, b BMC) (PowerState, error)
	SetPower(ctx context.Context, b BMC, action PowerAction) error
	// SetBootDevice sets the device for the next boot only; efi asks for
	// UEFI rather than legacy BIOS boot.
	SetBootDevice(ctx context.Context, b BMC, dev BootDevice, efi bool) error
}

// NormalizeBMCFingerprint reads a certificate's SHA-256 fingerprint as
// operators copy it: 64 hex digits in either case, with or without colons,
// with or without a "sha256:" or openssl's "SHA256 Fingerprint=" prefix.
// It returns the canonical form, lowercase without colons ("" for "").
func NormalizeBMCFingerprint(s string) (string, error) {
	f := strings.TrimSpace(s)
	if f == "" {
		return "", nil
	}
	for _, prefix := range []string{"sha256 fingerprint=", "sha256:"} {
		if len(f) >= len(prefix) && strings.EqualFold(f[:len(prefix)], prefix) {
			f = f[len(prefix):]
			break
		}
	}
	f = strings.ToLower(strings.ReplaceAll(f, ":", ""))
	if b, err := hex.DecodeString(f); err != nil || len(b) != 32 {
		return "", fmt.Errorf("tls_fingerprint %s: want the certificate's SHA-256 fingerprint, 64 hex digits (openssl x509 -noout -fingerprint -sha256): %w", Quote(s), ErrInvalid)
	}
	return f, nil
}

// BMCDestinationChanges names the settings (by their API names) in which
// next differs from prev in a way that sends the credential to another
// endpoint or another account: the address (host, case-insensitively, and
// port, a missing port differing from any), the set of providers (each
// speaks its own protocol on its own port, an empty set meaning the
// server's default), the user name, and how the BMC's certificate is
// trusted (the pinned fingerprint, skipping verification). A stored
// password is kept only for a destination that has none of these changes.
func BMCDestinationChanges(prev, next BMC) []string {
	var changed []string
	if !sameBMCAddress(prev.Address, next.Address) {
		changed = append(changed, "address")
	}
	if !sameProviders(prev.Provider, next.Provider) {
		changed = append(changed, "provider")
	}
	if prev.Username != next.Username {
		changed = append(changed, "username")
	}
	pf, _ := NormalizeBMCFingerprint(prev.TLSFingerprint)
	nf, _ := NormalizeBMCFingerprint(next.TLSFingerprint)
	if pf != nf {
		changed = append(changed, "tls_fingerprint")
	}
	if prev.TLSInsecure != next.TLSInsecure {
		changed = append(changed, "tls_insecure_skip_verify")
	}
	return changed
}

func sameBMCAddress(a, b string) bool {
	ah, ap, aerr := net.SplitHostPort(a)
	bh, bp, berr := net.SplitHostPort(b)
	if aerr != nil || berr != nil {
		return aerr != nil && berr != nil && strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
	}
	return strings.EqualFold(ah, bh) && ap == bp
}

func sameProviders(a, b string) bool {
	pa, erra := ParseBMCProviders(a)
	pb, errb := ParseBMCProviders(b)
	if erra != nil || errb != nil {
		return false
	}
	slices.Sort(pa)
	slices.Sort(pb)
	return slices.Equal(pa, pb)
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
