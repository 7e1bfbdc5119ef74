package source

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		max     int64
		want    Entry
		wantErr string
	}{
		{name: "full", max: 1024,
			in:   `{"vip":"/dcos-101/app2:10000","backend":"10.0.0.12:8080","framework":"marathon","protocol":"tcp","weight":1,"check":"http:///healthz","scheduler":"wlc","persistence":0}`,
			want: Entry{VIP: "/dcos-101/app2:10000", Backend: "10.0.0.12:8080", Framework: "marathon", Protocol: "tcp", Weight: u32(1), Check: "http:///healthz", Scheduler: "wlc"}},
		{name: "surrounding space", max: 1024, in: " \n{\"vip\":\"/a:1\",\"backend\":\"10.0.0.1:1\"}\n", want: Entry{VIP: "/a:1", Backend: "10.0.0.1:1"}},
		{name: "exactly max bytes", max: 37, in: `{"vip":"/a:1","backend":"10.0.0.1:1"}`, want: Entry{VIP: "/a:1", Backend: "10.0.0.1:1"}},
		{name: "one byte over max", max: 36, in: `{"vip":"/a:1","backend":"10.0.0.1:1"}`, wantErr: "longer than 36 bytes"},
		{name: "unknown field", max: 1024, in: `{"vip":"/a:1","backend":"10.0.0.1:1","wieght":2}`, wantErr: `unknown field "wieght"`},
		{name: "wrong type", max: 1024, in: `{"vip":"/a:1","backend":"10.0.0.1:1","weight":"2"}`, wantErr: "weight: a JSON string cannot be a uint32"},
		{name: "negative weight", max: 1024, in: `{"vip":"/a:1","backend":"10.0.0.1:1","weight":-1}`, wantErr: "weight: a JSON number -1 cannot be a uint32"},
		{name: "trailing data", max: 1024, in: `{"vip":"/a:1","backend":"10.0.0.1:1"} {}`, wantErr: "data after the JSON value"},
		{name: "truncated", max: 1024, in: `{"vip":"/a:1",`, wantErr: "ends too early"},
		{name: "syntax error", max: 1024, in: `{"vip" "/a:1"}`, wantErr: "invalid JSON at byte"},
		{name: "empty", max: 1024, in: ``, wantErr: "empty; want a JSON object"},
		{name: "array", max: 1024, in: `[{"vip":"/a:1"}]`, wantErr: "want a JSON object"},
		{name: "null", max: 1024, in: `null`, wantErr: "want a JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(strings.NewReader(tc.in), tc.max)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if a, b := mustJSON(t, got), mustJSON(t, tc.want); a != b {
				t.Errorf("Decode = %s, want %s", a, b)
			}
		})
	}
}

