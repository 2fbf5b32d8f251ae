package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox/dhcp"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "matchbox.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newServeFlags() (*flag.FlagSet, *serveConfig, *netbootConfig) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := serveFlags(fs)
	n := netbootFlags(fs)
	return fs, c, n
}

func TestConfigFile(t *testing.T) {
	path := writeConfig(t, `
address: 0.0.0.0:8081
log-level: debug
tftp-address: ":69"
dhcp:
  interfaces:
    - {name: eth1, mode: full}
    - {name: eth2, mode: proxy}
  subnets:
    - range: 192.168.77.100,192.168.77.200
      router: [192.168.77.254]
      dns: [192.168.77.53, 192.168.77.54]
      domain: lab.example
      lease-time: 12h
    - range: 10.20.0.10,10.20.0.99,24
  boot-files: {"7": snponly.efi}
`)
	fs, c, n := newServeFlags()
	// The command line wins over the file.
	set, err := parseFlagsSet(fs, []string{"-log-level", "warn", "-config", path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := loadFileConfig(c.configFile, fs)
	if err != nil {
		t.Fatal(err)
	}
	if err := fc.apply(fs, set); err != nil {
		t.Fatal(err)
	}
	if c.address != "0.0.0.0:8081" || c.logLevel != "warn" || n.tftpAddress != ":69" {
		t.Errorf("address %q log-level %q tftp %q", c.address, c.logLevel, n.tftpAddress)
	}
	ifaces, subnets, boot, err := n.dhcpPlan(fc)
	if err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 2 || ifaces[0] != (ifaceSpec{"eth1", dhcp.ModeFull}) || ifaces[1] != (ifaceSpec{"eth2", dhcp.ModeProxy}) {
		t.Errorf("interfaces %+v", ifaces)
	}
	if len(subnets) != 2 || subnets[0].leaseTime != 12*time.Hour || len(subnets[0].dns) != 2 || subnets[0].domain != "lab.example" ||
		subnets[1].leaseTime != time.Hour || subnets[1].rng != "10.20.0.10,10.20.0.99,24" {
		t.Errorf("subnets %+v", subnets)
	}
	if boot[7] != "snponly.efi" {
		t.Errorf("boot files %v", boot)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct{ body, args, want string }{
		{"adress: x\n", "", `unknown setting "adress"`},
		{"dhcp:\n  interfaces: [{name: eth1, mode: sideways}]\n", "", "want a name and a mode"},
		{"dhcp:\n  interfaces: [{name: eth1, mode: full}]\n", "", "needs at least one subnet"},
		{"dhcp:\n  subnets: [{range: 10.0.0.1,10.0.0.9, routr: [1.2.3.4]}]\n", "", "field routr not found"},
		{"dhcp:\n  subnets: [{range: 10.0.0.1,10.0.0.9, dns: [nope]}]\n", "", "dns"},
		{"dhcp:\n  interfaces: [{name: eth1, mode: proxy}]\n", "-dhcp-mode=proxy", "both by -dhcp-* flags and in the config file"},
		{"address: [a, [b]]\n", "", "list items must be plain values"},
		{"{{{", "", "-config"},
	} {
		path := writeConfig(t, tc.body)
		fs, c, n := newServeFlags()
		args := []string{"-config", path}
		if tc.args != "" {
			args = append(args, tc.args)
		}
		set, err := parseFlagsSet(fs, args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		fc, err := loadFileConfig(c.configFile, fs)
		if err == nil {
			err = fc.apply(fs, set)
		}
		if err == nil {
			_, _, _, err = n.dhcpPlan(fc)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.body, err, tc.want)
		}
	}
}
