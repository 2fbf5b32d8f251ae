package matchbox

import (
	"errors"
	"maps"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeMAC(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "52:54:00:a1:9c:ae", want: "52:54:00:a1:9c:ae"},
		{in: "52:54:00:A1:9C:AE", want: "52:54:00:a1:9c:ae"},
		{in: "52-54-00-a1-9c-ae", want: "52:54:00:a1:9c:ae"},
		{in: "52-54-00-A1-9C-AE", want: "52:54:00:a1:9c:ae"},
		{in: "5254.00a1.9cae", want: "52:54:00:a1:9c:ae"},
		{in: "5254.00A1.9CAE", want: "52:54:00:a1:9c:ae"},
		// EUI-64, all three forms.
		{in: "02:00:5e:10:00:00:00:01", want: "02:00:5e:10:00:00:00:01"},
		{in: "02-00-5E-10-00-00-00-01", want: "02:00:5e:10:00:00:00:01"},
		{in: "0200.5e10.0000.0001", want: "02:00:5e:10:00:00:00:01"},
		// 20-octet IP over InfiniBand link-layer address.
		{in: "00-00-00-00-FE-80-00-00-00-00-00-00-02-00-5E-10-00-00-00-01",
			want: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"},
		// Bare hex, accepted by net.ParseMAC since Go 1.26.
		{in: "525400A19CAE", want: "52:54:00:a1:9c:ae"},
		{in: "525400a19ca", wantErr: true},
		{in: "", wantErr: true},
		{in: "not-a-mac", wantErr: true},
		{in: "52:54:00:a1:9c", wantErr: true},
		{in: "52:54:00:a1:9c:ae:", wantErr: true},
		{in: "52:54-00:a1:9c:ae", wantErr: true},
		{in: "zz:54:00:a1:9c:ae", wantErr: true},
		{in: "5254.00a1.9cae.", wantErr: true},
		{in: " 52:54:00:a1:9c:ae", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeMAC(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("NormalizeMAC(%q) = %q, %v; want an error wrapping ErrInvalid", tt.in, got, err)
				}
				if !strings.Contains(err.Error(), "not a MAC") {
					t.Errorf("error %q does not say what is wrong", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeMAC(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("NormalizeMAC(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		name    string
		in      map[string][]string
		want    map[string]string
		wantErr bool
	}{
		{name: "nil", in: nil, want: map[string]string{}},
		{name: "ipxe chain request",
			in: map[string][]string{
				"uuid": {"8a2b3c4d-0000-1111-2222-333344445555"}, "mac": {"52-54-00-a1-9c-ae"},
				"domain": {""}, "hostname": {""}, "serial": {"SN1"}, "arch": {"x86_64"},
			},
			want: map[string]string{
				"uuid": "8a2b3c4d-0000-1111-2222-333344445555", "mac": "52:54:00:a1:9c:ae",
				"domain": "", "hostname": "", "serial": "SN1", "arch": "x86_64",
			}},
		{name: "colon mac", in: map[string][]string{"mac": {"52:54:00:a1:9c:ae"}}, want: map[string]string{"mac": "52:54:00:a1:9c:ae"}},
		{name: "upper case mac", in: map[string][]string{"mac": {"52:54:00:A1:9C:AE"}}, want: map[string]string{"mac": "52:54:00:a1:9c:ae"}},
		{name: "dot mac", in: map[string][]string{"mac": {"5254.00a1.9cae"}}, want: map[string]string{"mac": "52:54:00:a1:9c:ae"}},
		{name: "eui-64 mac", in: map[string][]string{"mac": {"02-00-5E-10-00-00-00-01"}}, want: map[string]string{"mac": "02:00:5e:10:00:00:00:01"}},
		// The key keeps its spelling (as poseidon/matchbox does); the value
		// is normalised whatever the key's case.
		{name: "key MAC", in: map[string][]string{"MAC": {"52-54-00-A1-9C-AE"}}, want: map[string]string{"MAC": "52:54:00:a1:9c:ae"}},
		{name: "key Mac", in: map[string][]string{"Mac": {"5254.00A1.9CAE"}}, want: map[string]string{"Mac": "52:54:00:a1:9c:ae"}},
		{name: "mac-like value under another key untouched", in: map[string][]string{"macaddr": {"52-54-00-A1-9C-AE"}},
			want: map[string]string{"macaddr": "52-54-00-A1-9C-AE"}},
		{name: "first value wins", in: map[string][]string{"os": {"flatcar", "fedora"}, "mac": {"52-54-00-a1-9c-ae", "garbage"}},
			want: map[string]string{"os": "flatcar", "mac": "52:54:00:a1:9c:ae"}},
		{name: "empty value list skipped", in: map[string][]string{"os": {}, "region": nil, "zone": {"a"}},
			want: map[string]string{"zone": "a"}},
		{name: "empty value kept", in: map[string][]string{"hostname": {""}}, want: map[string]string{"hostname": ""}},
		{name: "values are case-sensitive", in: map[string][]string{"os": {"Flatcar"}}, want: map[string]string{"os": "Flatcar"}},
		{name: "malformed mac", in: map[string][]string{"mac": {"not-a-mac"}, "os": {"flatcar"}}, wantErr: true},
		{name: "malformed MAC key", in: map[string][]string{"MAC": {"52:54:00"}}, wantErr: true},
		{name: "empty mac", in: map[string][]string{"mac": {""}}, wantErr: true},
		{name: "malformed first mac, valid second", in: map[string][]string{"mac": {"nope", "52:54:00:a1:9c:ae"}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLabels(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseLabels(%v) = %v, %v; want an error wrapping ErrInvalid", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLabels(%v): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseLabels(%v) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseLabelsFromQuery(t *testing.T) {
	q, err := url.ParseQuery("mac=52-54-00-A1-9C-AE&uuid=u1&os=flatcar&os=fedora&empty=")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLabels(q)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"mac": "52:54:00:a1:9c:ae", "uuid": "u1", "os": "flatcar", "empty": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{
		"",
		"mac=52-54-00-a1-9c-ae",
		"uuid=${uuid}&mac=52-54-00-A1-9C-AE&domain=&hostname=&serial=&arch=x86_64",
		"MAC=5254.00a1.9cae",
		"Mac=02:00:5e:10:00:00:00:01",
		"mac=not-a-mac",
		"mac=52%3A54%3A00%3Aa1%3A9c%3Aae&mac=zz",
		"os=a&os=b&os=",
		"a=1;b=2",
		"%zz=1",
		"=&&=x&k",
		"mAc=00-00-00-00-FE-80-00-00-00-00-00-00-02-00-5E-10-00-00-00-01",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		// ParseQuery returns what it could parse along with the first
		// error; labels are built from that partial result too.
		values, _ := url.ParseQuery(query)
		labels, err := ParseLabels(values)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseLabels(%q) error %v does not wrap ErrInvalid", query, err)
			}
			return
		}
		for k, vs := range values {
			v, ok := labels[k]
			if len(vs) == 0 {
				if ok {
					t.Errorf("key %q with no values became label %q", k, v)
				}
				continue
			}
			if !ok {
				t.Fatalf("key %q missing from labels %v", k, labels)
			}
			if !strings.EqualFold(k, "mac") {
				if v != vs[0] {
					t.Errorf("label %q = %q, want the first value %q", k, v, vs[0])
				}
				continue
			}
			norm, err := NormalizeMAC(v)
			if err != nil {
				t.Fatalf("label %q = %q is not a valid MAC: %v", k, v, err)
			}
			if norm != v {
				t.Errorf("label %q = %q is not normalised (%q)", k, v, norm)
			}
			if strings.ToLower(v) != v {
				t.Errorf("label %q = %q is not lower case", k, v)
			}
		}
		if len(labels) > len(values) {
			t.Errorf("labels %v has keys the query %v did not", labels, values)
		}
		// Parsing the labels again changes nothing.
		again := make(url.Values, len(labels))
		for k, v := range labels {
			again[k] = []string{v}
		}
		relabels, err := ParseLabels(again)
		if err != nil {
			t.Fatalf("re-parsing %v: %v", labels, err)
		}
		if diff := cmp.Diff(labels, relabels); diff != "" {
			t.Errorf("re-parsing is not idempotent (-first +second):\n%s", diff)
		}
	})
}

// NormalizeMAC's allocation-free path for canonical input agrees with
// net.ParseMAC on every input.
func FuzzNormalizeMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:a1:9c:ae", "52:54:00:A1:9C:AE", "52:54:00:a1:9c:a:", "52:54:00:a1:9c:ag", "5254.00a1.9cae", "52-54-00-a1-9c-ae"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeMAC(s)
		hw, perr := net.ParseMAC(s)
		if (err == nil) != (perr == nil) {
			t.Fatalf("NormalizeMAC(%q) error %v, net.ParseMAC error %v", s, err, perr)
		}
		if err == nil && got != hw.String() {
			t.Errorf("NormalizeMAC(%q) = %q, want %q", s, got, hw.String())
		}
	})
}

// ParseQueryLabels agrees with url.ParseQuery followed by ParseLabels.
func FuzzParseQueryLabels(f *testing.F) {
	for _, s := range []string{
		"", "mac=52-54-00-a1-9c-ae", "uuid=${uuid}&mac=52-54-00-A1-9C-AE&domain=&hostname=&serial=&arch=x86_64",
		"MAC=5254.00a1.9cae&mac=52:54:00:00:00:01", "mac=not-a-mac", "mac=52%3A54%3A00%3Aa1%3A9c%3Aae&mac=zz",
		"os=a&os=b&os=", "a=1;b=2", "%zz=1", "=&&=x&k", "a=%2", "a+b=c+d", "k=v&k", "mac=&mac=52:54:00:00:00:01",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ParseQueryLabels(raw)
		values, perr := url.ParseQuery(raw)
		var want map[string]string
		if perr == nil {
			want, perr = ParseLabels(values)
		}
		if (err == nil) != (perr == nil) {
			t.Fatalf("ParseQueryLabels(%q) = %v, %v; ParseQuery+ParseLabels = %v, %v", raw, got, err, want, perr)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !maps.Equal(got, want) {
			t.Errorf("ParseQueryLabels(%q) = %v, want %v", raw, got, want)
		}
	})
}
