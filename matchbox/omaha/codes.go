package omaha

import (
	"strconv"
	"strings"
)

// EventType is an <event eventtype>: what step of an update the event
// reports (OMAHA.md §4).
type EventType int

// The event types update_engine sends. DownloadComplete and
// InstallComplete are named for completeness; update_engine never sends
// them.
const (
	EventDownloadComplete       EventType = 1
	EventInstallComplete        EventType = 2
	EventUpdateComplete         EventType = 3 // postinstall succeeded; also carried by every update check
	EventUpdateDownloadStarted  EventType = 13
	EventUpdateDownloadFinished EventType = 14 // payload downloaded and verified
)

var eventTypeNames = map[EventType]string{
	EventDownloadComplete:       "download complete",
	EventInstallComplete:        "install complete",
	EventUpdateComplete:         "update complete",
	EventUpdateDownloadStarted:  "download started",
	EventUpdateDownloadFinished: "download finished",
}

// String names the type, with its number: "download started (13)".
func (t EventType) String() string { return named(eventTypeNames[t], int64(t)) }

// EventResult is an <event eventresult>.
type EventResult int

// The event results update_engine sends.
const (
	ResultError         EventResult = 0
	ResultSuccess       EventResult = 1
	ResultSuccessReboot EventResult = 2 // with EventUpdateComplete: the update check's event, see Event.UpdatedFrom
	ResultDeferred      EventResult = 9 // an offer ignored or deferred (codes 35, 36, 40)
)

var eventResultNames = map[EventResult]string{
	ResultError:         "error",
	ResultSuccess:       "success",
	ResultSuccessReboot: "success, reboot",
	ResultDeferred:      "deferred",
}

// String names the result, with its number: "error (0)".
func (r EventResult) String() string { return named(eventResultNames[r], int64(r)) }

// ErrorCode is an <event errorcode>: update_engine's action exit code with
// flag bits OR-ed into the top four bits. Code splits the two.
type ErrorCode uint32

// The error codes of update_engine's actions (ue/action_processor.h).
const (
	CodeSuccess                    ErrorCode = 0
	CodeError                      ErrorCode = 1 // generic; mapped per action before it is sent
	CodeOmahaRequestError          ErrorCode = 2
	CodeFilesystemCopierError      ErrorCode = 4
	CodePostinstallError           ErrorCode = 5 // flatcar-postinst failed (e.g. an extension could not be fetched)
	CodeInstallDeviceOpenError     ErrorCode = 7
	CodeDownloadTransferError      ErrorCode = 9
	CodePayloadHashMismatch        ErrorCode = 10 // action sha256 is not the base64 SHA-256 of the payload
	CodePayloadSizeMismatch        ErrorCode = 11 // package size is not the payload's byte count
	CodePayloadVerificationError   ErrorCode = 12
	CodeNewRootfsVerificationError ErrorCode = 15
	CodeNewKernelVerificationError ErrorCode = 16
	CodeSignedPayloadExpected      ErrorCode = 17
	CodePayloadSignatureError      ErrorCode = 18 // not signed with the key in the host's image
	CodePayloadBadMagic            ErrorCode = 21
	CodeManifestParseError         ErrorCode = 23
	CodeOperationExecutionError    ErrorCode = 28
	CodeOperationHashMismatch      ErrorCode = 29
	CodeOmahaResponseEmpty         ErrorCode = 30
	CodeOmahaResponseNotXML        ErrorCode = 31
	CodeOmahaResponseInvalid       ErrorCode = 34 // includes an updatecheck status other than ok and noupdate
	CodeUpdateIgnoredPerPolicy     ErrorCode = 35
	CodeUpdateDeferredPerPolicy    ErrorCode = 36
	CodeOperationHashMissing       ErrorCode = 38
	CodeDeferredForBackoff         ErrorCode = 40
	CodePCRPolicyVerificationError ErrorCode = 42
	CodePCRPolicyHTTPError         ErrorCode = 43
	CodeRollback                   ErrorCode = 44 // the machine booted back into the version it updated from
	// CodeHTTPBase plus the HTTP status (999 for a status below 0 or
	// from 1000) is a failed update-check transfer; see HTTPStatus.
	CodeHTTPBase ErrorCode = 2000
)

