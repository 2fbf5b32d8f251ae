package omaha

import (
	"fmt"
	"strings"

	"matchbox.dev/matchbox/omaha/omahatest"
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
	b.WriteString(`    <os version="Chateau" platform="CoreOS" sp="` + omahatest.Escape(app.Version+"_x86_64") + `"></os>` + "\n")
	fmt.Fprintf(&b, `    <app appid="%s" version="%s" track="%s" bootid="%s" oem="%s" oemversion="%s" alephversion="%s" machineid="%s" machinealias="%s" lang="%s" board="%s" hardware_class="" delta_okay="false" >`+"\n",
		omahatest.Escape(app.AppID), omahatest.Escape(app.Version), omahatest.Escape(app.Track), omahatest.Escape(app.BootID),
		omahatest.Escape(app.OEM), omahatest.Escape(app.OEMVersion), omahatest.Escape(app.AlephVersion), omahatest.Escape(app.MachineID),
		omahatest.Escape(app.MachineAlias), omahatest.Escape(app.Lang), omahatest.Escape(app.Board))
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
	return `<event eventtype="3" eventresult="2" previousversion="` + omahatest.Escape(previousVersion) + `"></event>`
}

// ueEvent is an event report's line: errorcode only when the result is
// not success.
func ueEvent(typ, result int, code int32) string {
	if result == 1 {
		return fmt.Sprintf(`<event eventtype="%d" eventresult="%d"></event>`, typ, result)
	}
	return fmt.Sprintf(`<event eventtype="%d" eventresult="%d" errorcode="%d"></event>`, typ, result, code)
}
