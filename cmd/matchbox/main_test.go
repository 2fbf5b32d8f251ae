package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ignition "github.com/coreos/ignition/v2/config"
)

// bin is the matchbox binary built once for these end-to-end tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "matchbox-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "matchbox")
	args := []string{"build", "-o", bin}
	if os.Getenv("MATCHBOX_TEST_RACE") != "" {
		// The server under the race detector: with GORACE=halt_on_error=1
		// a race stops it, and the test using it fails.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build matchbox:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's log output safely.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type server struct {
	url     string
	apiURL  string // the admin API, when it runs
	rpcAddr string // the gRPC API (host:port), when it runs
	cmd     *exec.Cmd
	log     *syncBuffer
}

var (
	addrRE    = regexp.MustCompile(`msg="matchbox serving".* address=(\S+)`)
	apiAddrRE = regexp.MustCompile(`msg="admin API listening" address=(\S+)`)
	rpcAddrRE = regexp.MustCompile(`msg="gRPC API listening" address=(\S+)`)
)

// startServer runs `matchbox serve` with args (and env) on a free loopback
// port and waits until it serves.
func startServer(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	if !hasFlag(args, "address") && !hasEnv(env, "MATCHBOX_ADDRESS") {
		args = append(args, "-address", "127.0.0.1:0")
	}
	if !hasFlag(args, "api-address") && !hasEnv(env, "MATCHBOX_API_ADDRESS") {
		args = append(args, "-api-address", "127.0.0.1:0")
	}
	// The secret key is created on first start: never in the checkout.
	if !hasFlag(args, "secret-key-file") && !hasEnv(env, "MATCHBOX_SECRET_KEY_FILE") {
		args = append(args, "-secret-key-file", filepath.Join(t.TempDir(), "secret.key"))
	}
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logs := &syncBuffer{}
	pr, pw := io.Pipe()
	// Standard output too: nothing may reach it unseen (bmclib prints
	// requests there when asked to).
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, log: logs}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		pw.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	found, apiFound, rpcFound := make(chan string, 1), make(chan string, 1), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			if m := apiAddrRE.FindStringSubmatch(line); m != nil {
				select {
				case apiFound <- m[1]:
				default:
				}
			}
			if m := rpcAddrRE.FindStringSubmatch(line); m != nil {
				select {
				case rpcFound <- m[1]:
				default:
				}
			}
			if m := addrRE.FindStringSubmatch(line); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case addr := <-found:
		s.url = "http://" + addr
		select { // logged before the boot endpoints serve
		case a := <-apiFound:
			s.apiURL = "http://" + a
		default:
		}
		select {
		case a := <-rpcFound:
			s.rpcAddr = a
		default:
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not start; log:\n%s", logs.String())
	}
	return s
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "-"+name || a == "--"+name || strings.HasPrefix(a, "-"+name+"=") || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	return fetchHost(t, url, "")
}

