package netboot

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// env is what every case shares: the matchbox binary, the kernel and
// initramfs, and the accelerator QEMU uses.
type env struct {
	dir     string
	bin     string
	kernel  string
	initrd  string
	accel   string
	timeout time.Duration
}

var shared *env

func TestMain(m *testing.M) {
	code := func() int {
		e, err := setup()
		if err != nil {
			fmt.Fprintln(os.Stderr, "netboot tests:", err)
			return 1
		}
		defer os.RemoveAll(e.dir)
		shared = e
		return m.Run()
	}()
	os.Exit(code)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func setup() (*env, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (network namespaces and tap devices); CI does")
	}
	for _, p := range []string{"qemu-system-x86_64", "busybox", "cpio", "ip", "dpkg-deb"} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("%s not found: run scripts/install-test-deps", p)
		}
	}
	cache := os.Getenv("MATCHBOX_TEST_CACHE")
	if cache == "" {
		cache = "/var/cache/matchbox-test"
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*-cloud-amd64_*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("no cloud kernel package in %s: run scripts/install-test-deps", cache)
	}
	dir, err := os.MkdirTemp("", "matchbox-netboot")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, bin: filepath.Join(dir, "matchbox")}
	if err := run("go", "build", "-o", e.bin, "matchbox.dev/cmd/matchbox"); err != nil {
		return nil, err
	}
	if err := e.buildInitramfs(debs[len(debs)-1]); err != nil {
		return nil, err
	}
	e.accel, e.timeout = probeAccel(dir)
	return e, nil
}

// initScript runs in the booted test system: network up by DHCP, fetch
// the Ignition URL from the kernel command line, print it, power off.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "MBTEST: init started"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  insmod /lib/modules/$m.ko || echo "MBTEST: insmod $m failed"
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 1; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /udhcpc.sh -n -q -t 10 -T 2 || echo "MBTEST: dhcp failed"
url=$(sed -n 's/.*ignition.config.url=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "MBTEST: ignition url $url"
timeout 30 wget -q -O /tmp/ign "$url" || echo "MBTEST: fetch failed"
if grep -q mbtest.install=1 /proc/cmdline; then
  # The installer stand-in: check the install config, write a marker to
  # the disk, report to matchbox with the token, power off.
  insmod /lib/modules/virtio_blk.ko || echo "MBTEST: insmod virtio_blk failed"
  for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/vda ] && break; sleep 1; done
  base=${url%%/ignition*}
  mac=$(echo "$url" | sed -n 's/.*[?&]mac=\([^&]*\).*/\1/p')
  token=$(echo "$url" | sed -n 's/.*[?&]token=\([^&]*\).*/\1/p')
  status=failed rc=1
  if grep -q installed-by-matchbox /tmp/ign && echo "MBTEST-MARKER $token" | dd of=/dev/vda conv=fsync 2>/dev/null; then
    status=installed rc=0
  fi
  echo "MBTEST: install $status"
  timeout 30 wget -q -O - --post-data "install stand-in: marker written for $mac" \
    "$base/lifecycle/report?mac=$mac&token=$token&status=$status&exit=$rc" && echo "MBTEST: reported $status"
  poweroff -f
fi
echo "MBTEST: ignition begin"
cat /tmp/ign
echo
echo "MBTEST: ignition end"
poweroff -f
`

const udhcpcScript = `#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "MBTEST: dhcp bound $ip"
    ;;
