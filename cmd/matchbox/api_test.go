package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func apiCall(t *testing.T, method, url, token string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// A profile and a group created through the admin API are served to the
// machine at once, and after a restart.
func TestAPIEndToEnd(t *testing.T) {
	data := t.TempDir()
	for _, d := range []string{"groups", "profiles"} {
		os.MkdirAll(filepath.Join(data, d), 0o755)
	}
	db := filepath.Join(t.TempDir(), "m.db")
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", db)
	if s.apiURL == "" {
		t.Fatal("the admin API did not start")
	}
	raw, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if strings.Contains(s.log.String(), token) {
		t.Error("the admin token appears in the log")
	}
	if code, body := apiCall(t, "PUT", s.apiURL+"/api/v1/profiles/live", token, map[string]any{
		"boot": map[string]any{"kernel": "/assets/vmlinuz", "initrd": []string{"/assets/initrd"}, "args": []string{"console=ttyS0"}},
	}); code != 201 {
		t.Fatalf("create profile: %d %s", code, body)
	}
	if code, body := apiCall(t, "PUT", s.apiURL+"/api/v1/groups/node1", token, map[string]any{
		"profile": "live", "selector": map[string]string{"mac": "52:54:00:aa:bb:cc"},
	}); code != 201 {
		t.Fatalf("create group: %d %s", code, body)
	}
	code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:aa:bb:cc")
	if code != 200 || !strings.Contains(body, "kernel /assets/vmlinuz") || !strings.Contains(body, "console=ttyS0") {
		t.Fatalf("/ipxe right after the API write: %d %s", code, body)
	}
	// Without a token nothing is written.
	if code, _ := apiCall(t, "PUT", s.apiURL+"/api/v1/groups/node2", "", map[string]any{"profile": "live"}); code != 401 {
		t.Errorf("write without a token: %d", code)
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()

	s = startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", db)
	code, body = fetch(t, s.url+"/ipxe?mac=52:54:00:aa:bb:cc")
	if code != 200 || !strings.Contains(body, "kernel /assets/vmlinuz") {
		t.Fatalf("/ipxe after a restart: %d %s", code, body)
	}
	if again, _ := os.ReadFile(filepath.Join(data, "admin.token")); !bytes.Equal(again, raw) {
		t.Error("the restart replaced the admin token")
	}
	if code, _ := apiCall(t, "GET", s.apiURL+"/api/v1/groups/node1", token, nil); code != 200 {
		t.Errorf("the admin token after a restart: %d", code)
	}
}

func TestAPIRefusesPlaintextOffLoopback(t *testing.T) {
	data := t.TempDir()
	code, out := runCLI(t, nil, "serve", "-data-path", data, "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-address", "127.0.0.1:0", "-api-address", "0.0.0.0:0")
	if code == 0 || !strings.Contains(out, "-api-insecure") {
		t.Errorf("serve with a plaintext API on 0.0.0.0: exit %d, %s", code, out)
	}
}

// The CLI, as an operator uses it, against a running server: apply a
// profile (YAML) and a group (JSON), the machine boots with them, list and
// get, tokens, and one-line errors with a non-zero exit.
func TestCLI(t *testing.T) {
	data := t.TempDir()
	for _, d := range []string{"groups", "profiles"} {
		os.MkdirAll(filepath.Join(data, d), 0o755)
	}
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"))
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN_FILE=" + filepath.Join(data, "admin.token")}
	files := t.TempDir()
	writeFile(t, filepath.Join(files, "live.yaml"), "id: live\nboot:\n  kernel: /assets/vmlinuz\n  args: [console=ttyS0]\n")
	writeFile(t, filepath.Join(files, "node1.json"), `{"id": "node1", "profile": "live", "selector": {"mac": "52:54:00:aa:bb:01"}}`)

	code, out := runCLI(t, env, "profile", "apply", "-f", filepath.Join(files, "live.yaml"))
	if code != 0 || !strings.Contains(out, "profile live created") {
		t.Fatalf("profile apply: %d %s", code, out)
	}
	code, out = runCLI(t, env, "group", "apply", "-f", filepath.Join(files, "node1.json"))
	if code != 0 || !strings.Contains(out, "group node1 created") {
		t.Fatalf("group apply: %d %s", code, out)
	}
	if code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:aa:bb:01"); code != 200 || !strings.Contains(body, "kernel /assets/vmlinuz") {
		t.Fatalf("/ipxe after the CLI apply: %d %s", code, body)
	}
	code, out = runCLI(t, env, "group", "apply", "-f", filepath.Join(files, "node1.json"))
	if code != 0 || !strings.Contains(out, "group node1 updated") {
		t.Errorf("second apply: %d %s", code, out)
	}
	code, out = runCLI(t, env, "group", "list")
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, "node1") || !strings.Contains(out, "mac=52:54:00:aa:bb:01") {
		t.Errorf("group list: %d %s", code, out)
	}
	code, out = runCLI(t, env, "group", "get", "node1", "-o", "json")
	var g map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &g) != nil || g["profile"] != "live" {
		t.Errorf("group get -o json: %d %s", code, out)
	}
	// Tokens: create prints only the token; a read token cannot write.
	code, out = runCLI(t, env, "token", "create", "-name", "ci", "-role", "read")
	readTok := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(readTok, "mbx_") || strings.Contains(readTok, "\n") {
		t.Fatalf("token create: %d %q", code, out)
	}
	roEnv := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN=" + readTok}
	code, out = runCLI(t, roEnv, "group", "delete", "node1")
	if code != 1 || !strings.Contains(out, "forbidden") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("delete with a read token: %d %q", code, out)
	}
	if code, out := runCLI(t, env, "token", "revoke", "ci"); code != 0 {
		t.Errorf("token revoke: %d %s", code, out)
	}
	if code, out := runCLI(t, roEnv, "group", "list"); code != 1 || !strings.Contains(out, "revoked") {
		t.Errorf("revoked token: %d %s", code, out)
	}
	// Errors are one line and a non-zero exit.
	writeFile(t, filepath.Join(files, "bad.json"), `{"id": "bad", "profile": "nope"}`)
	code, out = runCLI(t, env, "group", "apply", "-f", filepath.Join(files, "bad.json"))
	if code != 1 || !strings.Contains(out, `profile "nope"`) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("apply of a group naming a missing profile: %d %q", code, out)
	}
	code, out = runCLI(t, []string{"MATCHBOX_ENDPOINT=http://127.0.0.1:1", "MATCHBOX_TOKEN=x"}, "group", "list")
	if code != 1 || !strings.Contains(out, "cannot reach the admin API") {
		t.Errorf("unreachable API: %d %q", code, out)
	}
	if code, out := runCLI(t, env, "lease", "list"); code != 1 || !strings.Contains(out, "not running in full mode") {
		t.Errorf("lease list without DHCP: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "group", "frobnicate"); code != 2 {
		t.Errorf("unknown verb: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "group", "delete", "node1"); code != 0 || !strings.Contains(out, "deleted") {
		t.Errorf("delete: %d %s", code, out)
	}
}

// A whole data dir applied through the CLI serves like the data dir itself.
func TestCLIApplyDataDir(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"))
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN_FILE=" + filepath.Join(data, "admin.token")}
	example := filepath.Join(repoRoot(t), "examples", "three-node-cluster")
	code, out := runCLI(t, env, "group", "apply", "-f", example)
	if code != 0 || !strings.Contains(out, "template") || !strings.Contains(out, "profile") || !strings.Contains(out, "group node1 created") {
		t.Fatalf("apply a data dir: %d %s", code, out)
	}
	ref := startServer(t, nil, "-data-path", example, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"), "-api-address=")
	for _, q := range []string{"/ipxe?mac=52:54:00:00:00:01", "/ignition?mac=52:54:00:00:00:01", "/metadata?mac=52:54:00:00:00:01"} {
		c1, b1 := fetch(t, s.url+q)
		c2, b2 := fetch(t, ref.url+q)
		b1 = strings.ReplaceAll(b1, s.url, "URL")
		b2 = strings.ReplaceAll(b2, ref.url, "URL")
		if c1 != 200 || c1 != c2 || b1 != b2 {
			t.Errorf("%s: applied through the API %d %q, from the data dir %d %q", q, c1, b1, c2, b2)
		}
	}
	code, out = runCLI(t, env, "template", "list")
	if code != 0 || !strings.Contains(out, "KIND") {
		t.Errorf("template list: %d %s", code, out)
	}
}

// A machine that asked for its boot script shows up in the inventory
// through the CLI, with its events; labels and deletion work.
func TestCLIMachines(t *testing.T) {
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-api-address", "127.0.0.1:0", "-api-token-file", writeToken(t))
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN=mbx_test_token_0123456789"}
	if code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:a1:9c:ae&arch=x86_64"); code != 200 {
		t.Fatalf("/ipxe: %d %s", code, body)
	}
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var code int
		code, out = runCLI(t, env, "machine", "list")
		if code == 0 && strings.Contains(out, "52:54:00:a1:9c:ae") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine list never showed the machine: %d %s", code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(out, "x86_64") || !strings.Contains(out, "LAST SEEN") {
		t.Errorf("machine list: %s", out)
	}
	if code, out := runCLI(t, env, "machine", "events", "52-54-00-A1-9C-AE"); code != 0 || !strings.Contains(out, "http.served file=/ipxe") {
		t.Errorf("machine events: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "machine", "label", "52:54:00:a1:9c:ae", "rack=r1"); code != 0 {
		t.Errorf("machine label: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "machine", "list", "-label", "rack=r1", "-o", "json"); code != 0 || !strings.Contains(out, `"rack": "r1"`) {
		t.Errorf("machine list -label: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "machine", "get", "52:54:00:a1:9c:ae", "-o", "table"); code != 0 || !strings.Contains(out, "rack=r1") {
		t.Errorf("machine get -o table: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "machine", "preview", "52:54:00:a1:9c:ae", "os=installed"); code != 0 || !strings.Contains(out, `"group"`) || !strings.Contains(out, `"ignition"`) {
		t.Errorf("machine preview: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "machine", "delete", "52:54:00:a1:9c:ae"); code != 0 {
		t.Errorf("machine delete: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "machine", "get", "52:54:00:a1:9c:ae"); code != 1 || !strings.Contains(out, "not_found") {
		t.Errorf("get a deleted machine: %d %s", code, out)
	}
}

// writeToken writes a fixed test token to a file and returns its path.
func writeToken(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	writeFile(t, p, "mbx_test_token_0123456789\n")
	return p
}

// Without a token given, the CLI reads the admin token the quick start's
// server wrote into the current folder.
func TestCLITokenInCurrentFolder(t *testing.T) {
	if _, err := os.Stat("/var/lib/matchbox/admin.token"); err == nil {
		t.Skip("/var/lib/matchbox/admin.token exists: it comes first")
	}
	data := t.TempDir()
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"))
	cmd := exec.Command(bin, "group", "list")
	cmd.Dir = data
	cmd.Env = append(os.Environ(), "MATCHBOX_ENDPOINT="+s.apiURL)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "ID") {
		t.Errorf("group list in the data dir: %v %s", err, out)
	}
}

// The CLI reads its connection settings from a config file.
func TestCLIConfigFile(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"))
	cfg := filepath.Join(t.TempDir(), "cli.yaml")
	writeFile(t, cfg, "endpoint: "+s.apiURL+"\ntoken-file: "+filepath.Join(data, "admin.token")+"\n")
	if code, out := runCLI(t, []string{"MATCHBOX_CONFIG=" + cfg}, "group", "list"); code != 0 || !strings.Contains(out, "ID") {
		t.Errorf("with a config file: %d %s", code, out)
	}
	writeFile(t, cfg, "endpont: x\n")
	if code, out := runCLI(t, []string{"MATCHBOX_CONFIG=" + cfg}, "group", "list"); code != 1 || !strings.Contains(out, `unknown key "endpont"`) {
		t.Errorf("config file with a typo: %d %s", code, out)
	}
}

// BMC settings set through the CLI: the password is never in an API
// answer, CLI output, log line or the database file.
func TestCLIBMCPasswordNeverShown(t *testing.T) {
	data := t.TempDir()
	db := filepath.Join(t.TempDir(), "m.db")
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", db, "-log-level", "debug")
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN_FILE=" + filepath.Join(data, "admin.token")}
	const password = "Pa55-w0rd-of-the-BMC"
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, password+"\n")
	if code, _ := fetch(t, s.url+"/ipxe?mac=52:54:00:00:00:42"); code != 404 {
		t.Logf("/ipxe: %d", code) // records the machine either way
	}
	var outs []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := runCLI(t, env, "machine", "bmc", "set", "52:54:00:00:00:42", "-address", "10.0.0.9:623", "-provider", "ipmitool", "-username", "admin", "-password-file", pw)
		if code == 0 {
			outs = append(outs, out)
			break
		}
		if time.Now().After(deadline) || !strings.Contains(out, "not_found") {
			t.Fatalf("machine bmc set: %d %s", code, out)
		}
		time.Sleep(200 * time.Millisecond) // the inventory is written within a second
	}
	for _, args := range [][]string{{"machine", "bmc", "get", "52:54:00:00:00:42"}, {"machine", "get", "52:54:00:00:00:42"}, {"machine", "list", "-o", "json"}} {
		code, out := runCLI(t, env, args...)
		if code != 0 {
			t.Errorf("%v: %d %s", args, code, out)
		}
		outs = append(outs, out)
	}
	if !strings.Contains(outs[1], `"password_set": true`) || !strings.Contains(outs[2], `"address": "10.0.0.9:623"`) {
		t.Errorf("BMC settings not shown: %s / %s", outs[1], outs[2])
	}
	code, raw := apiCall(t, "GET", s.apiURL+"/api/v1/machines/52:54:00:00:00:42/bmc", strings.TrimSpace(readFile(t, filepath.Join(data, "admin.token"))), nil)
	outs = append(outs, raw)
	if code != 200 {
		t.Errorf("GET bmc: %d %s", code, raw)
	}
	for i, out := range outs {
		if strings.Contains(out, password) {
			t.Errorf("output %d shows the BMC password: %s", i, out)
		}
	}
	if strings.Contains(s.log.String(), password) {
		t.Error("the server log shows the BMC password")
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	if strings.Contains(readFile(t, db), password) {
		t.Error("the database file holds the BMC password in the clear")
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
