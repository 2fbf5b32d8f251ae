package omaha

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox/internal/golden"
)

// payload makes a Package for content, as the release mirror will.
func payload(name, content string) Package {
	return Package{
		Name:   name,
		Size:   int64(len(content)),
		SHA1:   sha1.Sum([]byte(content)),
		SHA256: sha256.Sum256([]byte(content)),
	}
}

const osPayload = "CrAU the OS payload"

func testUpdate() *Update {
	return &Update{
		Version: "3850.1.0",
		URLs:    []string{"http://matchbox.example:8080/assets/flatcar/stable/amd64-usr/3850.1.0/"},
		Payload: payload("flatcar_production_update.gz", osPayload),
		Extensions: []Package{
			payload("oem-azure.gz", "CrAU the azure OEM"),
			payload("flatcar-docker.gz", "CrAU docker"),
		},
	}
}

// at is the answers' clock: 01:02:03 after midnight.
var at = time.Date(2026, 5, 13, 1, 2, 3, 0, time.UTC)

func TestResponse(t *testing.T) {
	check := ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueCheckEvent(""))
	cases := []struct {
		name    string
		request []byte
		edit    func(*Response)
		want    func(*testing.T, *ueAnswer) // nil: update_engine reads no update check
	}{
		{
			name:    "noupdate",
			request: check,
			want: func(t *testing.T, a *ueAnswer) {
				if !a.NoUpdate || a.PollInterval != -1 {
					t.Errorf("read %+v, want a noupdate without PollInterval", a)
				}
			},
		},
		{
			name:    "noupdate-poll",
			request: check,
			edit:    func(r *Response) { r.Apps[0].UpdateCheck.PollInterval = 2 * time.Hour },
			want: func(t *testing.T, a *ueAnswer) {
				if !a.NoUpdate || a.PollInterval != 7200 {
					t.Errorf("read %+v, want a noupdate with PollInterval 7200", a)
				}
			},
		},
		{
			name:    "update",
			request: check,
			edit:    func(r *Response) { r.Apps[0].UpdateCheck.Update = testUpdate() },
			want: func(t *testing.T, a *ueAnswer) {
				sum := sha256.Sum256([]byte(osPayload))
				want := &ueAnswer{
					PollInterval:   -1,
					Version:        "3850.1.0",
					PayloadURLs:    []string{"http://matchbox.example:8080/assets/flatcar/stable/amd64-usr/3850.1.0/flatcar_production_update.gz"},
					Size:           int64(len(osPayload)),
					SHA256:         sum[:],
					DisableBackoff: true,
				}
				if diff := cmp.Diff(want, a); diff != "" {
					t.Errorf("update_engine reads (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:    "update-two-urls-no-extensions",
			request: check,
			edit: func(r *Response) {
				u := testUpdate()
				u.URLs = append(u.URLs, "https://mirror.example/flatcar/")
				u.Extensions = nil
				r.Apps[0].UpdateCheck.Update = u
				r.Apps[0].UpdateCheck.PollInterval = time.Hour
			},
			want: func(t *testing.T, a *ueAnswer) {
				if a.NoUpdate || len(a.PayloadURLs) != 2 || a.PayloadURLs[1] != "https://mirror.example/flatcar/flatcar_production_update.gz" || a.PollInterval != 3600 {
					t.Errorf("read %+v", a)
				}
			},
		},
		{
			name:    "unknown-app",
			request: check,
			edit:    func(r *Response) { r.Apps[0].UnknownApp = true },
			want: func(t *testing.T, a *ueAnswer) {
				if !a.NoUpdate {
					t.Errorf("read %+v, want a noupdate", a)
				}
			},
		},
		{name: "ping", request: ueRequest("scheduler", stableApp(), uePing)},
		{name: "event", request: ueRequest("scheduler", stableApp(), ueEvent(3, 0, 268435461))},
		{
			name: "quoted-appid",
			request: []byte(`<request protocol="3.0"><app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}&lt;&amp;&quot;" version="1.0.0">` +
				`<updatecheck/><event eventtype="3" eventresult="1"/><event eventtype="3" eventresult="1"/></app></request>`),
			want: func(t *testing.T, a *ueAnswer) {
				if !a.NoUpdate {
					t.Errorf("read %+v, want a noupdate", a)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ParseRequest(tc.request)
			if err != nil {
				t.Fatal(err)
			}
			resp := NewResponse(req, at)
			if tc.edit != nil {
				tc.edit(resp)
			}
			out, err := resp.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, tc.name+".xml", out)
			again, err := resp.Marshal()
			if err != nil || !bytes.Equal(out, again) {
				t.Errorf("a second Marshal differs (%v)", err)
			}
			root, err := parseTree(out)
			if err != nil {
				t.Fatalf("answer is not XML: %v", err)
			}
			if ds := root.find("daystart"); len(ds) != 1 {
				t.Errorf("%d daystart elements", len(ds))
			} else if s, _ := ds[0].attr("elapsed_seconds"); s != "3723" {
				t.Errorf("elapsed_seconds %q, want 3723", s)
			}
			apps := root.find("app")
			if len(apps) != 1 {
				t.Fatalf("%d apps", len(apps))
			}
			if id, _ := apps[0].attr("appid"); id != req.Apps[0].AppID {
				t.Errorf("appid %q, want it echoed as %q", id, req.Apps[0].AppID)
			}
			if n := len(apps[0].find("event")); n != len(req.Apps[0].Events) {
				t.Errorf("%d event acks for %d events", n, len(req.Apps[0].Events))
			}
			if n := len(apps[0].find("ping")); n != 1 && req.Apps[0].Ping {
				t.Errorf("%d ping acks", n)
			}
			ans, err := ueParse(out)
			if tc.want == nil {
				if err == nil {
					t.Errorf("update_engine found an update check in %s", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			tc.want(t, ans)
		})
	}
}

// TestResponseExtensions: download_sysext finds each extension in the
// answer, at the same directory as the OS payload, with digests it checks.
func TestResponseExtensions(t *testing.T) {
	req, err := ParseRequest(ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueCheckEvent("")))
	if err != nil {
		t.Fatal(err)
	}
	resp := NewResponse(req, at)
	up := testUpdate()
	resp.Apps[0].UpdateCheck.Update = up
	out, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := uersParse(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var want []uersPackage
	for _, e := range up.Extensions {
		want = append(want, uersPackage{Name: e.Name, URL: up.URLs[0] + e.Name, Size: uint64(e.Size), SHA1: e.SHA1[:], SHA256: e.SHA256[:]})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ue-rs reads (-want +got):\n%s", diff)
	}
	// The OS payload's sha256 is base64 on the action; the extensions'
	// hash_sha256 is hex. Both from the same raw digest type.
	if !bytes.Contains(out, []byte(`sha256="`+base64.StdEncoding.EncodeToString(up.Payload.SHA256[:])+`"`)) {
		t.Errorf("no base64 sha256 of the payload in\n%s", out)
	}
}

func TestResponseRefused(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Response)
		want string
	}{
		{"codebase without slash", func(r *Response) { upd(r).URLs = []string{"http://h/dir"} }, `does not end in '/'`},
		{"codebase with a query", func(r *Response) { upd(r).URLs = []string{"http://h/dir/?x=1/"} }, "query or fragment"},
		{"codebase with a fragment", func(r *Response) { upd(r).URLs = []string{"http://h/dir/#/"} }, "query or fragment"},
		{"codebase not http", func(r *Response) { upd(r).URLs = []string{"ftp://h/dir/"} }, "not an http or https URL"},
		{"codebase relative", func(r *Response) { upd(r).URLs = []string{"/assets/"} }, "not an http or https URL"},
		{"no url", func(r *Response) { upd(r).URLs = nil }, "no URL"},
		{"no version", func(r *Response) { upd(r).Version = "" }, "no version"},
		{"zero size", func(r *Response) { upd(r).Payload.Size = 0 }, "size 0 is not positive"},
		{"no name", func(r *Response) { upd(r).Payload.Name = "" }, "package name"},
		{"name with a slash", func(r *Response) { upd(r).Extensions[0].Name = "../oem.gz" }, "package name"},
		{"name with a space", func(r *Response) { upd(r).Extensions[0].Name = "oem a.gz" }, "package name"},
		{"no digest", func(r *Response) { upd(r).Extensions[1].SHA256 = [32]byte{} }, "digest is not set"},
		{"listed twice", func(r *Response) { upd(r).Extensions[1].Name = "flatcar_production_update.gz" }, "listed twice"},
		{"update to an unknown app", func(r *Response) { upd(r); r.Apps[0].UnknownApp = true }, "unknown app"},
		{"no appid", func(r *Response) { r.Apps[0].AppID = "" }, "no appid"},
		{"short poll interval", func(r *Response) { r.Apps[0].UpdateCheck.PollInterval = time.Millisecond }, "poll interval"},
		{"negative poll interval", func(r *Response) { r.Apps[0].UpdateCheck.PollInterval = -time.Hour }, "poll interval"},
		{"day start", func(r *Response) { r.SinceMidnight = 25 * time.Hour }, "not within a day"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := &Response{Apps: []AppResponse{{AppID: "{" + FlatcarAppID + "}", UpdateCheck: &UpdateCheck{}}}}
			tc.edit(resp)
			out, err := resp.Marshal()
			if err == nil {
				t.Fatalf("Marshal wrote\n%s\nwant an error with %q", out, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "omaha: app 1: ") && !strings.HasPrefix(err.Error(), "omaha: day start") {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// upd sets testUpdate as the first app's offer and returns it.
func upd(r *Response) *Update {
	r.Apps[0].UpdateCheck.Update = testUpdate()
	return r.Apps[0].UpdateCheck.Update
}

// TestUECheckerRefuses: the test-side update_engine rules refuse what
// update_engine refuses, so that their passing means something.
func TestUECheckerRefuses(t *testing.T) {
	good := `<response protocol="3.0"><app appid="x" status="ok"><updatecheck status="ok"><urls><url codebase="http://h/"></url></urls>` +
		`<manifest version="1"><packages><package name="p" size="10"></package></packages>` +
		`<actions><action event="postinstall" sha256="` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"></action></actions></manifest></updatecheck></app></response>`
	if _, err := ueParse([]byte(good)); err != nil {
		t.Fatalf("the base answer is refused: %v", err)
	}
	for name, tc := range map[string]struct {
		old, new string
		code     ErrorCode
	}{
		"error status":      {`updatecheck status="ok"`, `updatecheck status="error-internal"`, CodeOmahaResponseInvalid},
		"no status":         {`updatecheck status="ok"`, `updatecheck`, CodeOmahaResponseInvalid},
		"empty codebase":    {`codebase="http://h/"`, `codebase=""`, CodeOmahaResponseInvalid},
		"size zero":         {`size="10"`, `size="0"`, CodeOmahaResponseInvalid},
		"size junk":         {`size="10"`, `size="x10"`, CodeOmahaResponseInvalid},
		"no postinstall":    {`event="postinstall"`, `event="install"`, CodeOmahaResponseInvalid},
		"hex sha256":        {`sha256="` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"`, `sha256="` + strings.Repeat("00", 32) + `"`, CodePayloadHashMismatch},
		"bad poll interval": {`updatecheck status="ok"`, `updatecheck status="ok" PollInterval="1h"`, CodeOmahaResponseInvalid},
		"wrong root":        {`<response protocol="3.0">`, `<answer>`, CodeOmahaResponseNotXML},
		"namespaced root":   {`<response protocol="3.0">`, `<response xmlns="urn:x">`, CodeOmahaResponseInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			body := strings.Replace(good, tc.old, tc.new, 1)
			_, err := ueParse([]byte(body))
			ue, ok := err.(*ueError)
			if !ok || ue.code != tc.code {
				t.Errorf("ueParse = %v, want code %d", err, tc.code)
			}
		})
	}
	// sscanf's %i: base prefixes and trailing junk.
	for in, want := range map[string]int64{"10": 10, " 0x1F": 31, "010": 8, "12abc": 12, "-3": -3, "0": 0, "0x": 0} {
		if got, ok := scanfInt64(in); !ok || got != want {
			t.Errorf("scanfInt64(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}
