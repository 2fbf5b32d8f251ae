package main

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/bmc/bmcsim"
)

const bmcPassword = "Redfish-Pa55-of-node1"

// reinstallLab is a server on the shipped data with machines whose BMCs
// are Redfish simulators.
type reinstallLab struct {
	t    *testing.T
	s    *server
	env  []string
	data string
	db   string
	args []string
	// serverEnv is added to the server's environment.
	serverEnv []string
}

func newReinstallLab(t *testing.T, args ...string) *reinstallLab {
	t.Helper()
	return newReinstallLabEnv(t, nil, args...)
}

// newReinstallLabEnv is newReinstallLab with the server's environment
// extended by env.
func newReinstallLabEnv(t *testing.T, env []string, args ...string) *reinstallLab {
	t.Helper()
	l := &reinstallLab{t: t, data: t.TempDir(), db: filepath.Join(t.TempDir(), "m.db"), serverEnv: env}
	// The shipped data, copied: the server writes its token and key
	// into the data dir.
	root := repoRoot(t)
	for _, dir := range []string{"groups", "profiles", "ignition"} {
		entries, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			writeFile(t, filepath.Join(l.data, dir, e.Name()), readFile(t, filepath.Join(root, dir, e.Name())))
		}
	}
	l.args = append([]string{"-data-path", l.data, "-assets-path", "", "-db-path", l.db, "-log-level", "debug"}, args...)
	l.start()
	return l
}

func (l *reinstallLab) start() {
	l.t.Helper()
	l.s = startServer(l.t, l.serverEnv, l.args...)
	l.env = []string{"MATCHBOX_ENDPOINT=" + l.s.apiURL, "MATCHBOX_TOKEN_FILE=" + filepath.Join(l.data, "admin.token")}
}

// machine makes the server know mac and gives it a Redfish BMC, its
// certificate pinned.
func (l *reinstallLab) machine(mac string, sim *bmcsim.RedfishSim) {
	l.t.Helper()
	if code, body := fetch(l.t, l.s.url+"/ipxe?mac="+mac); code != 200 {
		l.t.Fatalf("/ipxe for %s: %d %s", mac, code, body)
	}
	pw := filepath.Join(l.t.TempDir(), "pw")
	writeFile(l.t, pw, bmcPassword+"\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := l.cli("machine", "bmc", "set", mac, "--address", sim.Host+":"+sim.Port, "--provider", "redfish", "--username", "admin", "--password-file", pw, "--tls-fingerprint", sim.Fingerprint())
		if code == 0 {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(out, "not_found") {
			l.t.Fatalf("machine bmc set: %d %s", code, out)
		}
		time.Sleep(100 * time.Millisecond) // the inventory is written within a second
	}
}

func (l *reinstallLab) cli(args ...string) (int, string) {
	l.t.Helper()
	code, out := runCLI(l.t, l.env, args...)
	if strings.Contains(out, bmcPassword) {
		l.t.Errorf("CLI output shows the BMC password: %s", out)
	}
	return code, out
}

// state is the machine's workflow state as `machine get -o json` shows it.
func (l *reinstallLab) state(mac string) (string, string) {
	l.t.Helper()
	code, out := l.cli("machine", "get", mac, "-o", "json")
	if code != 0 {
		l.t.Fatalf("machine get %s: %d %s", mac, code, out)
	}
	var m struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		l.t.Fatalf("machine get %s: %v: %s", mac, err, out)
	}
	return m.State, m.Reason
}

