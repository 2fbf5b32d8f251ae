// Package loopback lets a test play several hosts: connections from a
// chosen loopback source address (on Linux every 127/8 address is
// loopback), so per-address limits and bindings can be tested without
// leaving the machine.
package loopback

import (
	"net"
	nethttp "net/http"
	"testing"
	"time"
)

// Dialer dials from src (an address of 127/8).
func Dialer(src string, timeout time.Duration) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
}

// Dial connects to addr from src, failing the test otherwise; the
// connection is closed with the test, and every read and write on it ends
// within timeout.
func Dial(t testing.TB, src, addr string, timeout time.Duration) net.Conn {
	t.Helper()
	c, err := Dialer(src, timeout).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(timeout))
	return c
}

// Client is an HTTP client whose connections come from src.
func Client(src string, timeout time.Duration) *nethttp.Client {
	return &nethttp.Client{Transport: &nethttp.Transport{DialContext: Dialer(src, timeout).DialContext}, Timeout: timeout}
}
