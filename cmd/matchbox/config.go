package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"matchbox.dev/matchbox/dhcp"
)

// fileConfig is the optional config file of `matchbox serve` (YAML; JSON
// is YAML too). Top-level keys are serve flag names, applied where neither
// the command line nor the environment set that flag. The dhcp section
// describes what flags cannot: a mode per interface and options per
// subnet.
type fileConfig struct {
	flags map[string]string
	dhcp  *dhcpFile
}

type dhcpFile struct {
	Interfaces []struct {
		Name string `yaml:"name"`
		Mode string `yaml:"mode"`
	} `yaml:"interfaces"`
	Subnets []struct {
		Range     string   `yaml:"range"`
		Router    []string `yaml:"router"`
		DNS       []string `yaml:"dns"`
		NTP       []string `yaml:"ntp"`
		Domain    string   `yaml:"domain"`
		LeaseTime string   `yaml:"lease-time"`
	} `yaml:"subnets"`
	BootFiles map[string]string `yaml:"boot-files"`
}

// loadFileConfig reads a config file; keys must be serve flags or "dhcp".
func loadFileConfig(path string, fs *flag.FlagSet) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-config: %w", err)
	}
	var raw map[string]yaml.Node
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("-config %s: %w", path, err)
	}
	fc := &fileConfig{flags: map[string]string{}}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		node := raw[k]
		if k == "dhcp" {
			var d dhcpFile
			dec := yaml.NewDecoder(bytes.NewReader(mustMarshal(&node)))
			dec.KnownFields(true)
			if err := dec.Decode(&d); err != nil {
				return nil, fmt.Errorf("-config %s: dhcp (line %d): %w", path, node.Line, err)
			}
			fc.dhcp = &d
			continue
		}
		if k == "config" || fs.Lookup(k) == nil {
			return nil, fmt.Errorf("-config %s: line %d: unknown setting %q (not a flag of matchbox serve)", path, node.Line, k)
		}
		switch node.Kind {
		case yaml.ScalarNode:
			fc.flags[k] = node.Value
		case yaml.SequenceNode:
			// Repeatable flags: each item is one value.
			var items []string
			for _, it := range node.Content {
				if it.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("-config %s: line %d: %s: list items must be plain values", path, it.Line, k)
				}
				items = append(items, it.Value)
			}
			fc.flags[k] = strings.Join(items, "\n")
		default:
			return nil, fmt.Errorf("-config %s: line %d: %s: want a value or a list", path, node.Line, k)
		}
	}
	return fc, nil
}

func mustMarshal(n *yaml.Node) []byte {
	b, err := yaml.Marshal(n)
	if err != nil {
		return nil
	}
	return b
}

