package matchbox

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The characters that change how a name displays or where a row ends, each
// refused by CheckName and by single-line CheckValue.
var refusedInNames = map[string]string{
	"newline":                      "a\nb",
	"carriage return":              "default\rnode1",
	"tab":                          "a\tb",
	"NUL":                          "a\x00b",
	"ESC, clear screen":            "\x1b[2J",
	"DEL":                          "a\x7fb",
	"C1 NEL":                       "a\u0085b",
	"C1 CSI":                       "a\u009b2J",
	"right-to-left override":       "\u202etluafed",
	"left-to-right embedding":      "\u202adefault",
	"pop directional formatting":   "default\u202c",
	"first strong isolate":         "de\u2068fault",
	"pop directional isolate":      "default\u2069",
	"right-to-left mark":           "default\u200f",
	"left-to-right mark":           "\u200edefault",
	"zero-width space":             "de\u200bfault",
	"zero-width joiner":            "de\u200dfault",
	"byte order mark":              "\ufeffdefault",
	"soft hyphen":                  "de\u00adfault",
	"no-break space":               "default\u00a0",
	"ideographic space":            "default\u3000",
	"line separator":               "a\u2028b",
	"hangul filler (invisible)":    "default\u3164",
	"combining grapheme joiner":    "default\u034f",
	"tag character":                "default\U000e0041",
	"private use":                  "a\ue000b",
	"invalid UTF-8":                "a\xffb",
	"truncated UTF-8":              "default\xe2\x80",
	"overlong encoding of a slash": "a\xc0\xafb",
	"replacement character":        "a\ufffdb",
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{
		"default", "install-reboot", "node1.example.com", "rack 1", "ignition/worker.ign", "sub/dir/x.yaml",
		"café", "Ωmega", "日本語", "🚀", "❤️", "a\"b", `a\b`, "k=v,x", "x_y-z~",
	} {
		if err := CheckName("group id", ok); err != nil {
			t.Errorf("CheckName(%q): %v", ok, err)
		}
	}
	if err := CheckName("group id", ""); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "group id is empty") {
		t.Errorf("CheckName of an empty id: %v", err)
	}
	for name, s := range refusedInNames {
		t.Run(name, func(t *testing.T) {
			err := CheckName("group id", s)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("CheckName(%q) = %v, want an error wrapping ErrInvalid", s, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "group id "+Quote(s)) {
				t.Errorf("error %q does not name the field and quote the value (%s)", msg, Quote(s))
			}
			if strings.ContainsAny(msg, "\n\r\x1b\u202e") || !utf8.ValidString(msg) {
				t.Errorf("error %q carries the character itself", msg)
			}
			if err := CheckValue("selector", s, false); !errors.Is(err, ErrInvalid) {
				t.Errorf("CheckValue(%q, single line) = %v, want ErrInvalid", s, err)
			}
		})
	}
}

func TestCheckNameSaysWhatIsWrong(t *testing.T) {
	for s, want := range map[string]string{
		"a\nb":          "control character, U+000A, at byte 1",
		"\u202etluafed": "format character (changes how text displays), U+202E, at byte 0",
		"a\xffb":        "is not valid UTF-8 (byte 1)",
		"a\u3164":       "invisible character, U+3164",
		"a\u00a0":       "space other than U+0020",
		"a\ufffd":       "replacement character",
	} {
		if err := CheckName("token name", s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckName(%q) = %v, want it to say %q", s, err, want)
		}
	}
}