// repoRoot is the checkout root, which holds the shipped data.
func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestQuickStart runs the README's quick start: the shipped data, no root,
// no other service.
func TestQuickStart(t *testing.T) {
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-api-address=") // no admin token written into the repository

	code, body := fetch(t, s.url+"/ipxe?mac=52-54-00-a1-9c-ae")
	if code != 200 {
		t.Fatalf("/ipxe: %d %s", code, body)
	}
	// No release pulled into the assets: Flatcar's release server.
	for _, want := range []string{"#!ipxe", "kernel https://stable.release.flatcar-linux.net/amd64-usr/current/flatcar_production_pxe.vmlinuz",
		"initrd --name main https://stable.release.flatcar-linux.net/amd64-usr/current/flatcar_production_pxe_image.cpio.gz",
		"ignition.config.url=" + s.url + "/ignition?", "boot"} {
		if !strings.Contains(body, want) {
			t.Errorf("/ipxe lacks %q:\n%s", want, body)
		}
	}
	// Every shipped machine's Ignition is valid.
	for _, q := range []string{"mac=52:54:00:a1:9c:ae", "mac=52:54:00:12:34:56", "os=installed&mac=52:54:00:a1:9c:ae"} {
		code, body := fetch(t, s.url+"/ignition?"+q)
		if code != 200 {
			t.Fatalf("/ignition?%s: %d %s", q, code, body)
		}
		if _, rep, err := ignition.Parse([]byte(body)); err != nil {
			t.Errorf("/ignition?%s: invalid Ignition: %v %s", q, err, rep)
		}
	}
	if code, body := fetch(t, s.url+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as editors and config tools do.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func profileJSON(id, kernel string) string {
	return fmt.Sprintf(`{"id": %q, "boot": {"kernel": %q, "initrd": ["/assets/initrd"], "args": ["console=ttyS0"]}, "ignition_id": "base.yaml"}`, id, kernel)
}

const baseButane = "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        inline: {{.motd}}\n"

func labDataDir(t *testing.T) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "profiles", "a.json"), profileJSON("a", "/assets/kernel-a"))
	writeFile(t, filepath.Join(dir, "profiles", "b.json"), profileJSON("b", "/assets/kernel-b"))
	writeFile(t, filepath.Join(dir, "ignition", "base.yaml"), baseButane)
	writeFile(t, filepath.Join(dir, "groups", "node.json"), `{"id": "node", "profile": "a", "selector": {"mac": "52:54:00:00:00:01"}, "metadata": {"motd": "hello"}}`)
	writeFile(t, filepath.Join(dir, "groups", "other.json"), `{"id": "other", "profile": "b", "selector": {"mac": "52:54:00:00:00:02"}, "metadata": {"motd": "other"}}`)
	return dir
}

