package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// fromAddr is an HTTP client whose connections come from the loopback
// address src (every 127/8 address is loopback on Linux).
func fromAddr(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

func getFrom(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var dhcpAddrRE = regexp.MustCompile(`msg="dhcp serving" interface=lo mode=full address=\S+:(\d+) pxe_port=false`)

// With the DHCP server in full mode (here on the loopback interface, with
// a range of 127/8 addresses), configs are bound to leases by default: the
// machine at its lease address gets its config, any other host 403 and an
// event on the machine; and a request naming a MAC no lease confirms adds
// no machine to the inventory.
func TestConfigBindingByLease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: the DHCP server binds to the loopback interface (SO_BINDTODEVICE); CI does")
	}
	const mac = "52:54:00:be:ef:01"
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "groups", "node.json"), `{"id":"node","profile":"node","selector":{"mac":"`+mac+`"},"metadata":{"secret":"s3cr3t"}}`)
	writeFile(t, filepath.Join(data, "profiles", "node.json"), `{"id":"node","ignition_id":"node.ign","boot":{"kernel":"/k","args":["console=ttyS0"]}}`)
	writeFile(t, filepath.Join(data, "ignition", "node.ign"), `{"ignition":{"version":"3.4.0"}}`)
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-log-level", "debug",
		"-dhcp-mode", "full", "-dhcp-interface", "lo", "-dhcp-range", "127.0.0.100,127.0.0.110", "-dhcp-port", "0", "-dhcp-pxe-port", "0")
	m := dhcpAddrRE.FindStringSubmatch(s.log.String())
	if m == nil {
		t.Fatalf("no DHCP address in the log:\n%s", s.log.String())
	}
	if !strings.Contains(s.log.String(), "config binding by lease") {
		t.Error("the log does not say configs are bound to leases")
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: atoi(t, m[1])}
	hw, _ := net.ParseMAC(mac)
	c, err := nclient4.NewWithConn(conn, hw, nclient4.WithServerAddr(server), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lease, err := c.Request(ctx)
	if err != nil {
		t.Fatalf("DORA: %v", err)
	}
	leased := lease.ACK.YourIPAddr.String()

	machine, stranger := fromAddr(leased), fromAddr("127.0.0.1")
	// A stranger first asks for a machine nobody knows: no record.
	if code, _ := getFrom(t, stranger, s.url+"/ipxe?mac=52:54:00:0d:d0:01"); code != 404 {
		t.Errorf("/ipxe of an unknown machine: %d", code)
	}
	for _, tc := range []struct {
		c    *http.Client
		path string
		code int
		want string
	}{
		{machine, "/ignition?mac=" + mac, 200, `"version":"3.4.0"`},
		{machine, "/metadata?mac=" + mac, 200, "SECRET=s3cr3t"},
		{stranger, "/ignition?mac=" + mac, 403, "config binding"},
		{stranger, "/metadata?mac=" + mac, 403, "not to 127.0.0.1"},
		{stranger, "/ignition?uuid=x", 403, "names no MAC"},
		{stranger, "/ipxe?mac=" + mac, 200, "#!ipxe"},
	} {
		code, body := getFrom(t, tc.c, s.url+tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s from %s: %d %q, want %d with %q", tc.path, map[bool]string{true: leased, false: "127.0.0.1"}[tc.c == machine], code, body, tc.code, tc.want)
		}
	}
	// The refusal is an event on the machine (events are written in
	// batches: wait for it, bounded).
	token, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	var events []struct{ Kind, Detail, IP string }
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out := apiCall(t, "GET", s.apiURL+"/api/v1/machines/"+mac+"/events", strings.TrimSpace(string(token)), nil)
		if code == 200 {
			events = nil
			_ = json.Unmarshal([]byte(out), &events)
			if strings.Contains(out, "403: forbidden: config binding") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 403 event on the machine: %d %s", code, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, out := apiCall(t, "GET", s.apiURL+"/api/v1/machines/52:54:00:0d:d0:01", strings.TrimSpace(string(token)), nil); code != 404 {
		t.Errorf("a request naming an unknown MAC added a machine: %d %s", code, out)
	}
	code, out := apiCall(t, "GET", s.apiURL+"/api/v1/machines/"+mac, strings.TrimSpace(string(token)), nil)
	if code != 200 || !strings.Contains(out, `"last_ip": "`+leased+`"`) {
		t.Errorf("machine record: %d %s (want last_ip %s: the stranger's address is not the machine's)", code, out, leased)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
