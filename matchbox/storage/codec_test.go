package storage

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
)

// fillAll sets every exported field of the struct v points to a non-zero
// value, so a field added to Machine or Event without a tag in the codec
// fails the round trip below.
func fillAll(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		f, sf := rv.Field(i), rv.Type().Field(i)
		if !sf.IsExported() || sf.Tag.Get("json") == "-" {
			continue
		}
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(time.Date(2026, 11, 26, 8, 0, i, 123456789, time.UTC)))
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprintf("v%d-é\x00\"<%s>", i, sf.Name))
		case f.Kind() == reflect.Uint64:
			f.SetUint(1<<40 + uint64(i))
		case f.Kind() == reflect.Map && f.Type().Key().Kind() == reflect.String && f.Type().Elem().Kind() == reflect.String:
			f.Set(reflect.ValueOf(map[string]string{"rack": "r1", "": "empty key", "zone": ""}))
		default:
			t.Fatalf("fillAll: no value for field %s of type %s: teach the codec and this test", sf.Name, f.Type())
		}
	}
}

func TestMachineRecordRoundTrip(t *testing.T) {
	var m matchbox.Machine
	fillAll(t, &m)
	var got matchbox.Machine
	if err := decodeMachine(appendMachine(nil, &m), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got); diff != "" {
		t.Errorf("machine round trip (-want +got):\n%s", diff)
	}
	var empty matchbox.Machine
	if rec := appendMachine(nil, &matchbox.Machine{}); len(rec) != 1 {
		t.Errorf("empty machine record = %x, want only the format byte", rec)
	} else if err := decodeMachine(rec, &empty); err != nil || !reflect.ValueOf(empty).IsZero() {
		t.Errorf("empty machine decoded to %+v, %v", empty, err)
	}
}

func TestEventRecordRoundTrip(t *testing.T) {
	var e matchbox.Event
	fillAll(t, &e)
	var got matchbox.Event
	if err := decodeEvent(appendEvent(nil, &e, true), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("event round trip (-want +got):\n%s", diff)
	}
	got = matchbox.Event{}
	if err := decodeEvent(appendEvent(nil, &e, false), &got); err != nil || got.MAC != "" || got.File != e.File {
		t.Errorf("event without MAC decoded to %+v, %v", got, err)
	}
}

// Records written by schema 3 (JSON) are still read.
func TestRecordsReadJSON(t *testing.T) {
	var m matchbox.Machine
	fillAll(t, &m)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got matchbox.Machine
	if err := decodeMachine(data, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got); diff != "" {
		t.Errorf("JSON machine (-want +got):\n%s", diff)
	}
	var e matchbox.Event
	fillAll(t, &e)
	data, _ = json.Marshal(e)
	var gotE matchbox.Event
	if err := decodeEvent(data, &gotE); err != nil || !cmp.Equal(e, gotE) {
		t.Errorf("JSON event decoded to %+v, %v", gotE, err)
	}
}

func TestRecordsRejectDamage(t *testing.T) {
	var m matchbox.Machine
	fillAll(t, &m)
	rec := appendMachine(nil, &m)
	for n := 0; n < len(rec); n++ {
		var got matchbox.Machine
		err := decodeMachine(rec[:n], &got)
		if n == 0 && err == nil {
			t.Error("empty record accepted")
		}
		if n > 0 && err == nil && cmp.Equal(got, m) {
			t.Errorf("record cut to %d of %d bytes decoded as the whole machine", n, len(rec))
		}
	}
	for _, bad := range [][]byte{{0x7f}, {recordV1, 0xee}, {recordV1, 2 /* a string field in both */, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, {recordV1, mTagLabels, 0xff, 0x7f}} {
		var got matchbox.Machine
		if err := decodeMachine(bad, &got); err == nil {
			t.Errorf("decodeMachine(%x) accepted", bad)
		}
		var e matchbox.Event
		if err := decodeEvent(bad, &e); err == nil {
			t.Errorf("decodeEvent(%x) accepted", bad)
		}
	}
	if err := decodeMachine([]byte{recordV1, 0x60}, &matchbox.Machine{}); err == nil || !strings.Contains(err.Error(), "newer matchbox") {
		t.Errorf("unknown field error = %v, want one suggesting a newer matchbox", err)
	}
}

// Arbitrary bytes never panic the decoders, and whatever decodes encodes
// back to a record that decodes to the same value.
func FuzzDecodeRecord(f *testing.F) {
	var m matchbox.Machine
	m.MAC, m.Labels, m.EventSeq, m.LastSeen = "52:54:00:00:00:01", map[string]string{"a": "b"}, 7, time.Unix(5, 0).UTC()
	f.Add(appendMachine(nil, &m))
	f.Add(appendEvent(nil, &matchbox.Event{MAC: "x", Kind: "k", Time: time.Unix(1, 2).UTC()}, true))
	f.Add([]byte(`{"mac":"52:54:00:00:00:01"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m matchbox.Machine
		if err := decodeMachine(data, &m); err == nil && len(data) > 0 && data[0] == recordV1 {
			var again matchbox.Machine
			if err := decodeMachine(appendMachine(nil, &m), &again); err != nil || !cmp.Equal(m, again, cmp.Comparer(func(a, b map[string]string) bool { return fmt.Sprint(a) == fmt.Sprint(b) })) {
				t.Errorf("re-encoded machine %+v decoded to %+v, %v", m, again, err)
			}
		}
		var e matchbox.Event
		if err := decodeEvent(data, &e); err == nil && len(data) > 0 && data[0] == recordV1 {
			var again matchbox.Event
			if err := decodeEvent(appendEvent(nil, &e, true), &again); err != nil || !cmp.Equal(e, again) {
				t.Errorf("re-encoded event %+v decoded to %+v, %v", e, again, err)
			}
		}
	})
}