func TestCheckValue(t *testing.T) {
	// Metadata is free text: certificates, scripts, CRLF files, text with
	// no-break or ideographic spaces, text decoded from Latin-1 files
	// (U+FFFD) all stay valid, as they load in poseidon/matchbox.
	for _, ok := range []string{
		"", "worker", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "#!/bin/sh\r\n\techo hi\r\n",
		"prix\u00a0: 5 €", "東京\u3000都", "M\ufffdller",
	} {
		if err := CheckValue("metadata.x", ok, true); err != nil {
			t.Errorf("CheckValue(%q, multiline): %v", ok, err)
		}
	}
	for _, bad := range []string{"a\x1b[2Jb", "\u202eevil", "a\x00", "a\x7f", "a\u0085", "a\u200b", "a\xff", "a\u2028b", "\ufeffx", "a\u3164"} {
		if err := CheckValue("metadata.x", bad, true); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "metadata.x "+Quote(bad)) {
			t.Errorf("CheckValue(%q, multiline) = %v, want ErrInvalid naming metadata.x", bad, err)
		}
	}
	// Single-line values (labels, selectors) may be empty; they may not
	// break lines.
	for _, ok := range []string{"", "installed", "8a2b3c4d-0000-1111-2222-333344445555", "To Be Filled By O.E.M."} {
		if err := CheckValue("label", ok, false); err != nil {
			t.Errorf("CheckValue(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a\nb", "a\r", "a\tb", "a\u00a0"} {
		if err := CheckValue("label", bad, false); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckValue(%q, single line) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestCheckLabel(t *testing.T) {
	if err := CheckLabel("label", "os", ""); err != nil {
		t.Errorf("empty value: %v", err)
	}
	if err := CheckLabel("label", "", "x"); err != nil {
		t.Errorf("empty key (poseidon/matchbox takes ?=x): %v", err)
	}
	if err := CheckLabel("selector", "x\r\nROLE", "v"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `selector key "x\r\nROLE"`) {
		t.Errorf("key with a line break: %v", err)
	}
	if err := CheckLabel("label", "hostname", "evil\nROLE=master"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `label "hostname" "evil\nROLE=master"`) {
		t.Errorf("value with a line break: %v", err)
	}
}

// Boot requests: a label a name check refuses is a 400 (ErrInvalid), in
// both parsers alike.
func TestParseQueryLabelsRefusesUnprintable(t *testing.T) {
	for _, raw := range []string{
		"mac=52:54:00:a1:9c:ae&os=installed%0Aforged",
		"mac=52:54:00:a1:9c:ae&os=%1B%5B2J",
		"mac=52:54:00:a1:9c:ae&os=%E2%80%AEdellatsni",
		"mac=52:54:00:a1:9c:ae&serial=%FF%FE",
		"mac=52:54:00:a1:9c:ae&ro%0Ale=x",
		"mac=52:54:00:a1:9c:ae%0A",
	} {
		if labels, err := ParseQueryLabels(raw); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseQueryLabels(%q) = %v, %v; want ErrInvalid", raw, labels, err)
		}
	}
	if _, err := ParseQueryLabels("mac=52-54-00-A1-9C-AE&uuid=8a2b3c4d-0000-1111-2222-333344445555&domain=&hostname=&serial=To+Be+Filled&arch=x86_64"); err != nil {
		t.Errorf("an iPXE chain request: %v", err)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"default":              "default",
		"rack 1":               "rack 1",
		"café":                 "café",
		"ignition/worker.ign":  "ignition/worker.ign",
		"":                     `""`,
		"a\nb":                 `"a\nb"`,
		"\x1b[2J":              `"\x1b[2J"`,
		"\u202etluafed":        `"\u202etluafed"`,
		"a\xffb":               `"a\xffb"`,
		"default\u3164":        `"default\u3164"`,
		"default\U000e0041":    `"default\U000e0041"`,
		`a"b`:                  `"a\"b"`,
		`a\nb`:                 `"a\\nb"`,
		"d\u00e9j\u00e0\tvu\n": `"déjà\tvu\n"`,
		"a\ufffd":              `"a\ufffd"`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestEscapeLine(t *testing.T) {
	for in, want := range map[string]string{
		`group "a": invalid`: `group "a": invalid`,
		"log\nROLE=master":   `log\nROLE=master`,
		"\x1b[31mred":        `\x1b[31mred`,
		"\u202eevil":         `\u202eevil`,
		"bad \xff byte":      `bad \xff byte`,
	} {
		if got := EscapeLine(in); got != want {
			t.Errorf("EscapeLine(%q) = %s, want %s", in, got, want)
		}
	}
}

// Printable's output is one printable line that reads back (strconv.Unquote)
// as the input, and is the input itself when it was plain.
func FuzzPrintable(f *testing.F) {
	for _, s := range refusedInNames {
		f.Add(s)
	}
	for _, s := range []string{"", "default", `"quoted"`, `back\slash`, "mixé\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if e := EscapeLine(s); e != "" && CheckName("x", e) != nil {
			t.Fatalf("EscapeLine(%q) = %q is not one printable line", s, e)
		}
		got := Printable(s)
		if err := CheckName("output", got); err != nil {
			t.Fatalf("Printable(%q) = %s: %v", s, got, err)
		}
		if got == s {
			if strings.HasPrefix(s, `"`) || strings.Contains(s, `\`) {
				t.Fatalf("Printable(%q) left a quote or backslash plain", s)
			}
			return
		}
		back, err := strconv.Unquote(got)
		if err != nil || back != s {
			t.Fatalf("Printable(%q) = %s, which unquotes to %q, %v", s, got, back, err)
		}
	})
}