esac
exit 0
`

// buildInitramfs unpacks Debian's cloud kernel (virtio_net is a module
// there) and packs busybox, the virtio modules and the init script.
func (e *env) buildInitramfs(deb string) error {
	x := filepath.Join(e.dir, "kernel")
	if err := run("dpkg-deb", "-x", deb, x); err != nil {
		return err
	}
	kernels, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("kernel package %s: want one vmlinuz, have %v", deb, kernels)
	}
	e.kernel = kernels[0]
	root := filepath.Join(e.dir, "initramfs")
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	if err := copyFile(bb, filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	for _, m := range []string{"drivers/virtio/virtio", "drivers/virtio/virtio_ring", "drivers/virtio/virtio_pci_modern_dev",
		"drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci", "net/core/failover", "drivers/net/net_failover", "drivers/net/virtio_net",
		"drivers/block/virtio_blk"} {
		found, _ := filepath.Glob(filepath.Join(x, "lib", "modules", "*", "kernel", m+".ko"))
		if len(found) != 1 {
			return fmt.Errorf("module %s not in %s", m, deb)
		}
		if err := copyFile(found[0], filepath.Join(root, "lib", "modules", filepath.Base(found[0])), 0o644); err != nil {
			return err
		}
	}
	for name, body := range map[string]string{"init": initScript, "udhcpc.sh": udhcpcScript} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	e.initrd = filepath.Join(e.dir, "initrd.gz")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc 2>/dev/null | gzip -1 > "+e.initrd)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pack initramfs: %v: %s", err, out)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// probeAccel tries KVM once, bounded: on some hosts KVM cannot run the
// firmware's real-mode code and QEMU stops (or hangs) right after the
// iPXE ROM starts, or inside OVMF. Each firmware must get as far as its
// network stack under KVM within the bound (QEMU's user network, no
// packets leave it); otherwise TCG, slower but always working.
func probeAccel(dir string) (string, time.Duration) {
	const tcg = 4 * time.Minute
	if os.Getenv("MATCHBOX_TEST_ACCEL") == "tcg" {
		return "tcg", tcg
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		return "tcg", tcg
	} else {
		f.Close()
	}
	vars := filepath.Join(dir, "probe-vars.fd")
	if err := copyFile("/usr/share/OVMF/OVMF_VARS_4M.fd", vars, 0o644); err != nil {
		return "tcg", tcg
	}
	probes := []struct {
		args []string
		want string
	}{
		{[]string{"-machine", "pc,graphics=off", "-boot", "n", "-device", "virtio-net-pci,netdev=n0"}, "net0:"},
		{[]string{"-machine", "q35", "-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,file=" + vars, "-device", "virtio-net-pci,netdev=n0,romfile="}, "Start PXE over IPv4"},
	}
	for i, p := range probes {
		serial := filepath.Join(dir, fmt.Sprintf("probe%d.log", i))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := append([]string{"-accel", "kvm", "-m", "512", "-display", "none", "-monitor", "none",
			"-serial", "file:" + serial, "-no-reboot", "-netdev", "user,id=n0,restrict=on"}, p.args...)
		cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
		_ = cmd.Start()
		ok := false
		for ctx.Err() == nil && !ok {
			time.Sleep(200 * time.Millisecond)
			log, _ := os.ReadFile(serial)
			ok = strings.Contains(string(log), p.want)
		}
		cancel()
		_ = cmd.Wait()
		if !ok {
			return "tcg", tcg
		}
	}
	return "kvm", 2 * time.Minute
}

// lab is one network namespace with a bridge, a tap device for the VM and
// matchbox serving on the bridge.
type lab struct {
	t      *testing.T
	ns     string
	dir    string
	mb     *exec.Cmd
	mbLog  *lockedBuffer
	dbPath string
	extra  []*exec.Cmd
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// matchbox's fixed addresses in the lab namespace (also apiAddr, the TFTP
// and DHCP ports). A test that restarts matchbox binds them again; no other
// socket can take them in between: the namespace is the test's own, and
// everything else in it binds ports of the ephemeral range (32768-60999 in
// a new namespace), or, ipmi_sim, the port bmcsim reserved for it, just
// below that range.
const (
	serverIP = "192.168.77.1"
	httpAddr = serverIP + ":8080"
)

var nsSeq int

func newLab(t *testing.T) *lab {
	t.Helper()
	nsSeq++
	l := &lab{t: t, ns: fmt.Sprintf("mbtest-%d-%d", os.Getpid(), nsSeq), dir: t.TempDir()}
	if err := run("ip", "netns", "add", l.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", serverIP + "/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
		{"tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"link", "set", "tap0", "master", "br0"},
		{"link", "set", "tap0", "up"},
	} {
		if err := run("ip", append([]string{"-n", l.ns}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	// The data dir: every machine boots the test kernel and initramfs
	// and gets a Butane config naming it.
	data := filepath.Join(l.dir, "data")
	assets := filepath.Join(l.dir, "assets")
	for path, body := range map[string]string{
		"profiles/test.json": `{"id": "test", "boot": {"kernel": "/assets/vmlinuz", "initrd": ["--name main /assets/initrd.gz"],
			"args": ["initrd=main", "console=ttyS0", "ignition.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}"]},
			"ignition_id": "test.yaml"}`,
		"groups/default.json": `{"id": "default", "profile": "test", "metadata": {"greeting": "hello from matchbox"}}`,
		"ignition/test.yaml":  "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        inline: \"{{.greeting}} to {{.request.query.mac}}\"\n",
	} {
		p := filepath.Join(data, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(assets, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{shared.kernel: "vmlinuz", shared.initrd: "initrd.gz"} {
		if err := copyFile(src, filepath.Join(assets, dst), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l *lab) close() {
	for _, c := range append(l.extra, l.mb) {
		if c != nil && c.Process != nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	_ = run("ip", "netns", "del", l.ns)
}

// startMatchbox runs matchbox inside the namespace, answering on br0.
func (l *lab) startMatchbox(args ...string) {
	l.t.Helper()
	l.dbPath = filepath.Join(l.dir, "matchbox.db")
	full := []string{"netns", "exec", l.ns, shared.bin, "serve",
		"-address", httpAddr, "-data-path", filepath.Join(l.dir, "data"), "-assets-path", filepath.Join(l.dir, "assets"),
		"-db-path", l.dbPath, "-tftp-address", serverIP + ":69",
		// Per-transfer lines ("tftp: sent", checked by checkBoot) are
		// debug lines.
		"-log-level", "debug"}
	if !slices.Contains(args, "-config") {
		full = append(full, "-dhcp-interface", "br0")
	}
	full = append(full, args...)
	l.mb = exec.Command("ip", full...)
	l.mbLog = &lockedBuffer{}
	l.mb.Stdout, l.mb.Stderr = l.mbLog, l.mbLog
	if err := l.mb.Start(); err != nil {
		l.t.Fatal(err)
	}
	waitFor(l.t, 20*time.Second, "matchbox to start", func() bool { return strings.Contains(l.mbLog.String(), "matchbox serving") })
}

// stopMatchbox stops matchbox gracefully, so its events are written.
func (l *lab) stopMatchbox() {
	l.t.Helper()
	_ = l.mb.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- l.mb.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			l.t.Errorf("matchbox exit: %v\n%s", err, l.mbLog.String())
		}
	case <-time.After(20 * time.Second):
		l.t.Error("matchbox did not stop")
	}
	l.mb = nil
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type firmware string

const (
	seabios firmware = "seabios"
	ovmf    firmware = "ovmf"
)

// bootVM boots a VM with mac on the lab network until the test system
// powers off (or the time bound), and returns its serial console log.
func (l *lab) bootVM(fw firmware, mac string) string {
	l.t.Helper()
	serial := filepath.Join(l.dir, string(fw)+".serial")
	args := []string{"netns", "exec", l.ns, "qemu-system-x86_64", "-accel", shared.accel, "-m", "768",
		"-display", "none", "-monitor", "none", "-serial", "file:" + serial, "-no-reboot",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"}
	switch fw {
	case seabios:
		// QEMU's legacy NIC ROM is iPXE (Debian's ipxe-qemu).
		args = append(args, "-machine", "pc,graphics=off", "-boot", "n",
			"-device", "virtio-net-pci,netdev=n0,mac="+mac)
	case ovmf:
		vars := filepath.Join(l.dir, "OVMF_VARS.fd")
		if err := copyFile("/usr/share/OVMF/OVMF_VARS_4M.fd", vars, 0o644); err != nil {
			l.t.Fatal(err)
		}
		// No option ROM on the NIC: OVMF's own PXE client boots, over TFTP.
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,file="+vars,
			"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+mac)
	}
	ctx, cancel := context.WithTimeout(context.Background(), shared.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	out, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(serial)
	if ctx.Err() != nil {
		l.t.Fatalf("%s VM did not finish within %v (accel %s); serial log tail:\n%s\nmatchbox log:\n%s",
			fw, shared.timeout, shared.accel, tail(string(log), 3000), tail(l.mbLog.String(), 4000))
	}
	if err != nil {
		l.t.Fatalf("qemu: %v: %s", err, out)
	}
	return string(log)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// checkBoot asserts every stage of one boot from the serial console and
// from matchbox's recorded machine events.
func (l *lab) checkBoot(fw firmware, mac, serial string, viaTFTP bool, dhcpEvents []matchbox.EventKind) {
	l.t.Helper()
	hyphen := strings.ReplaceAll(mac, ":", "-")
	stages := []string{}
	if fw == ovmf {
		stages = append(stages, "Start PXE over IPv4", "NBP filename is ipxe.efi")
	}
	stages = append(stages,
		"iPXE",
		"http://"+httpAddr+"/boot.ipxe",
		"ignition.config.url=http://"+httpAddr+"/ignition?uuid=",
		"Run /init as init process",
		"MBTEST: dhcp bound 192.168.77.",
		"MBTEST: ignition begin",
		`"version":"3.4.0"`,
		"hello%20from%20matchbox%20to%20"+strings.ReplaceAll(mac, ":", "%3A"),
		"MBTEST: ignition end",
	)
	at := 0
	for _, s := range stages {
		i := strings.Index(serial[at:], s)
		if i < 0 {
			l.t.Fatalf("%s: stage %q missing from the serial console (after byte %d); tail:\n%s\nmatchbox log:\n%s",
				fw, s, at, tail(serial, 3000), tail(l.mbLog.String(), 4000))
		}
		at += i + len(s)
	}
	if !strings.Contains(serial, "mac="+hyphen) {
		l.t.Errorf("%s: the kernel command line lacks the machine's MAC", fw)
	}
	if viaTFTP && fw == ovmf {
		// OVMF asks for windowsize 4 (RFC 7440): the download must have
		// been served in windows.
		sent := ""
		for _, line := range strings.Split(l.mbLog.String(), "\n") {
			if strings.Contains(line, "tftp: sent") && strings.Contains(line, "file=ipxe.efi") {
				sent = line
			}
		}
		if !strings.Contains(sent, "windowsize=4") {
			l.t.Errorf("%s: ipxe.efi not sent with windowsize 4: %q", fw, sent)
		}
	}

	l.stopMatchbox()
	db, err := storage.OpenBolt(l.dbPath)
	if err != nil {
		l.t.Fatal(err)
	}
	defer db.Close()
	events, err := db.MachineEvents(context.Background(), mac)
	if err != nil {
		l.t.Fatalf("machine events of %s: %v", mac, err)
	}
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, string(e.Kind)+" "+e.File)
	}
	joined := strings.Join(kinds, "\n")
	want := []string{}
	for _, k := range dhcpEvents {
		want = append(want, string(k))
	}
	if viaTFTP {
		want = append(want, "tftp.sent ipxe.efi")
	}
	want = append(want, "http.served /ipxe", "http.asset /assets/vmlinuz", "http.asset /assets/initrd.gz", "http.served /ignition")
	at = 0
	for _, w := range want {
		i := strings.Index(joined[at:], w)
		if i < 0 {
			l.t.Fatalf("%s: event %q missing (in order) from the machine's history:\n%s", fw, w, joined)
		}
		at += i + len(w)
	}
	m, err := db.GetMachine(context.Background(), mac)
	if err != nil {
		l.t.Fatal(err)
	}
	if m.Group != "default" || m.Profile != "test" || !strings.HasPrefix(m.LastIP, "192.168.77.") {
		l.t.Errorf("machine record %+v", m)
	}
}

// TestFullModeSeaBIOS sets DHCP up through the config file; the other
// cases use flags.
func TestFullModeSeaBIOS(t *testing.T) {
	l := newLab(t)
	conf := filepath.Join(l.dir, "matchbox.yaml")
	body := "dhcp:\n  interfaces: [{name: br0, mode: full}]\n  subnets:\n    - {range: \"192.168.77.100,192.168.77.150\", lease-time: 10m}\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	l.startMatchbox("-config", conf)
	const mac = "52:54:00:77:00:01"
	serial := l.bootVM(seabios, mac)
	l.checkBoot(seabios, mac, serial, false, []matchbox.EventKind{matchbox.EventDHCPOffer, matchbox.EventDHCPAck})
}

func TestFullModeOVMF(t *testing.T) {
	l := newLab(t)
	l.startMatchbox("-dhcp-mode", "full", "-dhcp-range", "192.168.77.100,192.168.77.150")
	const mac = "52:54:00:77:00:02"
	serial := l.bootVM(ovmf, mac)
	l.checkBoot(ovmf, mac, serial, true, []matchbox.EventKind{matchbox.EventDHCPOffer, matchbox.EventDHCPAck})
}

// startAddressServer runs busybox udhcpd on the lab bridge: a separate
// DHCP server that hands out addresses only, as an existing network's.
func (l *lab) startAddressServer() {
	l.t.Helper()
	conf := filepath.Join(l.dir, "udhcpd.conf")
	leases := filepath.Join(l.dir, "udhcpd.leases")
	if err := os.WriteFile(leases, nil, 0o644); err != nil {
		l.t.Fatal(err)
	}
	body := fmt.Sprintf("start 192.168.77.50\nend 192.168.77.60\ninterface br0\nlease_file %s\noption subnet 255.255.255.0\noption lease 600\n", leases)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns, "busybox", "udhcpd", "-f", conf)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.extra = append(l.extra, cmd)
}

func TestProxyModeSeaBIOS(t *testing.T) {
	l := newLab(t)
	l.startAddressServer()
	l.startMatchbox("-dhcp-mode", "proxy")
	const mac = "52:54:00:77:00:03"
	serial := l.bootVM(seabios, mac)
	l.checkBoot(seabios, mac, serial, false, []matchbox.EventKind{matchbox.EventPXEOffer})
	checkProxyAddress(t, serial)
}

func TestProxyModeOVMF(t *testing.T) {
	l := newLab(t)
	l.startAddressServer()
	l.startMatchbox("-dhcp-mode", "proxy")
	const mac = "52:54:00:77:00:04"
	serial := l.bootVM(ovmf, mac)
	l.checkBoot(ovmf, mac, serial, true, []matchbox.EventKind{matchbox.EventPXEOffer})
	checkProxyAddress(t, serial)
}

var boundRE = regexp.MustCompile(`MBTEST: dhcp bound (\S+)`)

// checkProxyAddress: in proxy mode the address comes from the other DHCP
// server's range, never from matchbox.
func checkProxyAddress(t *testing.T, serial string) {
	t.Helper()
	m := boundRE.FindStringSubmatch(serial)
	if m == nil {
		t.Fatal("no address bound")
	}
	ip, err := netip.ParseAddr(m[1])
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := netip.MustParseAddr("192.168.77.50"), netip.MustParseAddr("192.168.77.60")
	if ip.Less(lo) || hi.Less(ip) {
		t.Errorf("booted system got %v, not from the address server's range", ip)
	}
}
