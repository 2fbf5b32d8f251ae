package omaha

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wantRequest is what ParseRequest reads from ueRequest(source, app, ...)
// before the body: the app's attributes, no ping, check or event.
func wantRequest(source string, app ueApp) *Request {
	return &Request{
		Protocol:       "3.0",
		Version:        "update_engine-0.4.10",
		UpdaterVersion: "update_engine-0.4.10",
		InstallSource:  source,
		IsMachine:      true,
		OS:             OS{Version: "Chateau", Platform: "CoreOS", SP: app.Version + "_x86_64"},
		Apps: []App{{
			AppID:        app.AppID,
			Version:      app.Version,
			Track:        app.Track,
			BootID:       app.BootID,
			OEM:          app.OEM,
			OEMVersion:   app.OEMVersion,
			AlephVersion: app.AlephVersion,
			MachineID:    app.MachineID,
			MachineAlias: app.MachineAlias,
			Lang:         app.Lang,
			Board:        app.Board,
		}},
	}
}

// requestCases are update_engine's requests (OMAHA.md §3, §4) and what
// they read as.
var requestCases = []struct {
	name string
	body []byte
	want func(*Request)
}{
	{
		name: "first check after install",
		body: ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueCheckEvent("0.0.0.0")),
		want: func(r *Request) {
			r.Apps[0].Ping, r.Apps[0].UpdateCheck = true, true
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultSuccessReboot, PreviousVersion: "0.0.0.0"}}
		},
	},
	{
		name: "periodic check",
		body: ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueCheckEvent("")),
		want: func(r *Request) {
			r.Apps[0].Ping, r.Apps[0].UpdateCheck = true, true
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultSuccessReboot}}
		},
	},
	{
		name: "interactive check",
		body: ueRequest("ondemandupdate", stableApp(), uePing, ueUpdateCheck, ueCheckEvent("")),
		want: func(r *Request) {
			r.InstallSource = "ondemandupdate"
			r.Apps[0].Ping, r.Apps[0].UpdateCheck = true, true
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultSuccessReboot}}
		},
	},
	{
		name: "first check after rebooting into the update",
		body: ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueCheckEvent("3760.2.0")),
		want: func(r *Request) {
			r.Apps[0].Ping, r.Apps[0].UpdateCheck = true, true
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultSuccessReboot, PreviousVersion: "3760.2.0"}}
		},
	},
	{
		name: "check after a rollback",
		body: ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueRollback),
		want: func(r *Request) {
			r.Apps[0].Ping, r.Apps[0].UpdateCheck = true, true
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultError, ErrorCode: CodeRollback}}
		},
	},
	{
		name: "ping while the update waits for a reboot",
		body: ueRequest("scheduler", stableApp(), uePing),
		want: func(r *Request) { r.Apps[0].Ping = true },
	},
	{
		name: "download started",
		body: ueRequest("scheduler", stableApp(), ueEvent(13, 1, 0)),
		want: func(r *Request) {
			r.Apps[0].Events = []Event{{Type: EventUpdateDownloadStarted, Result: ResultSuccess}}
		},
	},
	{
		name: "download finished",
		body: ueRequest("scheduler", stableApp(), ueEvent(14, 1, 0)),
		want: func(r *Request) {
			r.Apps[0].Events = []Event{{Type: EventUpdateDownloadFinished, Result: ResultSuccess}}
		},
	},
	{
		name: "update complete",
		body: ueRequest("scheduler", stableApp(), ueEvent(3, 1, 0)),
		want: func(r *Request) {
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultSuccess}}
		},
	},
	{
		name: "postinstall failed on a self-hosted server",
		body: ueRequest("scheduler", stableApp(), ueEvent(3, 0, 268435461)),
		want: func(r *Request) {
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultError, ErrorCode: 268435461}}
		},
	},
	{
		name: "payload backoff in dev mode",
		body: ueRequest("scheduler", stableApp(), ueEvent(3, 9, int32(CodeDeferredForBackoff)|int32(-1<<31)|1<<28)),
		want: func(r *Request) {
			r.Apps[0].Events = []Event{{Type: EventUpdateComplete, Result: ResultDeferred,
				ErrorCode: CodeDeferredForBackoff | ErrorCode(FlagDevMode|FlagSelfHosted)}}
		},
	},
	{
		name: "values escaped by libxml2",
		body: ueRequest("scheduler", withAlias("rack <3> & Zürich\rB"), uePing),
		want: func(r *Request) {
			r.Apps[0].MachineAlias = "rack <3> & Zürich\rB"
			r.Apps[0].Ping = true
		},
	},
}

