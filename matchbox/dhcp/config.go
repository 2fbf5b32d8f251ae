package dhcp

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"matchbox.dev/matchbox"
)

// Mode is how matchbox answers DHCP on an interface.
type Mode string

// DHCP modes.
const (
	ModeOff   Mode = "off"
	ModeProxy Mode = "proxy"
	ModeFull  Mode = "full"
)

// ParseMode parses a -dhcp-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeOff, ModeProxy, ModeFull:
		return m, nil
	}
	return "", fmt.Errorf("dhcp mode %q: want off, proxy or full", s)
}

// Subnet is an address pool of full mode and the options its clients get.
type Subnet struct {
	// Prefix is the subnet (for example 10.0.0.0/24).
	Prefix netip.Prefix
	// Start and End bound the dynamic range, inclusive.
	Start, End netip.Addr
	Routers    []netip.Addr
	DNS        []netip.Addr
	NTP        []netip.Addr
	Domain     string
	LeaseTime  time.Duration
}

// ParseRange parses a -dhcp-range value "START,END[,NETMASK]". Without a
// netmask the subnet is the /24 around START unless fallback is valid.
func ParseRange(s string, fallback netip.Prefix) (Subnet, error) {
	parts := strings.Split(s, ",")
	if len(parts) < 2 || len(parts) > 3 {
		return Subnet{}, fmt.Errorf("dhcp range %q: want START,END[,NETMASK]", s)
	}
	start, err := netip.ParseAddr(strings.TrimSpace(parts[0]))
	if err != nil || !start.Is4() {
		return Subnet{}, fmt.Errorf("dhcp range %q: start %q is not an IPv4 address", s, parts[0])
	}
	end, err := netip.ParseAddr(strings.TrimSpace(parts[1]))
	if err != nil || !end.Is4() {
		return Subnet{}, fmt.Errorf("dhcp range %q: end %q is not an IPv4 address", s, parts[1])
	}
	if end.Less(start) {
		return Subnet{}, fmt.Errorf("dhcp range %q: end is before start", s)
	}
	var prefix netip.Prefix
	switch {
	case len(parts) == 3:
		bits, err := maskBits(strings.TrimSpace(parts[2]))
		if err != nil {
			return Subnet{}, fmt.Errorf("dhcp range %q: %w", s, err)
		}
		prefix = netip.PrefixFrom(start, bits).Masked()
	case fallback.IsValid() && fallback.Contains(start):
		prefix = fallback.Masked()
	default:
		prefix = netip.PrefixFrom(start, 24).Masked()
	}
	if !prefix.Contains(end) {
		return Subnet{}, fmt.Errorf("dhcp range %q: %v and %v are not in one subnet %v", s, start, end, prefix)
	}
	return Subnet{Prefix: prefix, Start: start, End: end}, nil
}

// maskBits parses a dotted netmask (255.255.255.0) or a prefix length (24).
func maskBits(s string) (int, error) {
	s = strings.TrimPrefix(s, "/")
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		b := a.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		bits := 0
		for v&0x80000000 != 0 {
			bits++
			v <<= 1
		}
		if v != 0 {
			return 0, fmt.Errorf("netmask %q is not contiguous", s)
		}
		return bits, nil
	}
	var bits int
	if _, err := fmt.Sscanf(s, "%d", &bits); err != nil || bits < 8 || bits > 30 {
		return 0, fmt.Errorf("netmask %q: want a dotted mask or a prefix length from 8 to 30", s)
	}
	return bits, nil
}

// BootFiles maps client architectures (RFC 4578 option 93, IANA values) to
// the file a PXE client is told to fetch: a TFTP file name, or for HTTP
// Boot architectures a path on the HTTP server. An architecture without an
// entry gets no boot answer (and a log line saying so).
type BootFiles map[uint16]string

// DefaultBootFiles is the standard table: BIOS gets undionly.kpxe, x86-64
// UEFI ipxe.efi, x86-64 UEFI HTTP Boot ipxe.efi over HTTP. IA32 and arm64
// builds are left to configuration.
func DefaultBootFiles() BootFiles {
	return BootFiles{
		0:  "undionly.kpxe",
		7:  "ipxe.efi",
		9:  "ipxe.efi",
		16: "ipxe.efi",
	}
}

// httpBootArch reports whether an architecture is a UEFI HTTP Boot one.
func httpBootArch(a uint16) bool {
	switch a {
	case 15, 16, 17, 18, 19, 20, 23, 24, 26, 28, 30, 32, 34:
		return true
	}
	return false
}

// ArchName names an architecture for logs and events.
func ArchName(a uint16) string {
	switch a {
	case 0:
		return "bios"
	case 6:
		return "efi-ia32"
	case 7, 9:
		return "efi-x86_64"
	case 10:
		return "efi-arm32"
	case 11:
		return "efi-arm64"
	case 16:
		return "efi-x86_64-http"
	case 19:
		return "efi-arm64-http"
	}
	return fmt.Sprintf("arch-%d", a)
}

// Booter takes the core's boot decision (matchbox.Booter): whether a
// machine with these labels (mac, and uuid when the firmware sent option
// 97) network-boots (Decision.Netboots), and whether the configuration
// expects it (Decision.Grouped).
type Booter interface {
	Decide(labels map[string]string) matchbox.Decision
}

// Reservations knows fixed addresses for machines.
type Reservations interface {
	// Reserved returns the address reserved for mac, if any.
	Reserved(mac string) (netip.Addr, bool)
}