var errorCodeNames = map[ErrorCode]string{
	CodeSuccess:                    "success",
	CodeError:                      "error",
	CodeOmahaRequestError:          "omaha request error",
	CodeFilesystemCopierError:      "filesystem copier error",
	CodePostinstallError:           "postinstall error",
	CodeInstallDeviceOpenError:     "install device open error",
	CodeDownloadTransferError:      "download transfer error",
	CodePayloadHashMismatch:        "payload hash mismatch",
	CodePayloadSizeMismatch:        "payload size mismatch",
	CodePayloadVerificationError:   "payload verification error",
	CodeNewRootfsVerificationError: "new rootfs verification error",
	CodeNewKernelVerificationError: "new kernel verification error",
	CodeSignedPayloadExpected:      "signed payload expected",
	CodePayloadSignatureError:      "payload signature error",
	CodePayloadBadMagic:            "payload bad magic",
	CodeManifestParseError:         "manifest parse error",
	CodeOperationExecutionError:    "operation execution error",
	CodeOperationHashMismatch:      "operation hash mismatch",
	CodeOmahaResponseEmpty:         "omaha response empty",
	CodeOmahaResponseNotXML:        "omaha response not xml",
	CodeOmahaResponseInvalid:       "omaha response invalid",
	CodeUpdateIgnoredPerPolicy:     "update ignored per policy",
	CodeUpdateDeferredPerPolicy:    "update deferred per policy",
	CodeOperationHashMissing:       "operation hash missing",
	CodeDeferredForBackoff:         "deferred for backoff",
	CodePCRPolicyVerificationError: "pcr policy verification error",
	CodePCRPolicyHTTPError:         "pcr policy http error",
	CodeRollback:                   "rollback",
}

// ErrorFlags are the bits update_engine ORs into an error code to say in
// what setting the error happened.
type ErrorFlags uint32

// The flag bits. FlagSelfHosted is set on every machine whose SERVER is
// not Flatcar's public one, so it is set on every error a matchbox-served
// machine reports.
const (
	FlagSelfHosted ErrorFlags = 1 << 28
	FlagDevImage   ErrorFlags = 1 << 29
	FlagResumed    ErrorFlags = 1 << 30
	FlagDevMode    ErrorFlags = 1 << 31

	flagMask = FlagSelfHosted | FlagDevImage | FlagResumed | FlagDevMode
)

var flagNames = []struct {
	flag ErrorFlags
	name string
}{
	{FlagSelfHosted, "self-hosted"},
	{FlagDevImage, "dev-image"},
	{FlagResumed, "resumed"},
	{FlagDevMode, "dev-mode"},
}

// Split returns the code without its flag bits, and the flag bits.
func (c ErrorCode) Split() (ErrorCode, ErrorFlags) {
	return c &^ ErrorCode(flagMask), ErrorFlags(c) & flagMask
}

// HTTPStatus returns the HTTP status of a failed update-check transfer
// (codes 2000-2999 after the flags are removed); 999 stands for a status
// below 0 or from 1000.
func (c ErrorCode) HTTPStatus() (int, bool) {
	code, _ := c.Split()
	if code < CodeHTTPBase || code >= CodeHTTPBase+1000 {
		return 0, false
	}
	return int(code - CodeHTTPBase), true
}

// String names the code and its flags: "postinstall error (5) [self-hosted]",
// "http status 503 (2503)".
func (c ErrorCode) String() string {
	code, flags := c.Split()
	name := errorCodeNames[code]
	if status, ok := code.HTTPStatus(); ok {
		name = "http status " + strconv.Itoa(status)
	}
	s := named(name, int64(code))
	if flags != 0 {
		s += " [" + flags.String() + "]"
	}
	return s
}

// String lists the flags: "self-hosted,dev-image".
func (f ErrorFlags) String() string {
	var names []string
	for _, n := range flagNames {
		if f&n.flag != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// named writes a known value as "name (n)" and an unknown one as "n".
func named(name string, n int64) string {
	if name == "" {
		return strconv.FormatInt(n, 10)
	}
	return name + " (" + strconv.FormatInt(n, 10) + ")"
}