func (l *reinstallLab) waitState(mac, want string) string {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, reason := l.state(mac)
		if st == want {
			return reason
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("machine %s: state %q (%s), want %q", mac, st, reason, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// report posts a report as an installer would.
func (l *reinstallLab) report(query, body string) (int, string) {
	l.t.Helper()
	resp, err := http.Post(l.s.url+"/lifecycle/report?"+query, "text/plain", strings.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// background runs a CLI command until it exits.
type background struct {
	syncBuffer
	done chan struct{}
	code int
}

func (l *reinstallLab) cliBackground(args ...string) *background {
	l.t.Helper()
	b := &background{done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), l.env...)
	cmd.Stdout, cmd.Stderr = &b.syncBuffer, &b.syncBuffer
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			b.code = ee.ExitCode()
		}
		close(b.done)
	}()
	l.t.Cleanup(func() { _ = cmd.Process.Kill(); <-b.done })
	return b
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ignitionFile returns the contents of one file of an Ignition config.
func ignitionFile(t *testing.T, config, path string) string {
	t.Helper()
	var c struct {
		Storage struct {
			Files []struct {
				Path     string `json:"path"`
				Contents struct {
					Compression string `json:"compression"`
					Source      string `json:"source"`
				} `json:"contents"`
			} `json:"files"`
		} `json:"storage"`
	}
	if err := json.Unmarshal([]byte(config), &c); err != nil {
		t.Fatalf("Ignition config: %v: %s", err, config)
	}
	for _, f := range c.Storage.Files {
		if f.Path != path {
			continue
		}
		_, b64, ok := strings.Cut(f.Contents.Source, ";base64,")
		var data []byte
		var err error
		if ok {
			data, err = base64.StdEncoding.DecodeString(b64)
		} else {
			_, raw, _ := strings.Cut(f.Contents.Source, ",")
			var s string
			s, err = url.PathUnescape(raw)
			data = []byte(s)
		}
		if err == nil && f.Contents.Compression == "gzip" {
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(bytes.NewReader(data)); err == nil {
				data, err = io.ReadAll(zr)
			}
		}
		if err != nil {
			t.Fatalf("%s in the Ignition config: %v", path, err)
		}
		return string(data)
	}
	t.Fatalf("no %s in the Ignition config: %s", path, config)
	return ""
}

var tokenRE = regexp.MustCompile(`token=([0-9a-f]{32})`)

// previewAgrees checks that the admin API's preview of a machine under
// reinstall shows what its boot endpoints serve it: the same iPXE script
// and Ignition config, with the reinstall's token hidden.
func (l *reinstallLab) previewAgrees(mac, token, state string) {
	l.t.Helper()
	code, out := l.cli("machine", "preview", mac)
	if code != 0 {
		l.t.Fatalf("machine preview: %d %s", code, out)
	}
	if strings.Contains(out, token) {
		l.t.Fatalf("the preview shows the reinstall token: %s", out)
	}
	if code, out := l.cli("machine", "preview", mac, "token="+token); code == 0 || !strings.Contains(out, "no token label") {
		l.t.Errorf("a preview with a token label: %d %s", code, out)
	}
	var p struct {
		Reinstall struct {
			State string `json:"state"`
		} `json:"reinstall"`
		IPXE     string          `json:"ipxe"`
		Ignition json.RawMessage `json:"ignition"`
		Problems []string        `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		l.t.Fatalf("machine preview: %v: %s", err, out)
	}
	if p.Reinstall.State != state || len(p.Problems) != 0 {
		l.t.Errorf("preview: reinstall state %q (want %q), problems %q", p.Reinstall.State, state, p.Problems)
	}
	hide := func(s string) string { return strings.ReplaceAll(s, token, api.HiddenToken) }
	code, ipxe := fetch(l.t, l.s.url+"/ipxe?mac="+mac)
	if code != 200 || hide(ipxe) != p.IPXE {
		l.t.Errorf("/ipxe (%d) and the preview differ:\n%s\n---\n%s", code, hide(ipxe), p.IPXE)
	}
	// The installer, whose text holds the token, is compressed in the
	// config: compare it unpacked, and the rest as it is.
	code, ign := fetch(l.t, l.s.url+"/ignition?mac="+mac)
	if code != 200 {
		l.t.Fatalf("/ignition: %d %s", code, ign)
	}
	if served, previewed := hide(ignitionFile(l.t, ign, "/opt/installer")), ignitionFile(l.t, string(p.Ignition), "/opt/installer"); served != previewed {
		l.t.Errorf("the installer served and previewed differ:\n%s\n---\n%s", served, previewed)
	}
	var served, previewed map[string]any
	if err := json.Unmarshal([]byte(ign), &served); err != nil {
		l.t.Fatal(err)
	}
	if err := json.Unmarshal(p.Ignition, &previewed); err != nil {
		l.t.Fatal(err)
	}
	delete(served, "storage")
	delete(previewed, "storage")
	if !reflect.DeepEqual(served, previewed) {
		l.t.Errorf("/ignition and the preview differ:\n%s\n---\n%s", ign, p.Ignition)
	}
}

// bootToken is the reinstall token in the machine's iPXE script.
func (l *reinstallLab) bootToken(mac string) string {
	l.t.Helper()
	_, ipxe := fetch(l.t, l.s.url+"/ipxe?mac="+mac)
	m := tokenRE.FindStringSubmatch(ipxe)
	if m == nil {
		l.t.Fatalf("no token in the iPXE script of %s: %s", mac, ipxe)
	}
	return m[1]
}

// A reinstall from the CLI, through a Redfish BMC, with the machine's
// requests and reports played as the shipped installer makes them.
func TestReinstallEndToEnd(t *testing.T) {
	sim := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword, InitialPower: true})
	l := newReinstallLab(t)
	const mac = "52:54:00:a1:9c:ae" // install-node1 in the shipped data
	const hyphen = "52-54-00-a1-9c-ae"
	l.machine(mac, sim)

	if code, out := l.cli("machine", "power", mac, "status"); code != 0 || !strings.Contains(out, "power: on") {
		t.Fatalf("power status: %d %s", code, out)
	}
	wait := l.cliBackground("machine", "reinstall", mac, "--wait", "--interval", "100ms")
	waitUntil(t, "the BMC to power the machine on for a network boot", func() bool {
		return sim.Power() == "On" && sim.Boot().Target == "Pxe" && len(sim.Resets()) >= 2
	})
	if got := sim.Resets(); got[0] != "ForceOff" || got[1] != "On" {
		t.Errorf("resets %v, want ForceOff then On", got)
	}
	if b := sim.Boot(); b.Enabled != "Once" {
		t.Errorf("boot override %+v, want once", b)
	}
	l.waitState(mac, "booting")

	// The machine's iPXE asks: the install profile, with the token.
	code, ipxe := fetch(t, l.s.url+"/ipxe?uuid=&mac="+hyphen)
	m := tokenRE.FindStringSubmatch(ipxe)
	if code != 200 || m == nil || !strings.Contains(ipxe, "flatcar_production_pxe.vmlinuz") {
		t.Fatalf("/ipxe while booting: %d %s", code, ipxe)
	}
	token := m[1]
	l.previewAgrees(mac, token, "booting")
	if code, body := fetch(t, l.s.url+"/ignition?mac="+hyphen+"&token=00000000000000000000000000000000"); code != 403 {
		t.Errorf("/ignition with a stale token: %d %s", code, body)
	}
	code, ign := fetch(t, l.s.url+"/ignition?uuid=&mac="+hyphen+"&token="+token)
	installer := ignitionFile(t, ign, "/opt/installer")
	for _, want := range []string{`token="` + token + `"`, `mac="` + mac + `"`, "/lifecycle/report?mac=$mac&token=$token&status=$1&exit=$2",
		"/ignition?os=installed&mac=$mac${token:+&token=$token}", `flatcar-install -d "/dev/sda" -C "stable" -V "current"`, `-b "https://stable.release.flatcar-linux.net/amd64-usr"`} {
		if code != 200 || !strings.Contains(installer, want) {
			t.Fatalf("the installer lacks %q: %d\n%s", want, code, installer)
		}
	}
	l.waitState(mac, "installing")
	code, installed := fetch(t, l.s.url+"/ignition?os=installed&mac="+mac+"&token="+token)
	if code != 200 || !strings.Contains(installed, "matchbox-first-boot.service") || !strings.Contains(installed, "status=booted") {
		t.Fatalf("installed-system Ignition: %d %s", code, installed)
	}
	// The installed system updates from this matchbox, as this machine.
	host := strings.TrimPrefix(l.s.url, "http://")
	if conf := ignitionFile(t, installed, "/etc/flatcar/update.conf"); conf != "SERVER=http://"+host+"/v1/update/\nGROUP=stable\nMACHINE_ALIAS="+mac+"\n" {
		t.Errorf("update.conf of the installed system:\n%s", conf)
	}
	if code, body := l.report("mac="+mac+"&token="+token+"&status=installed&exit=0", "flatcar-install: done\n"); code != 200 {
		t.Fatalf("success report: %d %s", code, body)
	}
	l.waitState(mac, "installed")
	// Its next network boot goes to the disk.
	if code, body := fetch(t, l.s.url+"/ipxe?mac="+hyphen); code != 200 || strings.Contains(body, "kernel") || !strings.Contains(body, "exit") {
		t.Errorf("/ipxe once installed: %d %s", code, body)
	}
	if code, body := l.report("mac="+mac+"&token="+token+"&status=booted", ""); code != 200 {
		t.Fatalf("first-boot report: %d %s", code, body)
	}
	select {
	case <-wait.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("reinstall -wait did not return:\n%s", wait.String())
	}
	out := wait.String()
	if wait.code != 0 {
		t.Fatalf("reinstall -wait: exit %d\n%s", wait.code, out)
	}
	at := 0
	for _, st := range []string{"requested", "bmc-prep", "booting", "installing", "installed", "active"} {
		i := strings.Index(out[at:], mac+"  "+st)
		if i < 0 {
			t.Fatalf("reinstall -wait did not show %s (in order):\n%s", st, out)
		}
		at += i
	}
	if st, _ := l.state(mac); st != "active" {
		t.Errorf("final state %q", st)
	}
	if code, _ := l.report("mac="+mac+"&token="+token+"&status=booted", ""); code != 403 {
		t.Errorf("a report with the finished reinstall's token: %d", code)
	}
	// Back to its group once the reinstall is over.
	if code, body := fetch(t, l.s.url+"/ipxe?mac="+hyphen); code != 200 || strings.Contains(body, "token=") || !strings.Contains(body, "kernel") {
		t.Errorf("/ipxe after the reinstall: %d %s", code, body)
	}
	// Every BMC call and transition is a machine event (stored within a
	// second or so).
	var events string
	waitUntil(t, "the reinstall's machine events", func() bool {
		_, events = l.cli("machine", "events", mac)
		return strings.Contains(events, "installed -> active")
	})
	for _, want := range []string{"bmc file=power off", "bmc file=boot device pxe", "bmc file=power on", "workflow", "booting -> installing", "install.report"} {
		if !strings.Contains(events, want) {
			t.Errorf("machine events lack %q: %s", want, events)
		}
	}
	if strings.Contains(l.s.log.String(), bmcPassword) {
		t.Error("the server log shows the BMC password")
	}
	_, metrics := fetch(t, l.s.url+"/metrics")
	for _, want := range []string{`matchbox_reinstall_transitions_total{state="active"} 1`, `matchbox_bmc_operations_total{op="power-off",result="ok"} 1`,
		`matchbox_bmc_operations_total{op="bootdev-pxe",result="ok"} 1`, `matchbox_reinstalls{state="booting"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if code, out := l.cli("machine", "power", mac, "off"); code != 0 || sim.Power() != "Off" {
		t.Errorf("power off: %d %s (%s)", code, out, sim.Power())
	}
}

// Each fault ends the reinstall failed, with the reason shown by machine
// get.
func TestReinstallFaults(t *testing.T) {
	// One BMC per machine, as in a rack.
	healthy := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword})
	refusing := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword})
	other := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword})
	// The boot timeout is short for the silent machine; the failing one
	// fetches its install config first (its group has none to render: its
	// metadata counts) and has 30 minutes to report.
	l := newReinstallLab(t, "-reinstall-boot-timeout", "3s", "-reinstall-boot-attempts", "2", "-bmc-attempts", "2", "-bmc-retry-delay", "100ms")
	const silent, broken, failing = "52:54:00:00:00:a1", "52:54:00:00:00:a2", "52:54:00:00:00:a3"
	l.machine(silent, healthy)
	l.machine(broken, refusing)
	l.machine(failing, other)
	refusing.SetRefuse(503)

	if code, out := l.cli("machine", "reinstall", silent, broken, failing); code != 0 {
		t.Fatalf("reinstall: %d %s", code, out)
	}
	if code, out := l.cli("machine", "reinstall", failing); code != 1 || !strings.Contains(out, "already being reinstalled") {
		t.Errorf("a second reinstall: %d %s", code, out)
	}
	l.waitState(failing, "booting")
	token := l.bootToken(failing)
	if code, body := fetch(t, l.s.url+"/metadata?mac="+failing+"&token="+token); code != 200 {
		t.Fatalf("install config: %d %s", code, body)
	}
	l.waitState(failing, "installing")
	if code, body := l.report("mac="+failing+"&token="+token+"&status=failed&exit=3", "writing image\nflatcar-install: no space left on /dev/sda\n"); code != 200 {
		t.Fatalf("failure report: %d %s", code, body)
	}
	for mac, want := range map[string][]string{
		silent:  {"did not fetch its install config within 3s", "2 boot attempts"},
		broken:  {"bmc power off failed (2 tries)", "503"},
		failing: {"installer reported failure", "exit status 3", "no space left on /dev/sda"},
	} {
		reason := l.waitState(mac, "failed")
		for _, w := range want {
			if !strings.Contains(reason, w) {
				t.Errorf("%s failed with %q, want %q in it", mac, reason, w)
			}
		}
		if strings.Contains(reason, bmcPassword) {
			t.Errorf("%s: the reason shows the BMC password", mac)
		}
	}
	if code, out := l.cli("machine", "get", broken, "-o", "table"); code != 0 || !strings.Contains(out, "Reason:") || !strings.Contains(out, "503") {
		t.Errorf("machine get (table) of a failed reinstall: %d %s", code, out)
	}

	// -wait reports a failure with exit status 1; cancel ends a reinstall.
	refusing.SetRefuse(0)
	code, out := l.cli("machine", "reinstall", broken, "--wait", "--interval", "100ms")
	if code != 1 || !strings.Contains(out, "reinstall failed") || !strings.Contains(out, "did not fetch its install config") {
		t.Errorf("reinstall -wait of a machine that never boots: %d %s", code, out)
	}
	if code, out := l.cli("machine", "reinstall", failing, "--concurrency", "1"); code != 0 {
		t.Fatalf("reinstall: %d %s", code, out)
	}
	if code, out := l.cli("machine", "reinstall", failing, "--force"); code != 0 {
		t.Errorf("forced reinstall: %d %s", code, out)
	}
	if code, out := l.cli("machine", "cancel", failing); code != 0 || !strings.Contains(out, "canceled") {
		t.Errorf("cancel: %d %s", code, out)
	}
	if st, reason := l.state(failing); st != "failed" || !strings.Contains(reason, "canceled by the operator") {
		t.Errorf("after cancel: %s %s", st, reason)
	}
	if code, out := l.cli("machine", "reinstall", "52:54:00:00:00:ff"); code != 1 || !strings.Contains(out, "no BMC settings") {
		t.Errorf("reinstall without BMC settings: %d %s", code, out)
	}
	if code, out := l.cli("machine", "power", "52:54:00:00:00:ff", "status"); code != 1 || !strings.Contains(out, "not_found") {
		t.Errorf("power of a machine without BMC settings: %d %s", code, out)
	}
	if code, out := l.cli("machine", "power", silent, "explode"); code != 1 || !strings.Contains(out, "on, off, soft or reset") {
		t.Errorf("an unknown power action: %d %s", code, out)
	}
	refusing.SetRefuse(503)
	if code, out := l.cli("machine", "power", broken, "on"); code != 1 || !strings.Contains(out, "bmc_failed (502)") || !strings.Contains(out, "503") {
		t.Errorf("power through a refusing BMC: %d %s", code, out)
	}
}

