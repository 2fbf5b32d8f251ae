package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A DHCP pool limit out of its range stops matchbox serve with the flag
// and the range, before anything is written: the database is not created.
func TestDHCPLimitFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"-dhcp-offer-hold", "500ms"}, nil, "-dhcp-offer-hold 500ms: want 1s to 5m0s"},
		{[]string{"-dhcp-offer-hold", "1h"}, nil, "-dhcp-offer-hold 1h0m0s: want 1s to 5m0s"},
		{nil, []string{"MATCHBOX_DHCP_UNKNOWN_SHARE=0"}, "-dhcp-unknown-share 0: want a percent from 1 to 100"},
		{[]string{"-dhcp-unknown-share", "101"}, nil, "-dhcp-unknown-share 101"},
		{[]string{"-dhcp-unknown-event-rate", "0"}, nil, "-dhcp-unknown-event-rate 0: want more than 0"},
		{[]string{"-dhcp-unknown-event-rate", "1e9"}, nil, "at most 100000 events a second"},
	} {
		dir := t.TempDir()
		db := filepath.Join(dir, "m.db")
		args := append([]string{"serve", "-data-path", dir, "-db-path", db, "-address", "127.0.0.1:0", "-api-address", ""}, tc.args...)
		code, out := runCLI(t, tc.env, args...)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v %v: exit %d, output %q; want exit 1 with %q", tc.env, tc.args, code, out, tc.want)
		}
		if _, err := os.Stat(db); !os.IsNotExist(err) {
			t.Errorf("%v %v: database created (%v)", tc.env, tc.args, err)
		}
	}
}
