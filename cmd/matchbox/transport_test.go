package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

func TestTransportLimits(t *testing.T) {
	parse := func(t *testing.T, args ...string) *transportConfig {
		t.Helper()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		tc := transportFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	// Sized to the open-file limit, with room for TFTP and the rest.
	for _, tt := range []struct {
		nofile           uint64
		bootConns, apiCo int
	}{
		{1024, 256, 64},
		{65536, 4096, 512},
		{1 << 20, 4096, 512},
	} {
		boot, api, err := parse(t).limits(tt.nofile, 128)
		if err != nil {
			t.Fatalf("nofile %d: %v", tt.nofile, err)
		}
		if boot.MaxConns != tt.bootConns || api.MaxConns != tt.apiCo || boot.Listener != "boot" || api.Listener != "api" {
			t.Errorf("nofile %d: boot %d, api %d", tt.nofile, boot.MaxConns, api.MaxConns)
		}
		if 2*boot.MaxConns+api.MaxConns+2*128+fdReserve > int(tt.nofile) {
			t.Errorf("nofile %d: the defaults can run out of files", tt.nofile)
		}
	}
	boot, api, err := parse(t, "-http-max-conns", "100", "-api-max-conns-per-ip", "3", "-http-stall-timeout", "5s").limits(1024, 128)
	if err != nil || boot.MaxConns != 100 || api.MaxConnsPerSource != 3 || boot.StallTimeout != api.StallTimeout || boot.StallTimeout.Seconds() != 5 {
		t.Errorf("explicit: %+v %+v %v", boot, api, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-http-max-conns", "100000"}, "RLIMIT_NOFILE"},
		{[]string{"-http-max-conns", "-1"}, "-http-max-conns -1"},
		{[]string{"-http-max-conns-per-ip", "0"}, "-http-max-conns-per-ip 0"},
		{[]string{"-http-max-bodies", "0"}, "-http-max-bodies"},
		{[]string{"-http-max-header-bytes", "10"}, "-http-max-header-bytes"},
		{[]string{"-http-read-timeout", "0s"}, "-http-read-timeout"},
	} {
		if _, _, err := parse(t, tt.args...).limits(1024, 128); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error naming %s", tt.args, err, tt.want)
		}
	}
	tc := parse(t, "-http-host-names", "boot.example, 10.0.0.1:8080")
	names, err := tc.bootHostNames("http://matchbox.lab:8080/boot.ipxe")
	if err != nil || strings.Join(names, " ") != "boot.example 10.0.0.1:8080 matchbox.lab:8080" {
		t.Errorf("host names: %q, %v", names, err)
	}
	if names, err := tc.bootHostNames("http://${next-server}/boot.ipxe"); err != nil || len(names) != 2 {
		t.Errorf("-boot-url with an iPXE setting: %q, %v", names, err)
	}
	if _, err := parse(t, "-http-host-names", "bad$name").bootHostNames(""); err == nil || !strings.Contains(err.Error(), "-http-host-names") {
		t.Errorf("bad host name: %v", err)
	}
}

// testKeyRing writes a private key ring protected by passphrase.
func testKeyRing(t *testing.T, passphrase string) (string, openpgp.EntityList) {
	t.Helper()
	e, err := openpgp.NewEntity("matchbox e2e", "", "e2e@example.invalid", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.EncryptPrivateKeys([]byte(passphrase), nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SerializePrivateWithoutSigning(a, nil); err != nil {
		t.Fatal(err)
	}
	a.Close()
	ring := filepath.Join(t.TempDir(), "secring.asc")
	if err := os.WriteFile(ring, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return ring, openpgp.EntityList{e}
}

// fetchHost GETs url with the Host header host.
func fetchHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, body := do(t, req)
	return resp.StatusCode, string(body)
}

// do sends req and reads the whole answer.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// With -key-ring-path, a forged Host gets a good signature only over the
// listening address; a name of -http-host-names is rendered as given.
func TestSignedForgedHost(t *testing.T) {
	ring, keys := testKeyRing(t, "pass phrase")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "profiles", "a.json"),
		`{"id": "a", "boot": {"kernel": "/assets/k", "args": ["ignition.config.url=http://{{.request.host}}/ignition?mac=${mac:hexhyp}"]}}`)
	writeFile(t, filepath.Join(dir, "groups", "node.json"), `{"id": "node", "profile": "a", "selector": {"mac": "52:54:00:00:00:01"}}`)
	s := startServer(t, []string{"MATCHBOX_PASSPHRASE=pass phrase"}, "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-key-ring-path", ring, "-http-host-names", "boot.example")
	listening := strings.TrimPrefix(s.url, "http://")
	for host, rendered := range map[string]string{"evil.example": listening, "boot.example": "boot.example", listening: listening} {
		const q = "/ipxe?mac=52:54:00:00:00:01"
		code, body := fetchHost(t, s.url+q, host)
		if code != 200 || !strings.Contains(body, "ignition.config.url=http://"+rendered+"/ignition") {
			t.Errorf("Host %s: %d %q, want %s rendered", host, code, body, rendered)
		}
		code, sig := fetchHost(t, s.url+strings.Replace(q, "?", ".sig?", 1), host)
		if code != 200 {
			t.Fatalf("Host %s: signature %d", host, code)
		}
		if _, err := openpgp.CheckDetachedSignature(keys, strings.NewReader(body), strings.NewReader(sig), nil); err != nil {
			t.Errorf("Host %s: the signature does not verify the body: %v", host, err)
		}
	}
}

// A bad transport flag stops the start with a message naming it.
func TestTransportFlagRefused(t *testing.T) {
	dir := labDataDir(t)
	for _, args := range [][]string{{"-http-max-conns-per-ip", "0"}, {"-http-host-names", "bad$name"}} {
		// Bounded: a server that starts is a failure, not a hang.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"),
			"-address", "127.0.0.1:0", "-api-address", ""}, args...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), args[0]) {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}
