package dhcp

import (
	"context"
	"net"
	"testing"
	"testing/synctest"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"matchbox.dev/matchbox/internal/testrun"
	"matchbox.dev/matchbox/storage"
)

// Two servers over one store (replicas): what one binds, declines or
// frees, the other's table follows through the store's change feed as
// soon as it is committed — no time passes on the bubble's clock — so
// the other neither offers a bound address nor lets lease binding fail.
func TestLeasesFollowOtherServers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := storage.NewMemoryBackend()
		replica := func() *poolServer {
			st := storage.OpenMemory(backend)
			t.Cleanup(func() { st.Close() })
			ps := newPoolServer(t, pool3(), everyone, st, func(c *Config) { c.Changes = st })
			testrun.Background(t, func(ctx context.Context) error { return ps.srv.Serve(ctx) })
			return ps
		}
		a, b := replica(), replica()

		ip := a.dora(mac(1))
		if !ip.IsValid() {
			t.Fatal("no lease from a")
		}
		synctest.Wait()
		if !b.srv.HoldsLease(mac(1).String(), ip) {
			t.Fatalf("b does not know a's lease of %v", ip)
		}
		// b offers the two other addresses, never a's.
		for i := 2; i <= 3; i++ {
			if got := b.dora(mac(i)); !got.IsValid() || got == ip {
				t.Fatalf("b gave mac %d %v (a's lease is %v)", i, got, ip)
			}
		}
		synctest.Wait()
		if got := a.offer(mac(4)); got.IsValid() {
			t.Errorf("a offered %v with every address bound by a or b", got)
		}
		// a frees its lease: b forgets it, and the address is b's to give.
		rel := a.msg(mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.IP(ip.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))))
		if r := a.ask(rel); r != nil {
			t.Fatalf("RELEASE answered: %s", r.Summary())
		}
		synctest.Wait()
		if b.srv.HoldsLease(mac(1).String(), ip) {
			t.Fatal("b still holds the released lease")
		}
		if got := b.dora(mac(5)); got != ip {
			t.Errorf("b gave mac 5 %v, want the released %v", got, ip)
		}
	})
}
