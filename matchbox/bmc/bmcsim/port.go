package bmcsim

import (
	"errors"
	"fmt"
	"iter"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Port reservation for simulators that bind a port themselves.
//
// ipmi_sim takes a port number in its configuration, not an open socket,
// and a restart closes its socket and binds the port again. A port picked
// by binding 127.0.0.1:0 and closing it is free for anyone during those
// gaps: the other test binaries of a run (go test runs packages in
// parallel) bind :0 all the time, and the kernel hands such binds exactly
// the ports of its ephemeral range, ip_local_port_range, which a port just
// released is in. So bmcsim takes its ports from outside that range, where
// no :0 bind (nor any client's implicit bind) ever lands, and reserves each
// one against the other simulators of the run with a lock that lasts as
// long as the simulator: an abstract unix socket named after the port,
// which every process of the network namespace shares, which no file
// permission or leftover file gets in the way of, and which the kernel
// frees when the holder exits.
const (
	// reservedPortLock names the abstract unix socket that reserves a UDP
	// port ("@" makes Go bind it in the abstract namespace).
	reservedPortLock = "@matchbox-test-udp-port-%d"
	// reservedPortMin is the lowest port handed out: unprivileged ports
	// only.
	reservedPortMin = 1024
	// ephemeralRangeFile is the kernel's range of ports for :0 binds, per
	// network namespace.
	ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
)

// portReservation is a UDP port of 127.0.0.1 that no other test of the run
// can be given while it is held, whether or not anything has it bound.
type portReservation struct {
	port int
	lock net.PacketConn
}

// release ends the reservation. It is safe to call more than once.
func (r *portReservation) release() {
	if r.lock != nil {
		_ = r.lock.Close()
		r.lock = nil
	}
}

// reserveUDPPort reserves a UDP port of 127.0.0.1 outside the ephemeral
// port range of this process's network namespace and, when netns is set,
// of that namespace too (each namespace has its own range and a new one
// starts at the kernel's default). It takes the first port, counting down
// from just below the range (then up from just above it), that no other
// test of the run has reserved and that is not bound here by anything
// else: a service of the machine may hold a port out of the range, but it
// binds it at its start, not in the middle of a test. (Inside netns, a
// namespace the test made, only what the test runs binds ports.)
func reserveUDPPort(netns string) (*portReservation, error) {
	lo, hi, err := ephemeralPorts("")
	if err != nil {
		return nil, err
	}
	if netns != "" {
		nlo, nhi, err := ephemeralPorts(netns)
		if err != nil {
			return nil, err
		}
		lo, hi = min(lo, nlo), max(hi, nhi)
	}
	var tried int
	var last error
	for p := range portsOutside(lo, hi) {
		tried++
		lock, err := net.ListenPacket("unixgram", fmt.Sprintf(reservedPortLock, p))
		if err != nil {
			last = err // reserved by another test
			continue
		}
		if netns == "" {
			// Nothing of the run binds a reserved port, but something
			// else on the machine may hold this one.
			c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				_ = lock.Close()
				last = err
				continue
			}
			_ = c.Close()
		}
		return &portReservation{port: p, lock: lock}, nil
	}
	if tried == 0 {
		return nil, fmt.Errorf("no unprivileged UDP port outside the ephemeral range %d-%d (%s)", lo, hi, ephemeralRangeFile)
	}
	return nil, fmt.Errorf("reserving a UDP port outside the ephemeral range %d-%d: all %d taken (last: %w)", lo, hi, tried, last)
}

// portsOutside yields the unprivileged ports below lo, counting down, then
// those above hi, counting up.
func portsOutside(lo, hi int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for p := lo - 1; p >= reservedPortMin; p-- {
			if !yield(p) {
				return
			}
		}
		for p := max(hi+1, reservedPortMin); p <= 65535; p++ {
			if !yield(p) {
				return
			}
		}
	}
}

// ephemeralPorts returns the range of ports the kernel gives :0 binds in
// this process's network namespace, or in netns when it is set.
func ephemeralPorts(netns string) (lo, hi int, err error) {
	var b []byte
	if netns == "" {
		b, err = os.ReadFile(ephemeralRangeFile)
	} else {
		// /proc/sys/net shows the namespace of the process that opens it.
		b, err = exec.Command("ip", "netns", "exec", netns, "cat", ephemeralRangeFile).Output()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("reading the ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("reading the ephemeral port range: unexpected %s %q", ephemeralRangeFile, b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err := errors.Join(err1, err2); err != nil || lo > hi {
		return 0, 0, fmt.Errorf("reading the ephemeral port range: unexpected %s %q", ephemeralRangeFile, b)
	}
	return lo, hi, nil
}
