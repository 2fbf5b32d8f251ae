// Package omahatest plays Flatcar's update client in tests: requests
// written as update_engine writes them (OMAHA.md §3: its template, byte
// for byte, values escaped as libxml2 escapes them), and answers read as
// it reads them.
package omahatest

import (
	"encoding/xml"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Machine is what a request says of the machine sending it.
type Machine struct {
	Version   string // the running version
	Track     string // GROUP= of update.conf
	MachineID string
	Alias     string // MACHINE_ALIAS=
	Board     string // default amd64-usr
}

// Check is the body of a periodic update check: ping, update check and
// the event every check carries (previous version "" or, after the reboot
// into an update, the version updated from).
func Check(previousVersion string) string {
	return `<ping active="1"></ping>
        <updatecheck></updatecheck>
        <event eventtype="3" eventresult="2" previousversion="` + Escape(previousVersion) + `"></event>`
}

// Event is the body of an event update_engine posts on its own.
func Event(typ, result string) string {
	return `<event eventtype="` + typ + `" eventresult="` + result + `"></event>`
}

// Request is a whole request of m with body (Check, Event, …). Its
// values are escaped as update_engine escapes them (escape), so a '"' in
// one is written as it is and makes the body malformed, as it does on a
// real machine.
func Request(m Machine, body string) string {
	board := m.Board
	if board == "" {
		board = "amd64-usr"
	}
	return `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
    <os version="Chateau" platform="CoreOS" sp="` + Escape(m.Version) + `_x86_64"></os>
    <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="` + Escape(m.Version) + `" track="` + Escape(m.Track) + `" bootid="{b0}" oem="qemu" oemversion="0.1" alephversion="3815.2.0" machineid="` + Escape(m.MachineID) + `" machinealias="` + Escape(m.Alias) + `" lang="en-US" board="` + Escape(board) + `" hardware_class="" delta_okay="false" >
        ` + body + `
    </app>
</request>
`
}

// Escape writes a value as libxml2's xmlEncodeEntitiesReentrant does for
// update_engine (OMAHA.md §3): '<', '>', '&' and CR as references,
// non-ASCII as hexadecimal references, other control characters but LF
// and tab dropped, and '"' left as it is.
func Escape(v string) string {
	var b strings.Builder
	for _, r := range v {
		switch {
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '&':
			b.WriteString("&amp;")
		case r == '\r':
			b.WriteString("&#13;")
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20:
		case r >= utf8.RuneSelf:
			fmt.Fprintf(&b, "&#x%X;", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Answer is what update_engine reads of an answer: the first app's update
// check (OMAHA.md §5).
type Answer struct {
	Status string // updatecheck status: ok, noupdate
	// Codebases are the urls' codebases, in order.
	Codebases []string
	Version   string // manifest version
	Packages  []Package
	// SHA256 is the first postinstall action's sha256 (base64).
	SHA256 string
}

// Package is one offered package.
type Package struct {
	Name string
	Size int64
}

// ReadAnswer reads an answer as update_engine does.
func ReadAnswer(data []byte) (Answer, error) {
	var r struct {
		Apps []struct {
			UpdateCheck struct {
				Status string `xml:"status,attr"`
				URLs   []struct {
					Codebase string `xml:"codebase,attr"`
				} `xml:"urls>url"`
				Manifest struct {
					Version  string `xml:"version,attr"`
					Packages []struct {
						Name string `xml:"name,attr"`
						Size int64  `xml:"size,attr"`
					} `xml:"packages>package"`
					Actions []struct {
						Event  string `xml:"event,attr"`
						SHA256 string `xml:"sha256,attr"`
					} `xml:"actions>action"`
				} `xml:"manifest"`
			} `xml:"updatecheck"`
		} `xml:"app"`
	}
	if err := xml.NewDecoder(strings.NewReader(string(data))).Decode(&r); err != nil {
		return Answer{}, err
	}
	var a Answer
	if len(r.Apps) == 0 {
		return a, nil
	}
	uc := r.Apps[0].UpdateCheck
	a.Status, a.Version = uc.Status, uc.Manifest.Version
	for _, u := range uc.URLs {
		a.Codebases = append(a.Codebases, u.Codebase)
	}
	for _, p := range uc.Manifest.Packages {
		a.Packages = append(a.Packages, Package{p.Name, p.Size})
	}
	for _, act := range uc.Manifest.Actions {
		if act.Event == "postinstall" {
			a.SHA256 = act.SHA256
			break
		}
	}
	return a, nil
}

// App is one <app> of an answer, as the server wrote it.
type App struct {
	AppID  string
	Status string // the app's status: ok, error-unknownApplication
	// UpdateCheck is the updatecheck's status: ok, noupdate; "" when the
	// app has no updatecheck.
	UpdateCheck string
	Events      int // the <event> acknowledgements
}

// ReadApps reads every app of an answer (update_engine reads only the
// first one's update check: ReadAnswer).
func ReadApps(data []byte) ([]App, error) {
	var r struct {
		XMLName xml.Name `xml:"response"`
		Apps    []struct {
			AppID       string `xml:"appid,attr"`
			Status      string `xml:"status,attr"`
			UpdateCheck *struct {
				Status string `xml:"status,attr"`
			} `xml:"updatecheck"`
			Events []struct{} `xml:"event"`
		} `xml:"app"`
	}
	if err := xml.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	out := make([]App, 0, len(r.Apps))
	for _, a := range r.Apps {
		app := App{AppID: a.AppID, Status: a.Status, Events: len(a.Events)}
		if a.UpdateCheck != nil {
			app.UpdateCheck = a.UpdateCheck.Status
		}
		out = append(out, app)
	}
	return out, nil
}