// Killed in the middle of a reinstall, the server resumes it: the machine
// keeps its install profile and token, and the reinstall finishes.
func TestReinstallResumesAfterKill(t *testing.T) {
	sim := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword})
	l := newReinstallLab(t)
	const mac = "52:54:00:a1:9c:ae"
	l.machine(mac, sim)
	if code, out := l.cli("machine", "reinstall", mac); code != 0 {
		t.Fatalf("reinstall: %d %s", code, out)
	}
	l.waitState(mac, "booting")
	token := l.bootToken(mac)
	if err := l.s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = l.s.cmd.Wait()

	l.start()
	if !strings.Contains(l.s.log.String(), "reinstall resumed") {
		t.Errorf("the restarted server does not say it resumed the reinstall:\n%s", l.s.log.String())
	}
	if again := l.bootToken(mac); again != token {
		t.Fatalf("token after the restart %s, before %s", again, token)
	}
	if code, body := fetch(t, l.s.url+"/metadata?mac="+mac+"&token="+token); code != 200 {
		t.Fatalf("/metadata with the token: %d %s", code, body)
	}
	l.waitState(mac, "installing")
	for _, st := range []string{"installed", "booted"} {
		if code, body := l.report("mac="+mac+"&token="+token+"&status="+st, ""); code != 200 {
			t.Fatalf("%s report: %d %s", st, code, body)
		}
	}
	l.waitState(mac, "active")
}