// TestReloadOnEdit edits a group file on disk: the answer changes within
// two seconds, without a restart.
func TestReloadOnEdit(t *testing.T) {
	dir := labDataDir(t)
	s := startServer(t, nil, "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"))
	url := s.url + "/ipxe?mac=52:54:00:00:00:01"
	if _, body := fetch(t, url); !strings.Contains(body, "kernel-a") {
		t.Fatalf("before edit: %s", body)
	}
	writeFile(t, filepath.Join(dir, "groups", "node.json"), `{"id": "node", "profile": "b", "selector": {"mac": "52:54:00:00:00:01"}, "metadata": {"motd": "hello"}}`)
	edited := time.Now()
	for {
		_, body := fetch(t, url)
		if strings.Contains(body, "kernel-b") {
			break
		}
		// A bound on the wait, not a speed check: the reload takes
		// milliseconds, a busy machine may take longer.
		if time.Since(edited) > 15*time.Second {
			t.Fatalf("edit not served within 15s; still:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBrokenFilesAreReportedAndSkipped: broken files never stop the server
// or hand a machine another group than it would get with the file fixed,
// and a broken edit keeps the last good version.
func TestBrokenFilesAreReportedAndSkipped(t *testing.T) {
	dir := labDataDir(t)
	writeFile(t, filepath.Join(dir, "groups", "bad.json"), `{"id": "bad", "profile": "a", "selector": {"mac": "nope"}, "metadata": {"motd": "bad"}}`)
	writeFile(t, filepath.Join(dir, "groups", "syntax.json"), `{"id": "syntax", `)
	s := startServer(t, nil, "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"))
	for _, want := range []string{"bad.json", "not a MAC address", "syntax.json", "bad JSON"} {
		if !strings.Contains(s.log.String(), want) {
			t.Errorf("log does not report %q", want)
		}
	}
	// syntax.json says nothing of its selectors: it may be any machine's
	// group, so no machine gets one until it parses.
	if code, body := fetch(t, s.url+"/ignition?mac=52:54:00:00:00:01"); code != 503 || !strings.Contains(body, "syntax.json") {
		t.Errorf("machine while syntax.json does not parse: %d %s; want 503 naming the file", code, body)
	}
	if code, body := fetch(t, s.url+"/readyz"); code != 503 || !strings.Contains(body, "syntax.json") || !strings.Contains(body, "every machine") {
		t.Errorf("readyz: %d %s; want 503 naming syntax.json and what it withholds", code, body)
	}
	writeFile(t, filepath.Join(dir, "groups", "syntax.json"), `{"id": "syntax", "profile": "b", "selector": {"rack": "r9"}}`)
	// bad.json's selector is one MAC that cannot be read: it may win over
	// any group with one selector, so node (by MAC) is still withheld and
	// a machine in rack r9 too; the message names bad.json.
	waitFor(t, 5*time.Second, "syntax.json's fix is served", func() bool {
		code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:00:00:09&rack=r9")
		return code == 503 && strings.Contains(body, "bad.json")
	})
	if code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:00:00:01"); code != 503 || !strings.Contains(body, "bad.json") {
		t.Errorf("machine while bad.json does not load: %d %s; want 503 naming bad.json", code, body)
	}
	writeFile(t, filepath.Join(dir, "groups", "bad.json"), `{"id": "bad", "profile": "a", "selector": {"mac": "52:54:00:00:00:03"}, "metadata": {"motd": "bad"}}`)
	waitFor(t, 5*time.Second, "bad.json's fix is served", func() bool {
		code, body := fetch(t, s.url+"/ignition?mac=52:54:00:00:00:01")
		return code == 200 && strings.Contains(body, "hello")
	})
	if code, body := fetch(t, s.url+"/readyz"); code != 200 {
		t.Errorf("readyz once every group file loads: %d %s", code, body)
	}

	// Break a good file: the machine keeps its last good config.
	writeFile(t, filepath.Join(dir, "groups", "node.json"), `{"id": "node", "profile": `)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.log.String(), "still serving the last version") {
		if time.Now().After(deadline) {
			t.Fatal("broken edit not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:00:00:01"); code != 200 || !strings.Contains(body, "kernel-a") {
		t.Errorf("after a broken edit: %d %s", code, body)
	}

	// A template that fails to render gives a 500 naming the file, not an
	// empty 200, and the server keeps answering.
	writeFile(t, filepath.Join(dir, "ignition", "base.yaml"), "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: {{.nokey}}\n")
	deadline = time.Now().Add(5 * time.Second)
	for {
		code, body := fetch(t, s.url+"/ignition?mac=52:54:00:00:00:02")
		if code == 500 {
			if !strings.Contains(body, "base.yaml") || !strings.Contains(body, "nokey") {
				t.Errorf("500 body does not name file and reason: %s", body)
			}
			break
		}
		if code != 200 || time.Now().After(deadline) {
			t.Fatalf("got %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := fetch(t, s.url+"/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
}

// waitFor polls cond every 20ms until it holds, for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runCLI(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

func TestValidate(t *testing.T) {
	root := repoRoot(t)
	dirs := []string{root}
	examples, _ := filepath.Glob(filepath.Join(root, "examples", "*"))
	if len(examples) < 3 {
		t.Fatalf("want at least three examples, have %v", examples)
	}
	dirs = append(dirs, examples...)
	for _, d := range dirs {
		code, out := runCLI(t, nil, "validate", "--data-path", d)
		if code != 0 || !strings.Contains(out, "0 errors, 0 warnings") {
			t.Errorf("validate %s: exit %d\n%s", d, code, out)
		}
	}

	dir := labDataDir(t)
	writeFile(t, filepath.Join(dir, "groups", "bad.json"), `{"id": "bad", "profile": "a", "selector": {"mac": "nope"}}`)
	writeFile(t, filepath.Join(dir, "groups", "syntax.json"), "{\n  \"id\": \"syntax\",\n  oops\n}")
	writeFile(t, filepath.Join(dir, "groups", "dangling.json"), `{"id": "dangling", "profile": "ghost", "selector": {"os": "x"}}`)
	writeFile(t, filepath.Join(dir, "groups", "default1.json"), `{"id": "default1", "profile": "a", "metadata": {"motd": "m"}}`)
	writeFile(t, filepath.Join(dir, "groups", "default2.json"), `{"id": "default2", "profile": "a", "metadata": {"motd": "m"}}`)
	writeFile(t, filepath.Join(dir, "groups", "same.json"), `{"id": "same", "profile": "a", "selector": {"mac": "52-54-00-00-00-01"}, "metadata": {"motd": "m"}}`)
	writeFile(t, filepath.Join(dir, "groups", "nometa.json"), `{"id": "nometa", "profile": "b", "selector": {"rack": "r1"}}`)
	writeFile(t, filepath.Join(dir, "profiles", "c.json"), `{"id": "c", "ignition_id": "bad.ign", "cloud_id": "gone.tmpl"}`)
	writeFile(t, filepath.Join(dir, "profiles", "d.json"), `{"id": "d", "ignition_id": "bad-butane.yaml", "generic_id": "syntax.tmpl"}`)
	writeFile(t, filepath.Join(dir, "groups", "c.json"), `{"id": "c", "profile": "c", "selector": {"rack": "r2"}}`)
	writeFile(t, filepath.Join(dir, "groups", "d.json"), `{"id": "d", "profile": "d", "selector": {"rack": "r3"}}`)
	writeFile(t, filepath.Join(dir, "ignition", "bad.ign"), `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"mode": 420}]}}`)
	writeFile(t, filepath.Join(dir, "ignition", "bad-butane.yaml"), "variant: flatcar\nversion: 9.9.9\n")
	writeFile(t, filepath.Join(dir, "generic", "syntax.tmpl"), "{{ .x ")

	code, out := runCLI(t, nil, "validate", "-data-path", dir)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"groups/bad.json: error:", "not a MAC address",
		"groups/syntax.json: error: invalid: bad JSON at line 3",
		`group "dangling" names profile "ghost", which does not exist`,
		"second default group",
		`group "same" has the same selectors as group "node"`,
		`group "nometa", profile "b"`, `map has no entry for key "motd"`,
		`profile "c" names cloud template "gone.tmpl", which does not exist`,
		"ignition/bad.ign: error: ignition:",
		"No translator exists for variant flatcar with version 9.9.9",
		"generic/syntax.tmpl: error:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("validate output:\n%s", out)
	}

	code, out = runCLI(t, nil, "validate", "-data-path", dir, "-o", "json")
	if code != 1 || !strings.Contains(out, `"problems": [`) {
		t.Errorf("json output: exit %d\n%s", code, out)
	}
	if code, out := runCLI(t, nil, "validate", "-data-path", filepath.Join(dir, "nope")); code != 1 || !strings.Contains(out, "no such file") {
		t.Errorf("missing dir: exit %d %s", code, out)
	}
}

func TestEnvFlagsAndGracefulStop(t *testing.T) {
	dir := labDataDir(t)
	s := startServer(t, []string{
		"MATCHBOX_ADDRESS=127.0.0.1:0",
		"MATCHBOX_DATA_PATH=" + dir,
		"MATCHBOX_DB_PATH=" + filepath.Join(t.TempDir(), "m.db"),
		"MATCHBOX_LOG_FORMAT=text",
	})
	if code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:00:00:02"); code != 200 || !strings.Contains(body, "kernel-b") {
		t.Fatalf("%d %s", code, body)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(s.log.String(), "shutting down") {
		t.Error("shutdown not logged")
	}
}

func TestCLIErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{[]string{"bogus"}, nil, 2, `unknown command "bogus"`},
		{[]string{"serve", "-log-level", "loud", "-data-path", "."}, nil, 1, "-log-level"},
		{[]string{"serve", "-data-path", "/nonexistent/x"}, nil, 1, "not a readable directory"},
		{[]string{"serve", "-watch=maybe"}, nil, 2, "invalid boolean value"},
		{[]string{"serve"}, []string{"MATCHBOX_WATCH=maybe", "MATCHBOX_DATA_PATH=/nonexistent"}, 1, "MATCHBOX_WATCH"},
		{[]string{"version"}, nil, 0, ""},
	} {
		code, out := runCLI(t, tc.env, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d containing %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
