// Package omaha is the Omaha protocol's wire format as Flatcar machines
// speak it: update_engine for the OS, ue-rs (download_sysext, run by
// flatcar-postinst) for the extension payloads it finds in the same
// answer. It holds no server, store or policy; the update service reads
// what a machine POSTs to /v1/update/ with ParseRequest and writes the
// answer with NewResponse and Response.Marshal. The facts it follows are
// in the fact sheet shared/flatcar/OMAHA.md (section numbers below).
// Standard library only.
//
// # Requests
//
// ParseRequest reads <request protocol="3.0"> with its <os> and <app>
// elements (§3): the app's attributes as strings, its <ping> and
// <updatecheck> as flags, its <event>s with typed codes (EventType,
// EventResult, ErrorCode with its flag bits, §4). It bounds all a client
// controls (MaxRequestSize, MaxApps, MaxEvents, MaxValueLen, attribute
// count and nesting) and refuses, with an error saying why, what is not
// XML, not a request, truncated, has two roots or lacks an app, appid,
// version or an event's type and result. Unknown elements and attributes are
// ignored.
//
// update_engine does not escape '"' in values, so a '"' in MACHINE_ALIAS
// yields a body that is not XML. As long as the body as a whole fails to
// parse, each start tag of <os>, <app> and <event> that is malformed on
// its own is read by update_engine's fixed attribute order: a value ends
// at a '"' before ` nextname="`, and only the values taken from files a
// person edits (appid, version, track, oem, oemversion, alephversion,
// machinealias, board, sp, previousversion) may hold a '"'; numbers and
// fixed words end at their first. When exactly one reading exists the
// request is read that way and Request.Repaired names the attributes;
// when more than one does (a '"' in OEM followed by ` oemversion="`, say),
// or the tag is longer than 8 KiB, it is refused. A body that is
// well-formed is read as XML says, even if a '"' made it so (an alias
// `a" b="c` reads "a"): that keeps attributes a newer client may add from
// being taken into their neighbour's value.
//
// # Answers
//
// A Response is written with the elements and attributes both clients
// require (§5, §7), one element per line; the same Response always gives
// the same bytes. An updatecheck is answered noupdate or ok; an ok lists
// the OS payload and then the extensions, each from a Package holding the
// raw digests, so the encodings are chosen in one place.
//
// # Interop rules enforced (§11)
//
//  1. The OS payload is the first <package>: update_engine reads only
//     package 0. Extensions follow it with required="false".
//  2. The postinstall action's sha256 is the base64 (standard, padded) of
//     the payload's SHA-256: update_engine compares strings, and a hex
//     value fails only after the whole download (code 10).
//  3. Every codebase is an absolute http(s) URL ending in '/', without
//     query or fragment: update_engine appends the name, ue-rs resolves
//     it, and both then fetch the same file.
//  4. Every extension has hash (base64 SHA-1) and hash_sha256 (hex
//     SHA-256), and every element and attribute ue-rs requires is written
//     (protocol; appid, status; updatecheck status, urls, manifest
//     version, packages, actions; package name, size, required; action
//     event, sha256), so flatcar-postinst finds the extensions in our
//     answer and does not fall back to the internet.
//  5. Sizes are positive (they must be the exact byte count; the caller
//     gives it) and package names are plain file names.
//  6. No error status in an updatecheck: an app is answered ok or noupdate
//     (an unknown app gets status="error-unknownApplication" on <app>,
//     which update_engine ignores, and a noupdate), never a status
//     update_engine reports as an invalid response (code 34).
//
// The appid is echoed as the machine sent it; ue-rs needs it to be a UUID
// (braces optional), which Flatcar's is.
package omaha
