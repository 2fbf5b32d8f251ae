package omaha

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzParseRequest: ParseRequest never panics, what it returns stays
// within the bounds, and the answer to it is one update_engine reads.
func FuzzParseRequest(f *testing.F) {
	for _, tc := range requestCases {
		f.Add(tc.body)
	}
	f.Add(ueRequest("scheduler", withAlias(`rack "A" top`), uePing, ueUpdateCheck, ueCheckEvent(`"`)))
	f.Add(ueRequest("scheduler", withAlias(`a" lang="de" x="`), uePing))
	f.Add([]byte(`<request protocol="3.0"><app appid="a" version="1"><x><x></x></x></app></request>`))
	f.Add([]byte("<request"))
	f.Add([]byte(`<request protocol="3.0"></request>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseRequest(body)
		if err != nil {
			if req != nil {
				t.Fatal("a request and an error")
			}
			return
		}
		if len(req.Apps) > MaxApps {
			t.Fatalf("%d apps", len(req.Apps))
		}
		for _, app := range req.Apps {
			if len(app.Events) > MaxEvents {
				t.Fatalf("%d events", len(app.Events))
			}
			for _, v := range []string{app.AppID, app.Version, app.Track, app.BootID, app.OEM, app.OEMVersion, app.AlephVersion,
				app.MachineID, app.MachineAlias, app.Lang, app.Board, app.HardwareClass} {
				if len(v) > MaxValueLen {
					t.Fatalf("a value of %d bytes", len(v))
				}
			}
			if app.AppID == "" || app.Version == "" {
				t.Fatalf("app without appid or version: %+v", app)
			}
		}
		out, err := NewResponse(req, time.Time{}).Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := parseTree(out); err != nil {
			t.Fatalf("the answer is not XML: %v\n%s", err, out)
		}
		if req.Apps[0].UpdateCheck {
			if a, err := ueParse(out); err != nil || !a.NoUpdate {
				t.Fatalf("update_engine reads %+v, %v", a, err)
			}
		}
	})
}

// TestParseRequestCost: the bodies that cost ParseRequest most stay
// within a bounded memory and time.
func TestParseRequestCost(t *testing.T) {
	fill := func(prefix, unit, suffix string) []byte {
		n := (MaxRequestSize - len(prefix) - len(suffix)) / len(unit)
		return []byte(prefix + strings.Repeat(unit, n) + suffix)
	}
	app := `<request protocol="3.0"><app appid="a" version="1" `
	bodies := map[string][]byte{
		"quotes in one app tag":    fill(app+`machinealias="`, `"`, `"></app></request>`),
		"boundaries in an app tag": fill(`<app appid="`, `" version="`, `">`),
		"many small app tags":      fill(``, `<app a">`, ``),
		"boundaries in app tags under the repair bound": fill(``,
			`<app appid="`+strings.Repeat(`" version="" track="`, (maxRepairTag-20)/20)+`">`, ``),
		"many event tags":       fill(app+`>`, `<event eventtype="1" eventresult="1"/>`, `</app></request>`),
		"deep nesting":          fill(`<request protocol="3.0">`, `<x>`, ``),
		"many attributes":       fill(`<request protocol="3.0" `, `a="" `, `>`),
		"many unknown elements": fill(`<request protocol="3.0">`, `<x a="b"/>`, `</request>`),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			if len(body) > MaxRequestSize {
				t.Fatalf("%d bytes", len(body))
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			ParseRequest(body)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d KiB allocated, %v", allocated>>10, took)
			if allocated > 16<<20 {
				t.Errorf("%d MiB allocated for a %d KiB body", allocated>>20, len(body)>>10)
			}
			if took > 2*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
}

// FuzzAlias: whatever MACHINE_ALIAS holds, the request update_engine
// writes with it is read back with that alias, or refused as ambiguous
// or too long, or (a '"' that left the body well-formed XML) read as XML
// says; never read as another alias with repairs claimed.
func FuzzAlias(f *testing.F) {
	for _, s := range []string{"", "aa:bb:cc:dd:ee:ff", `rack "A"`, `"`, `a" b="c`, `x" lang="en-US" board="y`, `a" lang="de`, "Zürich <&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, alias string) {
		for _, r := range alias {
			if !unicode.IsPrint(r) || r == utf8.RuneError {
				return
			}
		}
		body := ueRequest("scheduler", withAlias(alias), uePing, ueUpdateCheck, ueCheckEvent(""))
		req, err := ParseRequest(body)
		if err != nil {
			if !strings.Contains(err.Error(), "more than one way") && !strings.Contains(err.Error(), "bytes, more than") &&
				!strings.Contains(err.Error(), "too long to repair") && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("alias %q: %v", alias, err)
			}
			return
		}
		got := req.Apps[0]
		if got.MachineAlias == alias {
			if strings.Contains(alias, `"`) != (len(req.Repaired) > 0) && !wellFormedXML(body) {
				t.Fatalf("alias %q read, repaired %v", alias, req.Repaired)
			}
			want := stableApp()
			if got.Lang != want.Lang || got.Board != want.Board || got.MachineID != want.MachineID || got.Version != want.Version {
				t.Fatalf("alias %q: other values changed: %+v", alias, got)
			}
			return
		}
		if len(req.Repaired) > 0 || !wellFormedXML(body) {
			t.Fatalf("alias %q read as %q, repaired %v", alias, got.MachineAlias, req.Repaired)
		}
	})
}

func wellFormedXML(body []byte) bool {
	_, err := parseTree(body)
	return err == nil
}
