package omaha

import "testing"

func TestErrorCode(t *testing.T) {
	cases := []struct {
		code   ErrorCode
		base   ErrorCode
		flags  ErrorFlags
		status int
		str    string
	}{
		{268435461, CodePostinstallError, FlagSelfHosted, 0, "postinstall error (5) [self-hosted]"},
		{268435490, CodeOmahaResponseInvalid, FlagSelfHosted, 0, "omaha response invalid (34) [self-hosted]"},
		{CodeRollback, CodeRollback, 0, 0, "rollback (44)"},
		{CodeHTTPBase + 503 | ErrorCode(FlagSelfHosted|FlagDevMode), CodeHTTPBase + 503, FlagSelfHosted | FlagDevMode, 503, "http status 503 (2503) [self-hosted,dev-mode]"},
		{ErrorCode(uint32(1<<31 | 1<<30 | 1<<29 | 10)), CodePayloadHashMismatch, FlagDevImage | FlagResumed | FlagDevMode, 0, "payload hash mismatch (10) [dev-image,resumed,dev-mode]"},
		{3, 3, 0, 0, "3"},
	}
	for _, tc := range cases {
		base, flags := tc.code.Split()
		status, isHTTP := tc.code.HTTPStatus()
		if base != tc.base || flags != tc.flags || status != tc.status || isHTTP != (tc.status != 0) {
			t.Errorf("%d: Split = %d, %#x; HTTPStatus = %d, %v", uint32(tc.code), base, flags, status, isHTTP)
		}
		if s := tc.code.String(); s != tc.str {
			t.Errorf("%d: String() = %q, want %q", uint32(tc.code), s, tc.str)
		}
	}
}

func TestEventNames(t *testing.T) {
	for got, want := range map[string]string{
		EventUpdateDownloadStarted.String(): "download started (13)",
		EventType(800).String():             "800",
		ResultSuccessReboot.String():        "success, reboot (2)",
		ResultDeferred.String():             "deferred (9)",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