func TestDecodeTooLargeIsTyped(t *testing.T) {
	_, err := Decode(strings.NewReader(strings.Repeat(" ", 100)), 10)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("error %v does not wrap ErrTooLarge", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeServicesFile(t *testing.T) {
	one := `{"vip":"/a:1","backend":"10.0.0.1:1"}`
	two := `{"vip":"/b:1","backend":"10.0.0.2:1","weight":2}`
	cases := []struct {
		name    string
		in      string
		vips    []string
		wantErr string
	}{
		{name: "one entry", in: one, vips: []string{"/a:1"}},
		{name: "array", in: "[" + one + "," + two + "]", vips: []string{"/a:1", "/b:1"}},
		{name: "empty array", in: "[]", vips: []string{}},
		{name: "backends object", in: `{"backends":[` + one + "," + two + "]}", vips: []string{"/a:1", "/b:1"}},
		{name: "empty backends", in: `{"backends":[]}`, vips: []string{}},
		{name: "empty file", in: " \n", wantErr: "empty file"},
		{name: "not JSON", in: "vip=/a:1", wantErr: "want a JSON object or array"},
		{name: "backends with another field", in: `{"backends":[],"version":1}`, wantErr: `unknown field "version" beside "backends"`},
		{name: "backends not an array", in: `{"backends":{}}`, wantErr: `"backends": want an array`},
		{name: "backends null", in: `{"backends":null}`, wantErr: `"backends": want an array`},
		{name: "bad entry in array", in: "[" + one + `,{"vip":"/b:1","port":1}]`, wantErr: `entry 1: unknown field "port"`},
		{name: "entry not an object", in: `[` + one + `,"x"]`, wantErr: "entry 1: want a JSON object"},
		{name: "bad entry in backends", in: `{"backends":[{"vip":1}]}`, wantErr: `"backends": entry 0: vip: a JSON number cannot be a string`},
		{name: "unknown field in single entry", in: `{"vip":"/a:1","name":"x"}`, wantErr: `unknown field "name"`},
		{name: "trailing data", in: one + one, wantErr: "data after the JSON value"},
		{name: "truncated array", in: "[" + one, wantErr: "ends too early"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := DecodeServicesFile([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeServicesFile: %v", err)
			}
			vips := []string{}
			for _, e := range entries {
				vips = append(vips, e.VIP)
			}
			if strings.Join(vips, " ") != strings.Join(tc.vips, " ") || len(vips) != len(tc.vips) {
				t.Errorf("vips = %q, want %q", vips, tc.vips)
			}
		})
	}
}

// FuzzDecode: Decode never panics; whatever it accepts and Parse accepts
// goes through Entry and JSON back to the same Local.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"vip":"/dcos-101/app2:10000","backend":"10.0.0.12:8080","framework":"marathon","protocol":"tcp","weight":1,"check":"http:///healthz","scheduler":"wlc","persistence":0}`,
		`{"vip":"udp:///dns:53","backend":"[fd00::1]:53","check":"tcp","check_interval":"2s","check_timeout":"1s","check_rise":3,"check_fall":1}`,
		`{"vip":"11.1.1.1:80","backend":"10.0.0.1:80","weight":0}`,
		`{"vip":"/a:1","backend":"10.0.0.1:1","check":"http://x"}`,
		`{"vip":"/dcos-101/app2:10000","backend":"10.0.0.12:8080","public":true,"public_port":10000}`,
		`{"vip":"/a:1","backend":"10.0.0.1:1","public":true,"public_port":70000}`,
		`{}`, `null`, `[]`, `{"vip":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(strings.NewReader(string(data)), 4096)
		if err != nil {
			return
		}
		l, err := e.Parse()
		if err != nil {
			if err.Error() == "" {
				t.Fatal("Parse error with no message")
			}
			return
		}
		checkRoundTrip(t, l)
	})
}

func checkRoundTrip(t *testing.T, l Local) {
	t.Helper()
	data, err := json.Marshal(l.Entry())
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(strings.NewReader(string(data)), 1<<20)
	if err != nil {
		t.Fatalf("Decode of our own %s: %v", data, err)
	}
	back, err := e.Parse()
	if err != nil {
		t.Fatalf("Parse of our own %s: %v", data, err)
	}
	if back != l {
		t.Fatalf("round trip of %+v through %s gave %+v", l, data, back)
	}
	if back.Key() != l.Key() {
		t.Fatalf("key changed in round trip: %q, %q", l.Key(), back.Key())
	}
}

// FuzzDecodeServicesFile: the services-file decoder never panics, and every
// file it and parseServiceFile accept gives registrations with distinct keys
// that round-trip.
func FuzzDecodeServicesFile(f *testing.F) {
	for _, s := range []string{
		`{"vip":"/a:1","backend":"10.0.0.1:1"}`,
		`[{"vip":"/a:1","backend":"10.0.0.1:1"},{"vip":"/b:1","backend":"10.0.0.2:1","weight":2}]`,
		`{"backends":[{"vip":"udp:///dns:53","backend":"10.0.0.1:53","check":"tcp"}]}`,
		`{"backends":[]}`, `[]`, ``, `{"backends":null}`, `[{"vip":"/a:1","backend":"10.0.0.1:1"},{"vip":"/A:1","backend":"10.0.0.1:1"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := DecodeServicesFile(data); err != nil {
			return
		}
		locals, err := parseServiceFile(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, l := range locals {
			if seen[l.Key()] {
				t.Fatalf("two registrations with key %q accepted", l.Key())
			}
			seen[l.Key()] = true
			checkRoundTrip(t, l)
		}
	})
}

// FuzzParseCheck: ParseCheck never panics, and an accepted check's written
// form reads back the same.
func FuzzParseCheck(f *testing.F) {
	for _, s := range []string{"tcp", "http:///healthz", "http://healthz", "http://", "none", "", "http://a:b/c", "http:///a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, path, err := ParseCheck(s)
		if err != nil {
			return
		}
		c := Check{Kind: kind, Path: path}
		k2, p2, err := ParseCheck(c.String())
		if err != nil || k2 != kind || p2 != path {
			t.Fatalf("ParseCheck(%q) = %q %q, but its String %q reads as %q %q %v", s, kind, path, c.String(), k2, p2, err)
		}
	})
}