// apply sets every flag that neither the command line nor the environment
// set (set holds those names).
func (fc *fileConfig) apply(fs *flag.FlagSet, set map[string]bool) error {
	var errs []error
	for name, v := range fc.flags {
		if set[name] {
			continue
		}
		for _, item := range strings.Split(v, "\n") {
			if err := fs.Set(name, item); err != nil {
				errs = append(errs, fmt.Errorf("-config: %s: %v", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ifaceSpec is one interface DHCP answers on.
type ifaceSpec struct {
	name string
	mode dhcp.Mode
}

// subnetSpec is one full-mode range with its options.
type subnetSpec struct {
	rng               string
	routers, dns, ntp []netip.Addr
	domain            string
	leaseTime         time.Duration
	where             string // for error messages
}

// dhcpPlan resolves the DHCP interfaces and subnets from the flags, or
// from the config file's dhcp section (not both).
func (n *netbootConfig) dhcpPlan(fc *fileConfig) ([]ifaceSpec, []subnetSpec, map[uint16]string, error) {
	bootFiles := map[uint16]string{}
	parseBoot := func(arch, file, where string) error {
		a, err := strconv.ParseUint(strings.TrimSpace(arch), 10, 16)
		if err != nil || strings.TrimSpace(file) == "" {
			return fmt.Errorf("%s %s=%s: want ARCH=FILE with a decimal option 93 value", where, arch, file)
		}
		bootFiles[uint16(a)] = strings.TrimSpace(file)
		return nil
	}
	for _, bf := range n.bootFiles.items {
		arch, file, _ := strings.Cut(bf, "=")
		if err := parseBoot(arch, file, "-dhcp-boot-file"); err != nil {
			return nil, nil, nil, err
		}
	}
	if fc != nil && fc.dhcp != nil {
		for arch, file := range fc.dhcp.BootFiles {
			if err := parseBoot(arch, file, "config dhcp.boot-files"); err != nil {
				return nil, nil, nil, err
			}
		}
	}

	if fc == nil || fc.dhcp == nil || (len(fc.dhcp.Interfaces) == 0 && len(fc.dhcp.Subnets) == 0) {
		mode, err := dhcp.ParseMode(n.dhcpMode)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("-dhcp-mode: %w", err)
		}
		if mode == dhcp.ModeOff {
			return nil, nil, bootFiles, nil
		}
		if len(n.interfaces.items) == 0 {
			return nil, nil, nil, fmt.Errorf("-dhcp-mode %s needs at least one -dhcp-interface", mode)
		}
		var ifaces []ifaceSpec
		for _, name := range n.interfaces.items {
			ifaces = append(ifaces, ifaceSpec{name, mode})
		}
		var subnets []subnetSpec
		if mode == dhcp.ModeFull {
			if len(n.ranges.items) == 0 {
				return nil, nil, nil, fmt.Errorf("-dhcp-mode full needs at least one -dhcp-range")
			}
			routers, err := parseAddrs(n.router)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("-dhcp-router: %w", err)
			}
			dns, err := parseAddrs(n.dns)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("-dhcp-dns: %w", err)
			}
			ntp, err := parseAddrs(n.ntp)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("-dhcp-ntp: %w", err)
			}
			for _, r := range n.ranges.items {
				subnets = append(subnets, subnetSpec{rng: r, routers: routers, dns: dns, ntp: ntp, domain: n.domain, leaseTime: n.leaseTime, where: "-dhcp-range"})
			}
		}
		return ifaces, subnets, bootFiles, nil
	}

	if len(n.interfaces.items) > 0 || len(n.ranges.items) > 0 || n.dhcpMode != "off" {
		return nil, nil, nil, errors.New("DHCP is set both by -dhcp-* flags and in the config file's dhcp section: use one")
	}
	var ifaces []ifaceSpec
	full := false
	for i, it := range fc.dhcp.Interfaces {
		mode, err := dhcp.ParseMode(it.Mode)
		if err != nil || it.Name == "" {
			return nil, nil, nil, fmt.Errorf("config dhcp.interfaces[%d]: want a name and a mode (proxy or full): %v", i, err)
		}
		if mode == dhcp.ModeOff {
			continue
		}
		full = full || mode == dhcp.ModeFull
		ifaces = append(ifaces, ifaceSpec{it.Name, mode})
	}
	var subnets []subnetSpec
	for i, s := range fc.dhcp.Subnets {
		where := fmt.Sprintf("config dhcp.subnets[%d]", i)
		sp := subnetSpec{rng: s.Range, domain: s.Domain, leaseTime: n.leaseTime, where: where}
		var err error
		for _, f := range []struct {
			dst *[]netip.Addr
			src []string
			key string
		}{{&sp.routers, s.Router, "router"}, {&sp.dns, s.DNS, "dns"}, {&sp.ntp, s.NTP, "ntp"}} {
			if *f.dst, err = parseAddrs(strings.Join(f.src, ",")); err != nil {
				return nil, nil, nil, fmt.Errorf("%s.%s: %w", where, f.key, err)
			}
		}
		if s.LeaseTime != "" {
			if sp.leaseTime, err = time.ParseDuration(s.LeaseTime); err != nil || sp.leaseTime <= 0 {
				return nil, nil, nil, fmt.Errorf("%s.lease-time: %q is not a duration", where, s.LeaseTime)
			}
		}
		subnets = append(subnets, sp)
	}
	if full && len(subnets) == 0 {
		return nil, nil, nil, errors.New("config dhcp: a full-mode interface needs at least one subnet")
	}
	return ifaces, subnets, bootFiles, nil
}
