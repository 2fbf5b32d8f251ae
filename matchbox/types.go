package matchbox

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Profile names the boot configuration a machine gets: the kernel, initrds
// and kernel arguments for network boot, and the names of the Ignition,
// cloud-config and generic templates rendered for it. The JSON form is
// poseidon/matchbox's profile format.
type Profile struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Boot       Boot   `json:"boot,omitzero"`
	IgnitionID string `json:"ignition_id,omitempty"`
	CloudID    string `json:"cloud_id,omitempty"`
	GenericID  string `json:"generic_id,omitempty"`
	// Release, when set, names a Flatcar release instead of fixed asset
	// paths: relative boot.kernel and boot.initrd names (or none) are
	// files of that release, from the local mirror when it holds it.
	Release *ReleaseRef `json:"release,omitempty"`

	// Origin says where the profile came from (a file path or "db").
	Origin string `json:"-"`
}

// Boot is the network boot part of a profile.
type Boot struct {
	Kernel string   `json:"kernel,omitempty"`
	Initrd []string `json:"initrd,omitempty"`
	Args   []string `json:"args,omitempty"`
}

// Group maps machines, by selector labels, to a profile and carries the
// metadata that templates are rendered with. A group without selectors is a
// default group and matches every machine.
type Group struct {
	ID       string            `json:"id"`
	Name     string            `json:"name,omitempty"`
	Profile  string            `json:"profile"`
	Selector map[string]string `json:"selector,omitempty"`
	Metadata map[string]any    `json:"metadata,omitempty"`

	// Origin says where the group came from (a file path or "db").
	Origin string `json:"-"`

	// The compact form of a frozen group (frozen.go): data is the packed
	// group; the selector pairs are data[selStart:selEnd], the selector
	// string data[selEnd:strEnd], the metadata the rest.
	data                           string
	selStart, selEnd, strEnd, nsel uint32
	frozen                         bool
}

// SelectorString is the selector as sorted "k=v" pairs joined by commas,
// the string poseidon/matchbox compares to break ties between groups with
// the same number of selectors.
func (g *Group) SelectorString() string {
	if g.frozen {
		return g.data[g.selEnd:g.strEnd]
	}
	pairs := make([]string, 0, g.SelectorCount())
	for k, v := range g.Selectors() {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// Matches reports whether every selector of g equals the label of the same
// name (exact, case-sensitive AND). Extra labels do not matter. As in
// poseidon/matchbox, a missing label counts as the empty string, so a
// selector with an empty value also matches machines without that label.
func (g *Group) Matches(labels map[string]string) bool {
	if g.frozen {
		for s := g.selPart(); s != ""; {
			var k, v string
			k, s = cutString(s)
			v, s = cutString(s)
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	for k, v := range g.Selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TemplateKind is the folder a template lives in and the endpoint that
// renders it.
type TemplateKind string

// The template kinds a profile refers to.
const (
	KindIgnition TemplateKind = "ignition"
	KindCloud    TemplateKind = "cloud"
	KindGeneric  TemplateKind = "generic"
)

// TemplateKinds lists every template kind in a stable order.
var TemplateKinds = []TemplateKind{KindIgnition, KindCloud, KindGeneric}

// Template is a named config template: raw Ignition JSON (names ending in
// .ign or .ignition) or Go text/template source.
type Template struct {
	Kind    TemplateKind
	Name    string
	Content []byte
	// Origin says where the template came from (a file path or "db").
	Origin string
}

// IsRawIgnition reports whether an Ignition template name denotes raw
// Ignition JSON, served as is, rather than a Butane template.
func IsRawIgnition(name string) bool {
	return strings.HasSuffix(name, ".ign") || strings.HasSuffix(name, ".ignition")
}

// Machine is what matchbox knows about one machine, keyed by its primary
// MAC address (lowercase, colon-separated).
type Machine struct {
	MAC       string            `json:"mac"`
	UUID      string            `json:"uuid,omitempty"`
	Serial    string            `json:"serial,omitempty"`
	Hostname  string            `json:"hostname,omitempty"`
	Arch      string            `json:"arch,omitempty"`
	LastIP    string            `json:"last_ip,omitempty"`
	FirstSeen time.Time         `json:"first_seen,omitzero"`
	LastSeen  time.Time         `json:"last_seen,omitzero"`
	Group     string            `json:"group,omitempty"`
	Profile   string            `json:"profile,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// ReservedIP is the IPv4 address the DHCP server always gives this
	// machine in full mode.
	ReservedIP string `json:"reserved_ip,omitempty"`
	// EventSeq counts the events ever recorded for the machine (the
	// newest ones are kept).
	EventSeq uint64 `json:"event_seq,omitempty"`
}

// BMC is how matchbox reaches a machine's baseboard management controller.
// The password is write-only: stored encrypted, never returned or logged.
type BMC struct {
	// Address is HOST or HOST:PORT.
	Address string `json:"address"`
	// Provider is the bmclib provider to use (ipmitool, redfish, …), or
	// several in order of preference ("redfish,ipmitool"); empty: ipmitool,
	// then redfish.
	Provider string `json:"provider,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"-"`
	// TLSFingerprint pins the certificate of an HTTPS BMC (Redfish and
	// the vendor providers): the SHA-256 of its DER encoding, 64
	// lowercase hex digits. When set, that certificate is the only one
	// accepted, whatever its names, dates and issuer.
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
	// TLSInsecure skips the verification of an HTTPS BMC's certificate:
	// anyone on the path can then take the password. An explicit opt-in,
	// shown by the API and logged at every use.
	TLSInsecure bool `json:"tls_insecure_skip_verify,omitempty"`
}

// BMCProviders are the providers a machine's BMC settings may name.
var BMCProviders = []string{"ipmitool", "redfish", "intelamt", "asrockrack", "supermicro", "openbmc", "dell"}

// ParseBMCProviders splits a provider preference ("redfish" or
// "redfish,ipmitool") into names, checking each.
func ParseBMCProviders(pref string) ([]string, error) {
	var out []string
	for p := range strings.SplitSeq(pref, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		if !slices.Contains(BMCProviders, p) {
			return nil, fmt.Errorf("bmc provider %q: want one of %s: %w", p, strings.Join(BMCProviders, ", "), ErrInvalid)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// TemplateRef names a template by kind and name.
type TemplateRef struct {
	Kind TemplateKind
	Name string
}

// ProfileField is the profile key that names a template of kind k
// (ignition_id, cloud_id, generic_id).
func (k TemplateKind) ProfileField() string { return string(k) + "_id" }

// TemplateRefs returns the templates the profile names, in the order of
// TemplateKinds.
func (p *Profile) TemplateRefs() []TemplateRef {
	var refs []TemplateRef
	for _, r := range [...]TemplateRef{{KindIgnition, p.IgnitionID}, {KindCloud, p.CloudID}, {KindGeneric, p.GenericID}} {
		if r.Name != "" {
			refs = append(refs, r)
		}
	}
	return refs
}
