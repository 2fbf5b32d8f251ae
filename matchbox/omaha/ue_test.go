package omaha

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file writes requests as update_engine does (OMAHA.md §3,
// ue/omaha_request_action.cc:81-231), byte for byte.

// ueApp holds what update_engine fills into its <app> template, before
// escaping.
type ueApp struct {
	AppID, Version, Track, BootID, OEM, OEMVersion, AlephVersion string
	MachineID, MachineAlias, Lang, Board                         string
}

// stableApp is a machine on the stable channel with default settings.
func stableApp() ueApp {
	return ueApp{
		AppID:        "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}",
		Version:      "3815.2.0",
		Track:        "stable",
		BootID:       "{6f1d5b6e-4c2b-4d8e-9a51-0e0c7f2d8a11}",
		OEM:          "azure",
		OEMVersion:   "2.9.1.1",
		AlephVersion: "3033.2.0",
		MachineID:    "8bde4c4d90834d61b41c3253212c0c37",
		MachineAlias: "",
		Lang:         "en-US",
		Board:        "amd64-usr",
	}
}

// ueRequest writes a request as update_engine's template does: 4 spaces
// before <os> and <app>, 8 before each body line, '\n' line ends, a space
// before the '>' of <app>.
func ueRequest(installSource string, app ueApp, body ...string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="` +
		installSource + `" ismachine="1">` + "\n")
	b.WriteString(`    <os version="Chateau" platform="CoreOS" sp="` + libxmlEscape(app.Version+"_x86_64") + `"></os>` + "\n")
	fmt.Fprintf(&b, `    <app appid="%s" version="%s" track="%s" bootid="%s" oem="%s" oemversion="%s" alephversion="%s" machineid="%s" machinealias="%s" lang="%s" board="%s" hardware_class="" delta_okay="false" >`+"\n",
		libxmlEscape(app.AppID), libxmlEscape(app.Version), libxmlEscape(app.Track), libxmlEscape(app.BootID),
		libxmlEscape(app.OEM), libxmlEscape(app.OEMVersion), libxmlEscape(app.AlephVersion), libxmlEscape(app.MachineID),
		libxmlEscape(app.MachineAlias), libxmlEscape(app.Lang), libxmlEscape(app.Board))
	for _, line := range body {
		b.WriteString("        " + line + "\n")
	}
	b.WriteString("    </app>\n</request>\n")
	return []byte(b.String())
}

// The body lines.
const (
	uePing        = `<ping active="1"></ping>`
	ueUpdateCheck = `<updatecheck></updatecheck>`
	ueRollback    = `<event eventtype="3" eventresult="0" errorcode="44"></event>`
)

// ueCheckEvent is the event line every update check carries.
func ueCheckEvent(previousVersion string) string {
	return `<event eventtype="3" eventresult="2" previousversion="` + libxmlEscape(previousVersion) + `"></event>`
}

// ueEvent is an event report's line: errorcode only when the result is
// not success.
func ueEvent(typ, result int, code int32) string {
	if result == 1 {
		return fmt.Sprintf(`<event eventtype="%d" eventresult="%d"></event>`, typ, result)
	}
	return fmt.Sprintf(`<event eventtype="%d" eventresult="%d" errorcode="%d"></event>`, typ, result, code)
}

// libxmlEscape escapes as libxml2's xmlEncodeEntitiesReentrant(NULL, v):
// '<', '>', '&' as entities, CR as &#13;, non-ASCII as &#xHEX;, other
// control characters dropped, '"' left as it is.
func libxmlEscape(v string) string {
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
