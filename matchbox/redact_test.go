package matchbox_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/secrettest"
)

func TestRedactSecret(t *testing.T) {
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "err", "body "+secrettest.JSONText(secrettest.Secret))
	var loggedJSON bytes.Buffer
	slog.New(slog.NewJSONHandler(&loggedJSON, nil)).Info("x", "err", fmt.Sprintf("%q", secrettest.Secret))
	for name, text := range map[string]string{
		"raw":                "login " + secrettest.Secret + " refused",
		"JSON":               `{"Password":` + secrettest.JSONText(secrettest.Secret) + `}`,
		"JSON, ASCII":        `{"Password":"Qx7\"Lm\\Rv%41 Zp&Kw'\u00c9t\u20acYb\ud83d\ude00Hn<Jc>"}`,
		"JSON, ASCII upper":  `{"Password":"Qx7\"Lm\\Rv%41 Zp&Kw'\u00C9t\u20ACYb\uD83D\uDE00Hn<Jc>"}`,
		"Go-quoted":          fmt.Sprintf("password %q", secrettest.Secret),
		"Go-quoted ASCII":    fmt.Sprintf("password %+q", secrettest.Secret),
		"query":              "/login?user=a&password=" + url.QueryEscape(secrettest.Secret),
		"path":               "/accounts/" + url.PathEscape(secrettest.Secret) + "/x",
		"query, lower hex":   "?p=" + regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllStringFunc(url.QueryEscape(secrettest.Secret), strings.ToLower),
		"HTML":               "<p>Qx7&#34;Lm\\Rv%41 Zp&amp;Kw&#39;Ét€Yb😀Hn&lt;Jc&gt;</p>",
		"shell single":       `ipmitool -P 'Qx7"Lm\Rv%41 Zp&Kw'\''Ét€Yb😀Hn<Jc>'`,
		"shell double":       `-P "Qx7\"Lm\\Rv%41 Zp&Kw'Ét€Yb😀Hn<Jc>"`,
		"JSON in a log line": logged.String(),
		"%q in a JSON log":   loggedJSON.String(),
		"JSON in %q":         fmt.Sprintf("%q", secrettest.JSONText(secrettest.Secret)),
		"query of JSON":      url.QueryEscape(secrettest.JSONText(secrettest.Secret)),
		"twice, two ways":    secrettest.Secret + " and " + url.PathEscape(secrettest.Secret),
	} {
		got := matchbox.RedactSecret(text, secrettest.Secret)
		for _, f := range secrettest.Fragments {
			if strings.Contains(got, f) {
				t.Errorf("%s: %q left in %s (from %s)", name, f, got, text)
			}
		}
		if !strings.Contains(got, matchbox.Redacted) {
			t.Errorf("%s: nothing redacted: %s", name, got)
		}
	}
	if got := matchbox.RedactSecret("nothing to see", secrettest.Secret); got != "nothing to see" {
		t.Errorf("text without the secrettest.Secret changed: %q", got)
	}
	if got := matchbox.RedactSecret("abc", ""); got != "abc" {
		t.Errorf("empty secrettest.Secret: %q", got)
	}
}

func TestRedactErrorKeepsSentinels(t *testing.T) {
	err := fmt.Errorf("login %q: %w", secrettest.Secret, matchbox.ErrUnavailable)
	red := matchbox.RedactError(err, secrettest.Secret)
	if strings.Contains(red.Error(), "Qx7") || !errors.Is(red, matchbox.ErrUnavailable) {
		t.Errorf("RedactError = %v (is unavailable: %v)", red, errors.Is(red, matchbox.ErrUnavailable))
	}
	if errors.Unwrap(red) != nil {
		t.Error("the redacted error unwraps to the text with the secrettest.Secret")
	}
	plain := errors.New("no secrettest.Secret here")
	if matchbox.RedactError(plain, secrettest.Secret) != plain || matchbox.RedactError(nil, secrettest.Secret) != nil {
		t.Error("an error without the secrettest.Secret was replaced")
	}
}

func TestNormalizeBMCFingerprint(t *testing.T) {
	const want = "3f2a0000000000000000000000000000000000000000000000000000000000bc"
	for _, in := range []string{want, strings.ToUpper(want), "sha256:" + want, " " + want + " ",
		"SHA256 Fingerprint=3F:2A:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:BC",
		"sha256 Fingerprint=3f:2a:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:bc"} {
		if got, err := matchbox.NormalizeBMCFingerprint(in); err != nil || got != want {
			t.Errorf("NormalizeBMCFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	if got, err := matchbox.NormalizeBMCFingerprint(""); got != "" || err != nil {
		t.Errorf("empty: %q, %v", got, err)
	}
	for _, bad := range []string{"3f2a", want + "00", "zz" + want[2:], "sha1:" + want} {
		if _, err := matchbox.NormalizeBMCFingerprint(bad); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("NormalizeBMCFingerprint(%q): %v", bad, err)
		}
	}
}

func TestBMCDestinationChanges(t *testing.T) {
	base := matchbox.BMC{Address: "bmc1.example:443", Provider: "redfish,ipmitool", Username: "root", TLSFingerprint: strings.Repeat("ab", 32)}
	for _, tc := range []struct {
		name string
		next func(*matchbox.BMC)
		want string
	}{
		{"same", func(*matchbox.BMC) {}, ""},
		{"host case, provider order and spelling", func(b *matchbox.BMC) {
			b.Address, b.Provider, b.TLSFingerprint = "BMC1.example:443", " IPMItool , redfish", strings.Repeat("AB", 32)
		}, ""},
		{"password only", func(b *matchbox.BMC) { b.Password = "new" }, ""},
		{"host", func(b *matchbox.BMC) { b.Address = "bmc2.example:443" }, "address"},
		{"port", func(b *matchbox.BMC) { b.Address = "bmc1.example:8443" }, "address"},
		{"no port", func(b *matchbox.BMC) { b.Address = "bmc1.example" }, "address"},
		{"a provider more", func(b *matchbox.BMC) { b.Provider = "redfish,ipmitool,intelamt" }, "provider"},
		{"default providers", func(b *matchbox.BMC) { b.Provider = "" }, "provider"},
		{"user", func(b *matchbox.BMC) { b.Username = "admin" }, "username"},
		{"pin", func(b *matchbox.BMC) { b.TLSFingerprint = strings.Repeat("cd", 32) }, "tls_fingerprint"},
		{"no pin", func(b *matchbox.BMC) { b.TLSFingerprint = "" }, "tls_fingerprint"},
		{"skip verification", func(b *matchbox.BMC) { b.TLSFingerprint, b.TLSInsecure = "", true }, "tls_fingerprint,tls_insecure_skip_verify"},
		{"everything", func(b *matchbox.BMC) { *b = matchbox.BMC{Address: "x", TLSInsecure: true} }, "address,provider,username,tls_fingerprint,tls_insecure_skip_verify"},
	} {
		next := base
		tc.next(&next)
		if got := strings.Join(matchbox.BMCDestinationChanges(base, next), ","); got != tc.want {
			t.Errorf("%s: changes %q, want %q", tc.name, got, tc.want)
		}
	}
}
