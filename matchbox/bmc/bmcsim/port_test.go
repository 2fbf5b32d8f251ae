package bmcsim

import (
	"net"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReserveUDPPort(t *testing.T) {
	lo, hi, err := ephemeralPorts("")
	if err != nil {
		t.Fatal(err)
	}
	a, err := reserveUDPPort("")
	if err != nil {
		t.Fatal(err)
	}
	defer a.release()
	if a.port >= lo && a.port <= hi || a.port < reservedPortMin {
		t.Errorf("reserved port %d, inside the ephemeral range %d-%d or privileged", a.port, lo, hi)
	}
	// A held reservation is not handed out again, by this process or
	// another one.
	b, err := reserveUDPPort("")
	if err != nil {
		t.Fatal(err)
	}
	defer b.release()
	if b.port == a.port {
		t.Errorf("port %d reserved twice", a.port)
	}
	// A port bound by something that does not reserve is skipped.
	p := a.port
	a.release()
	a.release() // idempotent
	c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("binding the released port %d: %v", p, err)
	}
	defer c.Close()
	d, err := reserveUDPPort("")
	if err != nil {
		t.Fatal(err)
	}
	defer d.release()
	if d.port == p || d.port == b.port {
		t.Errorf("reserved port %d, which is bound or reserved", d.port)
	}
}

func TestPortsOutside(t *testing.T) {
	got := slices.Collect(portsOutside(1027, 65532))
	if diff := cmp.Diff([]int{1026, 1025, 1024, 65533, 65534, 65535}, got); diff != "" {
		t.Errorf("portsOutside(1027, 65532) (-want +got):\n%s", diff)
	}
	if got := slices.Collect(portsOutside(1024, 65535)); len(got) != 0 {
		t.Errorf("portsOutside(1024, 65535) = %v, want none", got)
	}
}
