package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// rcvBuf is the receive buffer asked for each DHCP socket.
const rcvBuf = 8 << 20

// ListenInterface opens a UDP socket on port bound to the network
// interface ifname (SO_BINDTODEVICE), able to receive and send broadcasts,
// so that replies leave through the interface the request came in on.
// Ports below 1024 need CAP_NET_BIND_SERVICE; binding to a device needs
// CAP_NET_RAW on older kernels.
func ListenInterface(ctx context.Context, ifname string, port int) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []struct{ level, opt int }{
				{unix.SOL_SOCKET, unix.SO_REUSEADDR},
				{unix.SOL_SOCKET, unix.SO_BROADCAST},
			} {
				if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, 1); serr != nil {
					return
				}
			}
			// A large receive buffer absorbs boot storms (a rack powering
			// on at once). SO_RCVBUFFORCE passes rmem_max when privileged;
			// otherwise the kernel caps SO_RCVBUF, which is fine.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
			}
			if ifname != "" {
				serr = unix.BindToDevice(int(fd), ifname)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s port %d: %w", ifname, port, err)
	}
	return conn, nil
}

// InterfacePrefix returns the first IPv4 address of ifname with its prefix.
func InterfacePrefix(ifname string) (netip.Prefix, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("dhcp: interface %s: %w", ifname, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("dhcp: interface %s: %w", ifname, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP.To4())
		if !ok {
			continue
		}
		bits, _ := ipn.Mask.Size()
		return netip.PrefixFrom(ip, bits), nil
	}
	return netip.Prefix{}, fmt.Errorf("dhcp: interface %s has no IPv4 address", ifname)
}
