package netboot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"matchbox.dev/matchbox/bmc/bmcsim"
)

const (
	apiAddr    = "127.0.0.1:8081"
	apiToken   = "mbx_netboot_test_token_0123456789"
	ipmiPasswd = "ipmi-Pa55-42"
)

// cli runs the matchbox CLI inside the lab's namespace.
func (l *lab) cli(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns, shared.bin}, args...)...)
	cmd.Env = append(os.Environ(), "MATCHBOX_ENDPOINT=http://"+apiAddr, "MATCHBOX_TOKEN="+apiToken)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), ipmiPasswd) {
		l.t.Errorf("the CLI shows the BMC password: %s", out)
	}
	return string(out), err
}

// machineIP is the last address of the machine its record holds (its
// DHCP lease).
func (l *lab) machineIP(mac string) string {
	l.t.Helper()
	out, err := l.cli("machine", "get", mac, "-o", "json")
	if err != nil {
		l.t.Fatalf("machine get: %v: %s", err, out)
	}
	var m struct {
		Machine struct {
			LastIP string `json:"last_ip"`
		} `json:"machine"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Machine.LastIP == "" {
		l.t.Fatalf("machine get: no last_ip: %v: %s", err, out)
	}
	return m.Machine.LastIP
}

// hostAddr is the lab namespace's own address on its bridge.
func (l *lab) hostAddr() string {
	host, _, _ := net.SplitHostPort(httpAddr)
	return host
}

// postFrom POSTs an empty body to url from inside the lab's namespace,
// from the address src (local there).
func (l *lab) postFrom(src, url string) (int, string) {
	l.t.Helper()
	addr := strings.TrimPrefix(url, "http://")
	addr, _, _ = strings.Cut(addr, "/")
	type dialed struct {
		c   net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		// Never unlocked: the thread, moved into the namespace, ends
		// with this goroutine. The socket is made here, so it lives in
		// the namespace.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+l.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- dialed{err: err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- dialed{err: err}
			return
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", addr)
		ch <- dialed{c, err}
	}()
	dc := <-ch
	if dc.err != nil {
		l.t.Fatalf("connect from %s in %s: %v", src, l.ns, dc.err)
	}
	used := false
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("one connection only")
			}
			used = true
			return dc.c, nil
		}}}
	resp, err := client.Post(url, "text/plain", strings.NewReader(""))
	if err != nil {
		l.t.Fatalf("POST %s from %s: %v", url, src, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// workflowState is the machine's reinstall state (empty before any).
func (l *lab) workflowState(mac string) (string, string) {
	out, err := l.cli("machine", "get", mac, "-o", "json")
	if err != nil {
		return "", ""
	}
	var m struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal([]byte(out), &m)
	return m.State, m.Reason
}

func (l *lab) waitWorkflow(mac, want string, d time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, reason := l.workflowState(mac)
		if st == want {
			return
		}
		if st == "failed" || time.Now().After(deadline) {
			l.t.Fatalf("reinstall of %s: state %q (%s), want %q\nmatchbox log:\n%s", mac, st, reason, want, tail(l.mbLog.String(), 6000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A reinstall as an operator runs it, against a real IPMI BMC whose
// chassis control starts and stops a QEMU VM: matchbox powers the VM off,
// sets a one-time network boot and powers it on; the VM boots through
// matchbox's DHCP, iPXE and HTTP into the installer stand-in, which
// fetches its config with the reinstall token, writes a marker to its
// disk and reports; matchbox is killed and restarted in the middle and
// resumes. Powered on again, the VM is sent to its disk; the first-boot
// report ends the reinstall.
func TestReinstallWithIPMI(t *testing.T) {
	l := newLab(t)
	const mac = "52:54:00:77:00:10"
	data := filepath.Join(l.dir, "data")
	for path, body := range map[string]string{
		"profiles/test-install.json": `{"id": "test-install", "boot": {"kernel": "/assets/vmlinuz", "initrd": ["--name main /assets/initrd.gz"],
			"args": ["initrd=main", "console=ttyS0", "mbtest.install=1",
			"ignition.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}{{with index . \"reinstall\"}}&token={{.token}}{{end}}"]},
			"ignition_id": "test-install.yaml"}`,
		"ignition/test-install.yaml": "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /etc/marker\n      contents:\n        inline: installed-by-matchbox\n",
	} {
		if err := os.WriteFile(filepath.Join(data, path), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(l.dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The chassis: power on starts the VM (each boot logs to its own
	// serial file), power off stops it.
	pid := filepath.Join(l.dir, "qemu.pid")
	boots := filepath.Join(l.dir, "boots")
	powerOn := fmt.Sprintf(`n=$(( $(cat %[1]s 2>/dev/null || echo 0) + 1 )); echo $n > %[1]s; `+
		`qemu-system-x86_64 -accel %[2]s -m 768 -display none -monitor none -serial file:%[3]s/boot-$n.serial -no-reboot `+
		`-daemonize -pidfile %[4]s -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -machine pc,graphics=off -boot n `+
		`-device virtio-net-pci,netdev=n0,mac=%[5]s -drive file=%[6]s,format=raw,if=virtio`,
		boots, shared.accel, l.dir, pid, mac, disk)
	powerOff := fmt.Sprintf(`if [ -f %[1]s ]; then p=$(cat %[1]s); kill $p 2>/dev/null; `+
		`for i in $(seq 100); do kill -0 $p 2>/dev/null || break; sleep 0.1; done; rm -f %[1]s; fi`, pid)
	sim := bmcsim.StartIPMI(t, bmcsim.IPMIConfig{User: "admin", Password: ipmiPasswd, PowerOn: powerOn, PowerOff: powerOff, Netns: l.ns, InitialPower: true})
	t.Cleanup(func() {
		if p, err := os.ReadFile(pid); err == nil {
			_ = exec.Command("kill", strings.TrimSpace(string(p))).Run()
		}
	})
	tokenFile := filepath.Join(l.dir, "api.token")
	if err := os.WriteFile(tokenFile, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-dhcp-mode", "full", "-dhcp-range", "192.168.77.100,192.168.77.150",
		"-api-address", apiAddr, "-api-token-file", tokenFile, "-secret-key-file", filepath.Join(l.dir, "secret.key"),
		"-reinstall-profile", "test-install", "-reinstall-boot-timeout", (2 * shared.timeout).String(), "-bmc-timeout", "30s", "-bmc-provider-timeout", "15s"}
	l.startMatchbox(args...)

	// A machine racked but never booted: its BMC settings register it.
	pw := filepath.Join(l.dir, "bmc.pw")
	if err := os.WriteFile(pw, []byte(ipmiPasswd+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.cli("machine", "bmc", "set", mac, "--address", sim.Addr, "--provider", "ipmitool", "--username", "admin", "--password-file", pw); err != nil {
		t.Fatalf("bmc set: %v: %s", err, out)
	}
	if out, err := l.cli("machine", "power", mac, "status"); err != nil || !strings.Contains(out, "power: on") {
		t.Fatalf("power status: %v: %s", err, out)
	}

	// The operator's command, followed to the end.
	wait := exec.Command("ip", "netns", "exec", l.ns, shared.bin, "machine", "reinstall", mac, "--wait", "--interval", "500ms")
	wait.Env = append(os.Environ(), "MATCHBOX_ENDPOINT=http://"+apiAddr, "MATCHBOX_TOKEN="+apiToken)
	var waitOut lockedBuffer
	wait.Stdout, wait.Stderr = &waitOut, &waitOut
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- wait.Wait() }()
	t.Cleanup(func() { _ = wait.Process.Kill() })

	// Killed as soon as the VM is powered on, matchbox resumes.
	l.waitWorkflow(mac, "booting", time.Minute)
	waitFor(t, time.Minute, "the BMC to power the machine on", sim.Power)
	if opts, ok := sim.BootOptions(); !ok || opts.Device != "pxe" || opts.Persistent {
		t.Errorf("boot options %+v (%v), want a one-time network boot", opts, ok)
	}
	// (Its events are written at once; the kill must not race that.)
	waitFor(t, 10*time.Second, "the power-on event", func() bool {
		out, _ := l.cli("machine", "events", mac)
		return strings.Contains(out, "bmc file=power on")
	})
	_ = l.mb.Process.Kill()
	_ = l.mb.Wait()
	l.startMatchbox(args...)
	if !strings.Contains(l.mbLog.String(), "reinstall resumed") {
		t.Errorf("matchbox did not resume the reinstall:\n%s", l.mbLog.String())
	}

	l.waitWorkflow(mac, "installed", 2*shared.timeout)
	serial1 := waitSerial(t, filepath.Join(l.dir, "boot-1.serial"), "MBTEST: reported installed", shared.timeout)
	m := regexp.MustCompile(`token=([0-9a-f]{32})`).FindStringSubmatch(serial1)
	if m == nil {
		t.Fatalf("no token on the installer's command line:\n%s", tail(serial1, 3000))
	}
	token := m[1]
	marker, err := os.ReadFile(disk)
	if err != nil || !strings.HasPrefix(string(marker), "MBTEST-MARKER "+token) {
		t.Fatalf("the VM's disk does not hold the installer's marker: %q", marker[:min(len(marker), 64)])
	}

	// The next power-on: the machine is no longer given the installer.
	for _, action := range []string{"off", "on"} {
		if out, err := l.cli("machine", "power", mac, action); err != nil {
			t.Fatalf("power %s: %v: %s", action, err, out)
		}
	}
	serial2 := waitSerial(t, filepath.Join(l.dir, "boot-2.serial"), "booting from disk", shared.timeout)
	if strings.Contains(serial2, "Linux version") || strings.Contains(serial2, "mbtest.install") {
		t.Errorf("the installed machine booted the installer again:\n%s", tail(serial2, 3000))
	}
	if out, err := l.cli("machine", "power", mac, "off"); err != nil {
		t.Fatalf("power off: %v: %s", err, out)
	}

	// The installed system's first-boot report, as it would send it:
	// from the machine's lease address (configs and reports are bound to
	// leases in full mode), not from the namespace's own.
	reportURL := "http://" + httpAddr + "/lifecycle/report?mac=" + mac + "&token=" + token + "&status=booted"
	if code, body := l.postFrom(l.hostAddr(), reportURL); code != 403 {
		t.Errorf("a report from another address than the machine's lease: %d %s, want 403", code, body)
	}
	leased := l.machineIP(mac)
	if out, err := exec.Command("ip", "netns", "exec", l.ns, "ip", "addr", "add", leased+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("add the machine's address %s: %v: %s", leased, err, out)
	}
	if code, body := l.postFrom(leased, reportURL); code != 200 {
		t.Fatalf("first-boot report: %d %s", code, body)
	}
	select {
	case err := <-waitDone:
		if err != nil {
			t.Fatalf("reinstall --wait: %v\n%s", err, waitOut.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("reinstall --wait did not return:\n%s", waitOut.String())
	}
	out := waitOut.String()
	at := 0
	for _, st := range []string{"requested", "bmc-prep", "booting", "installing", "installed", "active"} {
		i := strings.Index(out[at:], mac+"  "+st)
		if i < 0 {
			t.Fatalf("reinstall --wait did not show %s (in order):\n%s", st, out)
		}
		at += i
	}
	events, err := l.cli("machine", "events", mac)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bmc file=power off", "bmc file=boot device pxe", "bmc file=power on", "dhcp.ack",
		"http.served file=/ipxe", "http.served file=/ignition", "install.report", "reinstall: installed", "installed -> active"} {
		if !strings.Contains(events, want) {
			t.Errorf("machine events lack %q:\n%s", want, events)
		}
	}
	if strings.Contains(l.mbLog.String(), ipmiPasswd) {
		t.Error("the matchbox log shows the BMC password")
	}
}

// waitSerial waits until a VM's serial log holds want, and returns it.
func waitSerial(t *testing.T, path, want string, d time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), want) {
			return string(data)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never showed %q; tail:\n%s", path, want, tail(string(data), 3000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
