package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"matchbox.dev/matchbox/internal/logbuf"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/metrics"
	"matchbox.dev/matchbox/recorder"
)

// In proxy mode every DISCOVER of a machine without a group is a "no boot
// answer": a flood of 100,000 distinct MACs writes a bounded number of
// lines, and counts and reports the rest. Clients that do not network-boot
// are not logged at info at all.
func TestNoBootAnswerFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logbuf.Buffer
		reg := prometheus.NewRegistry()
		srv, err := New(context.Background(), Config{
			BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + "/boot.ipxe" },
			HTTPBootURL: func(ip netip.Addr, f string) string { return "http://" + ip.String() + "/boot/" + f },
			Booter:      noOne{},
			Recorder:    recorder.New(nil, nil),
			Registry:    reg,
			Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		pxe, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...)...)
		if err != nil {
			t.Fatal(err)
		}
		laptop, err := dhcpv4.New(dhcpv4.WithHwAddr(mac(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
		if err != nil {
			t.Fatal(err)
		}
		peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
		const flood = 100_000
		for i := range flood {
			for _, m := range []*dhcpv4.DHCPv4{pxe, laptop} {
				m.ClientHWAddr = net.HardwareAddr{0x02, m.ClientHWAddr[1], byte(i >> 16), byte(i >> 8), byte(i), 0x01}
				if n := len(answer(srv, false, m.ToBytes(), peer)); n != 0 {
					t.Fatalf("%d replies to a machine without a group", n)
				}
			}
		}
		if n := logs.Count("no boot answer"); n != loglimit.Burst {
			t.Errorf("%d lines for %d machines, want %d", n, flood, loglimit.Burst)
		}
		if n := logs.Count("not a PXE client"); n != 0 {
			t.Errorf("%d info lines for clients that do not network-boot", n)
		}
		const want = flood - loglimit.Burst
		if got := testutil.ToFloat64(metrics.SuppressedLines(srv.limit.Suppressed)); got != want {
			t.Errorf("matchbox_log_suppressed_total = %v, want %v", got, want)
		}
		if n, err := testutil.GatherAndCount(reg, "matchbox_log_suppressed_total"); n != 1 || err != nil {
			t.Errorf("registry: %d series of matchbox_log_suppressed_total, %v", n, err)
		}
		time.Sleep(loglimit.ReportEvery + time.Second)
		synctest.Wait()
		report := fmt.Sprintf(`msg="suppressed similar log lines" message="dhcp: no boot answer" suppressed=%d repeats=0`, want)
		if n := logs.Count(report); n != 1 {
			t.Errorf("%d lines %s, want 1", n, report)
		}
	})
}
