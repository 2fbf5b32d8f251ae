package http

import (
	"bufio"
	"context"
	"fmt"
	"io"
	nethttp "net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/loopback"
	"matchbox.dev/matchbox/omaha"
	"matchbox.dev/matchbox/omaha/omahatest"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// The machines of the bad-input cases. Each case is sent five times by a
// first machine from 127.0.0.1, then five times by a second one from
// 127.0.0.2, so that a line logged once per machine (or per address)
// shows as one line each, and a line per request or one for all
// machines shows too.
var (
	// freshMachines are machines the server has no record of.
	freshMachines = [2]string{"0123456789abcdef0123456789ab0001", "0123456789abcdef0123456789ab0002"}
	// inFlightMachines are granted 4081.2.0 before the case, so that an
	// event that moved their update would show in the store.
	inFlightMachines = [2]string{"0123456789abcdef0123456789ab00f1", "0123456789abcdef0123456789ab00f2"}
	badSources       = [2]string{"127.0.0.1", "127.0.0.2"}
)

const (
	flatcarAppID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
	otherAppID   = "{00000000-0000-4000-8000-00000000abcd}"
	// versionDue is what a machine runs when 4081.2.0 is due to it (the
	// stable group is resumed): where bad input must keep a grant from
	// being made. versionCurrent is the mirrored one: nothing is due, so
	// an input read as valid is answered noupdate and writes nothing.
	versionDue     = "3815.2.0"
	versionCurrent = "4081.2.0"
)

// ueCheck is update_engine's periodic check of a stable machine.
func ueCheck(version, id string) string {
	return omahatest.Request(omahatest.Machine{Version: version, Track: "stable", MachineID: id}, omahatest.Check(""))
}

// ueEvent is an event update_engine posts on its own, with the attributes
// given (eventtype first).
func ueEvent(version, id, attrs string) string {
	return omahatest.Request(omahatest.Machine{Version: version, Track: "stable", MachineID: id}, "<event "+attrs+"></event>")
}

// withoutAttr drops the first attribute name, with its value.
func withoutAttr(body, name string) string {
	loc := regexp.MustCompile(` ` + name + `="[^"]*"`).FindStringIndex(body)
	return body[:loc[0]] + body[loc[1]:]
}

// setAttr gives the first attribute name the value v, written as it is (no
// escaping).
func setAttr(body, name, v string) string {
	loc := regexp.MustCompile(` ` + name + `="[^"]*"`).FindStringIndex(body)
	return body[:loc[0]] + " " + name + `="` + v + `"` + body[loc[1]:]
}

// withOtherApp adds an <app> of appid (an update check) before or after
// Flatcar's.
func withOtherApp(body, appid string, before bool) string {
	app := `<app appid="` + appid + `" version="1.0.0" track="stable" machineid="x"><updatecheck></updatecheck><event eventtype="3" eventresult="2" previousversion=""></event></app>`
	if before {
		return strings.Replace(body, "    <app ", "    "+app+"\n    <app ", 1)
	}
	return strings.Replace(body, "</request>", "    "+app+"\n</request>", 1)
}

// paddedTo is body grown to n bytes by a comment before the root element.
func paddedTo(body string, n int) string {
	pad := n - len(body) - len("<!---->\n")
	return strings.Replace(body, "<request ", "<!--"+strings.Repeat("x", pad)+"-->\n<request ", 1)
}

// bodyFraming is how a case's body is sent.
type bodyFraming int

const (
	sentWithLength bodyFraming = iota // Content-Length
	sentChunked                       // chunked, no Content-Length
	sentBadChunk                      // chunked, the first chunk's size not a number
)

type badUpdateCase struct {
	name     string
	machines [2]string // freshMachines or inFlightMachines
	method   string    // default POST
	framing  bodyFraming
	body     func(id string) string
	status   int
	// text is part of a 4xx's text answer; apps is what a 200 answers.
	text string
	apps []omahatest.App
	// logs is how many lines one machine's five requests log, each
	// holding logText.
	logs    int
	logText string
}

// flatcarApp is Flatcar's app as answered, its update check answered
// updateCheck ("" for none).
func flatcarApp(updateCheck string, events int) omahatest.App {
	return omahatest.App{AppID: flatcarAppID, Status: "ok", UpdateCheck: updateCheck, Events: events}
}

// unknownAppAnswer is the answer to an app other than Flatcar's that
// asked for an update.
var unknownAppAnswer = omahatest.App{AppID: otherAppID, Status: "error-unknownApplication", UpdateCheck: "noupdate", Events: 1}

// Bad input at /v1/update/ gets a clear answer or noupdate, is logged
// once per machine, and changes nothing: through the server on loopback,
// with the update service over the in-memory store.
func TestUpdateBadInput(t *testing.T) {
	cases := []badUpdateCase{
		// Not Omaha.
		{name: "not XML", machines: freshMachines, body: func(string) string { return "hello, matchbox\n" },
			status: 400, text: "invalid: omaha: text outside the root element", logs: 1, logText: `status=400`},
		{name: "JSON", machines: freshMachines, body: func(id string) string { return `{"appid": "` + flatcarAppID + `", "machineid": "` + id + `"}` },
			status: 400, text: "invalid: omaha: text outside the root element", logs: 1},
		{name: "truncated", machines: freshMachines, body: func(id string) string { b := ueCheck(versionDue, id); return b[:len(b)/2] },
			status: 400, text: "invalid: omaha: request is not well-formed XML", logs: 1},
		{name: "root element not request", machines: freshMachines,
			body: func(id string) string {
				return strings.ReplaceAll(strings.ReplaceAll(ueCheck(versionDue, id), "<request ", "<response "), "</request>", "</response>")
			},
			status: 400, text: "invalid: omaha: root element is <response>, want <request>", logs: 1},
		{name: "protocol 2.0", machines: freshMachines, body: func(id string) string { return setAttr(ueCheck(versionDue, id), "protocol", "2.0") },
			status: 400, text: `invalid: omaha: protocol "2.0" is not supported, want 3.0`, logs: 1},
		{name: "no protocol", machines: freshMachines, body: func(id string) string { return withoutAttr(ueCheck(versionDue, id), "protocol") },
			status: 400, text: "invalid: omaha: <request> has no protocol attribute", logs: 1},
		{name: "over MaxRequestSize, Content-Length", machines: freshMachines, body: func(id string) string { return paddedTo(ueCheck(versionDue, id), omaha.MaxRequestSize+1) },
			status: 400, text: "invalid: omaha: request body larger than 64 KiB", logs: 1},
		{name: "over MaxRequestSize, chunked", machines: freshMachines, framing: sentChunked, body: func(id string) string { return paddedTo(ueCheck(versionDue, id), 4*omaha.MaxRequestSize) },
			status: 400, text: "invalid: omaha: request body larger than 64 KiB", logs: 1},
		{name: "malformed chunk", machines: freshMachines, framing: sentBadChunk, body: func(id string) string { return ueCheck(versionDue, id) },
			status: 400, text: "invalid: read request body: ", logs: 1},
		{name: "empty body", machines: freshMachines, body: func(string) string { return "" },
			status: 400, text: "invalid: omaha: empty request", logs: 1},
		{name: "blank body", machines: freshMachines, body: func(string) string { return "\n \n" },
			status: 400, text: "invalid: omaha: empty request", logs: 1},
		{name: "GET", machines: freshMachines, method: "GET", body: func(string) string { return "" },
			status: 405, text: "method not allowed: POST an Omaha request"},

		// Apps other than Flatcar: answered with Omaha's status for an
		// unknown app; Flatcar's beside it is answered as ever.
		{name: "unknown appid after Flatcar's", machines: freshMachines, body: func(id string) string { return withOtherApp(ueCheck(versionCurrent, id), otherAppID, false) },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1), unknownAppAnswer}},
		{name: "unknown appid before Flatcar's", machines: freshMachines, body: func(id string) string { return withOtherApp(ueCheck(versionCurrent, id), otherAppID, true) },
			status: 200, apps: []omahatest.App{unknownAppAnswer, flatcarApp("noupdate", 1)}},
		{name: "unknown appid alone", machines: freshMachines, body: func(id string) string { return setAttr(ueCheck(versionDue, id), "appid", otherAppID) },
			status: 200, apps: []omahatest.App{unknownAppAnswer}},

		// Missing fields, from machines an update is due to.
		{name: "machineid empty", machines: freshMachines, body: func(string) string { return ueCheck(versionDue, "") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}, logs: 1, logText: "without a machine id"},
		{name: "machineid absent", machines: freshMachines, body: func(id string) string { return withoutAttr(ueCheck(versionDue, id), "machineid") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}, logs: 1, logText: "without a machine id"},
		{name: "machineid absent, event only", machines: freshMachines, body: func(id string) string {
			return withoutAttr(ueEvent(versionDue, id, `eventtype="13" eventresult="1"`), "machineid")
		},
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}, logs: 1, logText: "without a machine id"},
		// FLATCAR_RELEASE_VERSION unset: nothing to compare with.
		{name: "version empty", machines: freshMachines, body: func(id string) string { return ueCheck("", id) },
			status: 400, text: "invalid: omaha: app 1 ({e96281a6-d1af-4bde-9a0a-97b76e56dc57}) has no version", logs: 1},
		{name: "version absent", machines: freshMachines, body: func(id string) string {
			return regexp.MustCompile(`(<app appid="[^"]*") version="[^"]*"`).ReplaceAllString(ueCheck(versionDue, id), "$1")
		},
			status: 400, text: "has no version", logs: 1},
		// A track no group is named after holds the machine (counted as
		// held for "no group" in the metrics), as any other hold.
		{name: "track empty", machines: freshMachines, body: func(id string) string { return setAttr(ueCheck(versionDue, id), "track", "") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		{name: "track absent", machines: freshMachines, body: func(id string) string { return withoutAttr(ueCheck(versionDue, id), "track") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		{name: "track of no group", machines: freshMachines, body: func(id string) string { return setAttr(ueCheck(versionDue, id), "track", "nightly") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		// Nothing is mirrored for a board that is not named: noupdate, as
		// for any board the mirror lacks.
		{name: "board empty", machines: freshMachines, body: func(id string) string { return setAttr(ueCheck(versionDue, id), "board", "") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		{name: "board absent", machines: freshMachines, body: func(id string) string { return withoutAttr(ueCheck(versionDue, id), "board") },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		{name: "no updatecheck, event only", machines: freshMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventtype="13" eventresult="1"`) },
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "no updatecheck, ping only", machines: freshMachines,
			body: func(id string) string {
				return omahatest.Request(omahatest.Machine{Version: versionDue, Track: "stable", MachineID: id}, `<ping active="1"></ping>`)
			},
			status: 200, apps: []omahatest.App{{AppID: flatcarAppID, Status: "ok"}}},
		{name: "empty app", machines: freshMachines,
			body: func(id string) string {
				return omahatest.Request(omahatest.Machine{Version: versionDue, Track: "stable", MachineID: id}, "")
			},
			status: 200, apps: []omahatest.App{{AppID: flatcarAppID, Status: "ok"}}},

		// A '"' in a value, as update_engine writes it (unescaped). In the
		// alias (a value a person writes): read by the template's
		// attribute order and answered, logged once; refused when it
		// reads two ways.
		{name: "alias with a quote", machines: freshMachines,
			body: func(id string) string {
				return omahatest.Request(omahatest.Machine{Version: versionCurrent, Track: "stable", MachineID: id, Alias: `rack "B" 12`}, omahatest.Check(""))
			},
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}, logs: 1, logText: "attributes=app.machinealias"},
		{name: "alias with quotes that read two ways", machines: freshMachines,
			body: func(id string) string {
				return omahatest.Request(omahatest.Machine{Version: versionCurrent, Track: "stable", MachineID: id, Alias: `x" lang="en-US" board="y`}, omahatest.Check(""))
			},
			status: 400, text: `the '"' in <app> can be read more than one way`, logs: 1},
		// A '"' that leaves well-formed XML is read as XML says (the
		// alias "a", an attribute b): nothing shows it was a stray one.
		{name: "alias with a quote that leaves XML well-formed", machines: freshMachines,
			body: func(id string) string {
				return omahatest.Request(omahatest.Machine{Version: versionCurrent, Track: "stable", MachineID: id, Alias: `a" b="c`}, omahatest.Check(""))
			},
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		// The machine id comes from /etc/machine-id (hex), not from a
		// person: a '"' in it is not repaired but refused.
		{name: "machineid with a quote", machines: freshMachines, body: func(id string) string { return ueCheck(versionCurrent, id[:16]+`"`+id[16:]) },
			status: 400, text: "invalid: omaha: request is not well-formed XML", logs: 1},
		// update_engine escapes '<': the id is read as sent and is just an
		// id.
		{name: "machineid with a '<', escaped", machines: freshMachines, body: func(id string) string { return ueCheck(versionCurrent, id[:16]+"<"+id[16:]) },
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		{name: "machineid with a '<', raw", machines: freshMachines, body: func(id string) string { return setAttr(ueCheck(versionCurrent, id), "machineid", id[:16]+"<"+id[16:]) },
			status: 400, text: "invalid: omaha: request is not well-formed XML", logs: 1},

		// Events that say nothing the service follows, from machines
		// whose update is in flight: their update does not move.
		{name: "unknown event type and result", machines: inFlightMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventtype="99" eventresult="7"`) },
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "unknown event type, success", machines: inFlightMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventtype="99" eventresult="1"`) },
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "download started, unknown result", machines: inFlightMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventtype="13" eventresult="7"`) },
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "negative error code, deferred", machines: inFlightMachines,
			body: func(id string) string {
				return ueEvent(versionDue, id, `eventtype="3" eventresult="9" errorcode="-2147483612"`)
			},
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "error code of 32 bits set, deferred", machines: inFlightMachines,
			body: func(id string) string {
				return ueEvent(versionDue, id, `eventtype="3" eventresult="9" errorcode="4294967295"`)
			},
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "garbage previous version", machines: inFlightMachines,
			body: func(id string) string {
				return ueEvent(versionDue, id, `eventtype="3" eventresult="2" previousversion="not a version &lt;&amp;&gt;"`)
			},
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}},
		{name: "previous version with a quote", machines: inFlightMachines,
			body: func(id string) string {
				return ueEvent(versionDue, id, `eventtype="3" eventresult="2" previousversion="4081"2.0"`)
			},
			status: 200, apps: []omahatest.App{flatcarApp("", 1)}, logs: 1, logText: "attributes=event.previousversion"},
		{name: "garbage previous version with the check", machines: freshMachines,
			body: func(id string) string {
				return omahatest.Request(omahatest.Machine{Version: versionCurrent, Track: "stable", MachineID: id}, omahatest.Check("-1.x.\x01"))
			},
			status: 200, apps: []omahatest.App{flatcarApp("noupdate", 1)}},
		// Numbers no update_engine writes: refused.
		{name: "error code over 32 bits", machines: inFlightMachines, body: func(id string) string {
			return ueEvent(versionDue, id, `eventtype="3" eventresult="0" errorcode="99999999999"`)
		},
			status: 400, text: `errorcode "99999999999" is not a 32-bit number`, logs: 1},
		{name: "error code under -2^31", machines: inFlightMachines, body: func(id string) string {
			return ueEvent(versionDue, id, `eventtype="3" eventresult="0" errorcode="-99999999999"`)
		},
			status: 400, text: `errorcode "-99999999999" is not a 32-bit number`, logs: 1},
		{name: "error code not a number", machines: inFlightMachines, body: func(id string) string {
			return ueEvent(versionDue, id, `eventtype="3" eventresult="0" errorcode="0x10"`)
		},
			status: 400, text: `errorcode "0x10" is not a 32-bit number`, logs: 1},
		{name: "huge event type", machines: inFlightMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventtype="99999999999" eventresult="1"`) },
			status: 400, text: `eventtype "99999999999" is not a number`, logs: 1},
		{name: "negative event result", machines: inFlightMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventtype="13" eventresult="-1"`) },
			status: 400, text: `eventresult "-1" is not a number`, logs: 1},
		{name: "no event type", machines: inFlightMachines, body: func(id string) string { return ueEvent(versionDue, id, `eventresult="1"`) },
			status: 400, text: "no eventtype", logs: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newBadInputFixture(t)
			before := f.records(t)
			for m := range 2 {
				for range 5 {
					f.sendBad(t, c, m)
				}
				lines := f.srv.logs.Lines()
				if len(lines) != (m+1)*c.logs {
					t.Fatalf("%d log lines after 5 requests of each of %d machines, want %d:\n%s", len(lines), m+1, (m+1)*c.logs, strings.Join(lines, "\n"))
				}
				for _, line := range lines {
					if !strings.Contains(line, c.logText) {
						t.Errorf("log line lacks %q: %s", c.logText, line)
					}
				}
			}
			if diff := cmp.Diff(before, f.records(t)); diff != "" {
				t.Errorf("update records changed (-before +after):\n%s", diff)
			}
		})
	}
}

// badInputFixture is the server of a bad-input case: the stable group
// resumed (a machine at versionDue is granted 4081.2.0),
// inFlightMachines granted it, nothing logged yet.
type badInputFixture struct {
	srv     *served
	store   *storage.DB
	clients [2]*nethttp.Client // from badSources
}

func newBadInputFixture(t *testing.T) *badInputFixture {
	t.Helper()
	ctx := context.Background()
	f := &badInputFixture{store: storage.NewMemory()}
	svc := update.New(f.store, releases{})
	if err := svc.EnsureDefaultGroups(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetPaused(ctx, "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	f.srv = startServe(t, Config{Updates: svc, UpdatePayloads: releases{}, Registry: prometheus.NewRegistry()})
	for i, src := range badSources {
		f.clients[i] = loopback.Client(src, hang)
		t.Cleanup(f.clients[i].CloseIdleConnections)
	}
	for i, id := range inFlightMachines {
		code, _, body := f.post(t, i, ueCheck(versionDue, id))
		a, err := omahatest.ReadAnswer(body)
		if code != 200 || err != nil || a.Status != "ok" || a.Version != versionCurrent {
			t.Fatalf("grant to %s: %d %v %s", id, code, err, body)
		}
	}
	if lines := f.srv.logs.Lines(); len(lines) != 0 {
		t.Fatalf("the grants logged:\n%s", strings.Join(lines, "\n"))
	}
	return f
}

// records are the update service's records of every kind.
func (f *badInputFixture) records(t *testing.T) map[string][]matchbox.Record {
	t.Helper()
	out := map[string][]matchbox.Record{}
	for _, kind := range []string{"update-group", "update-rollout", "update-machine"} {
		recs, err := f.store.Records(context.Background(), kind)
		if err != nil {
			t.Fatal(err)
		}
		out[kind] = recs
	}
	return out
}

// post sends an update_engine request from machine m's address.
func (f *badInputFixture) post(t *testing.T, m int, body string) (int, nethttp.Header, []byte) {
	t.Helper()
	req, err := nethttp.NewRequest("POST", "http://"+f.srv.addr+"/v1/update/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/xml")
	return f.do(t, m, req)
}

func (f *badInputFixture) do(t *testing.T, m int, req *nethttp.Request) (int, nethttp.Header, []byte) {
	t.Helper()
	resp, err := f.clients[m].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp)
}

// sendBad sends case c as its machine m and checks the answer.
func (f *badInputFixture) sendBad(t *testing.T, c badUpdateCase, m int) {
	t.Helper()
	body := c.body(c.machines[m])
	var (
		code   int
		header nethttp.Header
		data   []byte
	)
	switch c.framing {
	case sentBadChunk:
		code, header, data = f.rawChunked(t, m, body)
	case sentWithLength, sentChunked:
		method := c.method
		if method == "" {
			method = "POST"
		}
		var rd io.Reader = strings.NewReader(body)
		if c.framing == sentChunked {
			rd = io.MultiReader(rd) // of unknown length: sent chunked
		}
		req, err := nethttp.NewRequest(method, "http://"+f.srv.addr+"/v1/update/", rd)
		if err != nil {
			t.Fatal(err)
		}
		if c.framing == sentChunked {
			req.ContentLength = -1
		}
		req.Header.Set("Content-Type", "text/xml")
		code, header, data = f.do(t, m, req)
	}
	// No case wants a 5xx: update_engine would back off as from a
	// server in trouble.
	if code != c.status {
		t.Fatalf("status %d, want %d: %s", code, c.status, data)
	}
	ct := header.Get("Content-Type")
	if code != 200 {
		// A clear text error: one line saying what is wrong.
		text := string(data)
		if !strings.HasPrefix(ct, "text/plain") || strings.Count(text, "\n") != 1 || !strings.HasSuffix(text, "\n") || !strings.Contains(text, c.text) {
			t.Fatalf("answer %q (%s), want one line of text with %q", text, ct, c.text)
		}
		return
	}
	if !strings.HasPrefix(ct, "text/xml") {
		t.Fatalf("answer of type %s: %s", ct, data)
	}
	a, err := omahatest.ReadAnswer(data)
	if err != nil {
		t.Fatalf("update_engine cannot read the answer: %v\n%s", err, data)
	}
	if a.Status == "ok" || len(a.Packages) != 0 || len(a.Codebases) != 0 {
		t.Fatalf("an update offered: %+v\n%s", a, data)
	}
	apps, err := omahatest.ReadApps(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.apps, apps); diff != "" {
		t.Fatalf("apps answered (-want +got):\n%s\n%s", diff, data)
	}
}

// rawChunked sends body chunked on a connection of its own, with a first
// chunk size that is not hexadecimal.
func (f *badInputFixture) rawChunked(t *testing.T, m int, body string) (int, nethttp.Header, []byte) {
	t.Helper()
	c := loopback.Dial(t, badSources[m], f.srv.addr, hang)
	if _, err := fmt.Fprintf(c, "POST /v1/update/ HTTP/1.1\r\nHost: %s\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n%s\r\n0\r\n\r\n", f.srv.addr, body); err != nil {
		t.Fatal(err)
	}
	resp, err := nethttp.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp)
}

// readResponse reads and closes an answer: its status, header and body.
func readResponse(t *testing.T, resp *nethttp.Response) (int, nethttp.Header, []byte) {
	t.Helper()
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}
