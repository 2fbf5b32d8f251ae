package bmc

import (
	"testing"

	bmclib "github.com/bmc-toolbox/bmclib/v2"

	"matchbox.dev/matchbox"
)

// Every provider settings may name (matchbox.BMCProviders, the one list)
// is a driver of bmclib's registry under its registry name.
func TestEveryProviderIsRegistered(t *testing.T) {
	cl := bmclib.NewClient("127.0.0.1", "u", "p")
	for _, p := range matchbox.BMCProviders {
		if len(cl.Registry.For(registryName(p))) == 0 {
			t.Errorf("provider %s: bmclib has no driver %q (is ipmitool installed, for the ipmitool provider?)", p, registryName(p))
		}
	}
}