func withAlias(alias string) ueApp {
	app := stableApp()
	app.MachineAlias = alias
	return app
}

func TestParseRequest(t *testing.T) {
	for _, tc := range requestCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(tc.body)
			if err != nil {
				t.Fatalf("ParseRequest: %v\n%s", err, tc.body)
			}
			source := "scheduler"
			if bytes.Contains(tc.body, []byte(`installsource="ondemandupdate"`)) {
				source = "ondemandupdate"
			}
			want := wantRequest(source, stableApp())
			tc.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("request mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseRequestQuotes: a '"' in a value, sent unescaped by
// update_engine.
func TestParseRequestQuotes(t *testing.T) {
	quotedVersion := stableApp()
	quotedVersion.Version = `3815.2.0"dev`
	cases := []struct {
		name     string
		body     []byte
		alias    string // want MachineAlias
		repaired []string
		version  string // want app and os version, if not stableApp's
		prev     string // want PreviousVersion of the first event
	}{
		{name: "quoted word", body: ueRequest("scheduler", withAlias(`rack "A" top`), uePing),
			alias: `rack "A" top`, repaired: []string{"app.machinealias"}},
		{name: "one quote", body: ueRequest("scheduler", withAlias(`x"`), uePing),
			alias: `x"`, repaired: []string{"app.machinealias"}},
		{name: "only a quote", body: ueRequest("scheduler", withAlias(`"`), uePing),
			alias: `"`, repaired: []string{"app.machinealias"}},
		{name: "quote and entities", body: ueRequest("scheduler", withAlias(`"a" <&> "b"`), uePing),
			alias: `"a" <&> "b"`, repaired: []string{"app.machinealias"}},
		{name: "looks like an earlier attribute", body: ueRequest("scheduler", withAlias(`aa:bb" machineid="0000`), uePing),
			alias: `aa:bb" machineid="0000`, repaired: []string{"app.machinealias"}},
		{name: "looks like a later attribute but is not one", body: ueRequest("scheduler", withAlias(`a" board="x`), uePing),
			alias: `a" board="x`, repaired: []string{"app.machinealias"}},
		{name: "repeats the next attribute, whose value is a fixed word", body: ueRequest("scheduler", withAlias(`a" lang="de`), uePing),
			alias: `a" lang="de`, repaired: []string{"app.machinealias"}},
		{name: "in the version, os and event too",
			body:     ueRequest("scheduler", quotedVersion, uePing, ueUpdateCheck, ueCheckEvent(`3760.2.0"dev`)),
			alias:    "",
			repaired: []string{"os.sp", "app.version", "event.previousversion"},
			version:  `3815.2.0"dev`, prev: `3760.2.0"dev`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(tc.body)
			if err != nil {
				t.Fatalf("ParseRequest: %v\n%s", err, tc.body)
			}
			app := got.Apps[0]
			if app.MachineAlias != tc.alias {
				t.Errorf("alias %q, want %q", app.MachineAlias, tc.alias)
			}
			if diff := cmp.Diff(tc.repaired, got.Repaired); diff != "" {
				t.Errorf("Repaired (-want +got):\n%s", diff)
			}
			version := "3815.2.0"
			if tc.version != "" {
				version = tc.version
			}
			if app.Version != version || got.OS.SP != version+"_x86_64" {
				t.Errorf("version %q, sp %q, want %q", app.Version, got.OS.SP, version)
			}
			if app.MachineID != stableApp().MachineID || app.Lang != "en-US" || app.Board != "amd64-usr" || app.Track != "stable" {
				t.Errorf("other attributes changed: %+v", app)
			}
			if tc.prev != "" && (len(app.Events) != 1 || app.Events[0].PreviousVersion != tc.prev) {
				t.Errorf("events %+v, want previousversion %q", app.Events, tc.prev)
			}
		})
	}
}

// TestParseRequestWellFormedQuote: a '"' that leaves the body well-formed
// is read as XML says (doc.go says why).
func TestParseRequestWellFormedQuote(t *testing.T) {
	got, err := ParseRequest(ueRequest("scheduler", withAlias(`a" b="c`), uePing))
	if err != nil {
		t.Fatal(err)
	}
	if got.Apps[0].MachineAlias != "a" || got.Repaired != nil || got.Apps[0].Lang != "en-US" {
		t.Errorf("alias %q, repaired %v, lang %q; want a, none, en-US", got.Apps[0].MachineAlias, got.Repaired, got.Apps[0].Lang)
	}
}

// TestParseRequestNewerClient: attributes a newer client adds are ignored,
// not taken into a value.
func TestParseRequestNewerClient(t *testing.T) {
	body := bytes.Replace(ueRequest("scheduler", stableApp(), uePing), []byte(`track="stable" `), []byte(`track="stable" channel="x" `), 1)
	got, err := ParseRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Apps[0].Track != "stable" || got.Repaired != nil {
		t.Errorf("track %q, repaired %v", got.Apps[0].Track, got.Repaired)
	}
}

func TestParseRequestErrors(t *testing.T) {
	check := ueRequest("scheduler", stableApp(), uePing, ueUpdateCheck, ueCheckEvent(""))
	replace := func(old, new string) []byte {
		if !bytes.Contains(check, []byte(old)) {
			t.Fatalf("%q not in the request", old)
		}
		return bytes.Replace(check, []byte(old), []byte(new), 1)
	}
	events := func(n int) []byte {
		lines := []string{uePing}
		for range n {
			lines = append(lines, ueEvent(13, 1, 0))
		}
		return ueRequest("scheduler", stableApp(), lines...)
	}
	apps := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString(`<request protocol="3.0">`)
		for range n {
			b.WriteString(`<app appid="x" version="1.2.3"></app>`)
		}
		b.WriteString(`</request>`)
		return b.Bytes()
	}
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"empty", nil, "empty request"},
		{"blank", []byte(" \n"), "empty request"},
		{"not xml", []byte("hello, omaha"), "text outside the root element"},
		{"not xml at all", []byte("<<<>>>"), "not well-formed XML"},
		{"truncated", check[:len(check)/2], "not well-formed XML"},
		{"truncated in a tag", check[:len(check)-20], "not well-formed XML"},
		{"wrong root", []byte(`<response protocol="3.0"></response>`), "root element is <response>, want <request>"},
		{"namespaced root", []byte(`<request xmlns="urn:x" protocol="3.0"></request>`), "root element is <urn:x:request>"},
		{"two roots", append(bytes.Clone(check), `<request protocol="3.0"></request>`...), "more than one root element"},
		{"text after the root", append(bytes.Clone(check), "junk"...), "text outside the root element"},
		{"only a declaration", []byte(`<?xml version="1.0" encoding="UTF-8"?>`), "no <request> element"},
		{"other encoding", replace(`encoding="UTF-8"`, `encoding="ISO-8859-1"`), "not well-formed XML"},
		{"unknown entity", replace(`lang="en-US"`, `lang="&nbsp;"`), "not well-formed XML"},
		{"no protocol", replace(`protocol="3.0" `, ``), "no protocol attribute"},
		{"protocol 2.0", replace(`protocol="3.0"`, `protocol="2.0"`), `protocol "2.0" is not supported`},
		{"no app", []byte(`<request protocol="3.0"><os></os></request>`), "request has no <app>"},
		{"no appid", replace(`appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" `, ``), "app 1 has no appid"},
		{"empty appid", replace(`appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"`, `appid=""`), "app 1 has no appid"},
		{"no version", replace(`version="3815.2.0" `, ``), "has no version"},
		{"no event type", replace(`eventtype="3" `, ``), "app 1 event 1: no eventtype"},
		{"event type not a number", replace(`eventtype="3"`, `eventtype="three"`), `eventtype "three" is not a number`},
		{"negative event result", replace(`eventresult="2"`, `eventresult="-2"`), `eventresult "-2" is not a number`},
		{"error code too big", replace(`previousversion=""`, `errorcode="4294967296"`), "not a 32-bit number"},
		{"error code with plus", replace(`previousversion=""`, `errorcode="+5"`), "not a 32-bit number"},
		{"value too long", []byte(strings.Replace(string(check), `machinealias=""`, `machinealias="`+strings.Repeat("x", MaxValueLen+1)+`"`, 1)),
			"attribute machinealias is 257 bytes"},
		{"duplicate attribute", replace(`ismachine="1"`, `ismachine="1" ismachine="0"`), "has attribute ismachine twice"},
		{"two os", replace(`</os>`, `</os><os></os>`), "more than one <os>"},
		{"two pings", replace(uePing, uePing+uePing), "more than one <ping>"},
		{"two checks", replace(ueUpdateCheck, ueUpdateCheck+ueUpdateCheck), "more than one <updatecheck>"},
		{"too many events", events(MaxEvents + 1), "more than 8 <event> elements"},
		{"too many apps", apps(MaxApps + 1), "more than 8 <app> elements"},
		{"too deep", replace(uePing, strings.Repeat("<x>", maxDepth)+strings.Repeat("</x>", maxDepth)), "nested more than 8 deep"},
		{"too many attributes", replace(`<ping `, `<ping `+manyAttrs(maxAttrs+1)), "more than 32 attributes"},
		{"quote that reads two ways", func() []byte {
			app := stableApp()
			app.OEM = `azure" oemversion="1`
			return ueRequest("scheduler", app, uePing)
		}(), "can be read more than one way"},
		{"long malformed tag", ueRequest("scheduler", withAlias(strings.Repeat("<", maxRepairTag/4)+`"`), uePing), "a malformed <app> of 8"},
		{"quote in a truncated body", ueRequest("scheduler", withAlias(`"`), uePing)[:300], "not well-formed XML"},
		{"quote and too many events", func() []byte {
			b := events(MaxEvents + 1)
			return bytes.Replace(b, []byte(`machinealias=""`), []byte(`machinealias="""`), 1)
		}(), `more than 8 <event> elements (after escaping the '"' in app.machinealias)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ParseRequest(tc.body)
			if err == nil {
				t.Fatalf("ParseRequest = %+v, want an error with %q", req, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "omaha: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

func manyAttrs(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("a")
		b.WriteString(strings.Repeat("b", i))
		b.WriteString(`="" `)
	}
	return b.String()
}

func TestParseRequestTooLarge(t *testing.T) {
	body := ueRequest("scheduler", stableApp(), uePing, "<!--"+strings.Repeat("x", MaxRequestSize)+"-->")
	if _, err := ParseRequest(body); !errors.Is(err, ErrTooLarge) {
		t.Errorf("error %v, want ErrTooLarge", err)
	}
	// Exactly the limit is read.
	pad := MaxRequestSize - len(ueRequest("scheduler", stableApp(), uePing, "<!---->"))
	body = ueRequest("scheduler", stableApp(), uePing, "<!--"+strings.Repeat("x", pad)+"-->")
	if len(body) != MaxRequestSize {
		t.Fatalf("body is %d bytes", len(body))
	}
	if _, err := ParseRequest(body); err != nil {
		t.Errorf("a body of MaxRequestSize: %v", err)
	}
}

// TestParseRequestOtherClients: requests not shaped like update_engine's
// template are read as XML.
func TestParseRequestOtherClients(t *testing.T) {
	// An older CoreOS update_engine (attribute order and elements differ).
	old := `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="CoreOSUpdateEngine-0.1.0.0" updaterversion="CoreOSUpdateEngine-0.1.0.0" installsource="scheduler" ismachine="1">
<os version="Indy" platform="Chrome OS" sp="ForcedUpdate_x86_64"></os>
<app appid="{87efface-864d-49a5-9bb3-4b050a7c227a}" bootid="{7D52A1CC-7066-40F0-91C7-7CB6A871BFDE}" machinealias="mymachine" machineid="{8BDE4C4D-9083-4D61-B41C-3253212C0C37}" oem="ec3000" version="ForcedUpdate" track="dev-channel" from_track="developer-build" lang="en-US" board="amd64-generic" hardware_class="" delta_okay="false" >
<ping active="1" a="-1" r="-1"></ping>
<updatecheck targetversionprefix=""></updatecheck>
<event eventtype="3" eventresult="2" previousversion=""></event>
</app>
</request>
`
	got, err := ParseRequest([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	app := got.Apps[0]
	if app.NormalizedID() != "87efface-864d-49a5-9bb3-4b050a7c227a" || app.MachineAlias != "mymachine" || app.Track != "dev-channel" ||
		!app.Ping || !app.UpdateCheck || len(app.Events) != 1 {
		t.Errorf("read %+v", app)
	}
	// Several apps, self-closing tags, single quotes, comments.
	multi := `<request protocol='3.0'><!-- c --><app appid='a' version='1.0.0'><updatecheck/></app><app appid="b" version="2.0.0"/></request>`
	got, err = ParseRequest([]byte(multi))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Apps) != 2 || !got.Apps[0].UpdateCheck || got.Apps[1].AppID != "b" {
		t.Errorf("read %+v", got.Apps)
	}
}

func TestNormalizeAppID(t *testing.T) {
	for in, want := range map[string]string{
		"{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}": FlatcarAppID,
		"e96281a6-d1af-4bde-9a0a-97b76e56dc57":   FlatcarAppID,
		"{e96281a6-d1af-4bde-9a0a-97b76e56dc57":  "{e96281a6-d1af-4bde-9a0a-97b76e56dc57",
		"{}":                                     "",
		"io.Example":                             "io.example",
	} {
		if got := NormalizeAppID(in); got != want {
			t.Errorf("NormalizeAppID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUpdatedFrom(t *testing.T) {
	cases := []struct {
		ev   Event
		want string
	}{
		{Event{Type: EventUpdateComplete, Result: ResultSuccessReboot, PreviousVersion: "3760.2.0"}, "3760.2.0"},
		{Event{Type: EventUpdateComplete, Result: ResultSuccessReboot, PreviousVersion: ""}, ""},
		{Event{Type: EventUpdateComplete, Result: ResultSuccessReboot, PreviousVersion: "0.0.0.0"}, ""},
		{Event{Type: EventUpdateComplete, Result: ResultSuccess, PreviousVersion: "3760.2.0"}, ""},
		{Event{Type: EventUpdateComplete, Result: ResultError, ErrorCode: CodeRollback}, ""},
	}
	for _, tc := range cases {
		got, ok := tc.ev.UpdatedFrom()
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%+v.UpdatedFrom() = %q, %v; want %q", tc.ev, got, ok, tc.want)
		}
	}
}

func TestInteractive(t *testing.T) {
	for source, want := range map[string]bool{"scheduler": false, "ondemandupdate": true} {
		req, err := ParseRequest(ueRequest(source, stableApp(), uePing))
		if err != nil {
			t.Fatal(err)
		}
		if req.Interactive() != want {
			t.Errorf("installsource %s: Interactive() = %v", source, !want)
		}
	}
}
