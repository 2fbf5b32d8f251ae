package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
