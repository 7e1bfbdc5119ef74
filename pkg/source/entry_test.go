package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/vip"
)

func u32(v uint32) *uint32 { return &v }

func mustSpec(t *testing.T, s string) vip.Spec {
	t.Helper()
	spec, err := vip.ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestEntryParseDefaultsAndValues(t *testing.T) {
	defaultCheck := func(kind health.Kind, path string) Check {
		return Check{Kind: kind, Path: path, Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 2}
	}
	cases := []struct {
		name  string
		entry Entry
		want  Local
	}{
		{
			name:  "named VIP with defaults",
			entry: Entry{VIP: "/dcos-101/app2:10000", Backend: "10.0.0.12:8080"},
			want: Local{VIP: mustSpec(t, "/dcos-101/app2:10000"), Framework: "marathon",
				Backend: netip.MustParseAddrPort("10.0.0.12:8080"), Weight: 1, Scheduler: "wlc"},
		},
		{
			name: "everything given",
			entry: Entry{VIP: "/app:80", Backend: "[fd00::12]:8080", Framework: "Kubernetes", Protocol: "TCP",
				Weight: u32(7), Check: "http:///healthz?full=1", CheckInterval: "2s", CheckTimeout: "500ms",
				CheckRise: 3, CheckFall: 4, Scheduler: "MH", Persistence: 300},
			want: Local{VIP: mustSpec(t, "/app:80"), Framework: "Kubernetes",
				Backend: netip.MustParseAddrPort("[fd00::12]:8080"), Weight: 7,
				Check:     Check{Kind: health.HTTP, Path: "/healthz?full=1", Interval: 2 * time.Second, Timeout: 500 * time.Millisecond, Rise: 3, Fall: 4},
				Scheduler: "mh", Persistence: 300},
		},
		{
			name:  "public at the VIP's port",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Public: true},
			want:  Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc", Public: true},
		},
		{
			name:  "public at another port",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Public: true, PublicPort: 10000},
			want:  Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc", Public: true, PublicPort: 10000},
		},
		{
			name:  "weight 0 is kept",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Weight: u32(0)},
			want:  Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 0, Scheduler: "wlc"},
		},
		{
			name:  "protocol field makes a UDP VIP",
			entry: Entry{VIP: "/dns:53", Backend: "10.0.0.1:53", Protocol: "udp"},
			want:  Local{VIP: mustSpec(t, "udp:///dns:53"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:53"), Weight: 1, Scheduler: "wlc"},
		},
		{
			name:  "scheme makes a UDP VIP",
			entry: Entry{VIP: "udp:///dns:53", Backend: "10.0.0.1:53"},
			want:  Local{VIP: mustSpec(t, "udp:///dns:53"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:53"), Weight: 1, Scheduler: "wlc"},
		},
		{
			name:  "scheme and protocol agree",
			entry: Entry{VIP: "udp:///dns:53", Backend: "10.0.0.1:53", Protocol: "udp"},
			want:  Local{VIP: mustSpec(t, "udp:///dns:53"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:53"), Weight: 1, Scheduler: "wlc"},
		},
		{
			name:  "IP VIP has no framework",
			entry: Entry{VIP: "11.1.1.1:80", Backend: "10.0.0.1:80", Framework: "marathon"},
			want:  Local{VIP: mustSpec(t, "11.1.1.1:80"), Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc"},
		},
		{
			name:  "tcp check with defaults",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Check: "TCP"},
			want:  Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc", Check: defaultCheck(health.TCP, "")},
		},
		{
			name:  "short http check form",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Check: "http://healthz"},
			want:  Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc", Check: defaultCheck(health.HTTP, "/healthz")},
		},
		{
			name:  "check none",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Check: "none"},
			want:  Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc"},
		},
		{
			name:  "timeout may equal interval",
			entry: Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Check: "tcp", CheckInterval: "200ms", CheckTimeout: "200ms"},
			want: Local{VIP: mustSpec(t, "/app:80"), Framework: "marathon", Backend: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, Scheduler: "wlc",
				Check: Check{Kind: health.TCP, Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.entry.Parse()
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tc.want {
				t.Errorf("Parse =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

func TestEntryParseErrors(t *testing.T) {
	ok := Entry{VIP: "/app:80", Backend: "10.0.0.1:80"}
	with := func(f func(*Entry)) Entry { e := ok; f(&e); return e }
	cases := []struct {
		name  string
		entry Entry
		want  []string // every one must be in the error
	}{
		{"missing vip", with(func(e *Entry) { e.VIP = "" }), []string{"vip: missing"}},
		{"bad vip", with(func(e *Entry) { e.VIP = "/a..b:80" }), []string{`vip "/a..b:80"`}},
		{"vip without port", with(func(e *Entry) { e.VIP = "/app" }), []string{`vip "/app"`, "no port"}},
		{"missing backend", with(func(e *Entry) { e.Backend = "" }), []string{"backend: missing"}},
		{"backend without port", with(func(e *Entry) { e.Backend = "10.0.0.1" }), []string{`backend "10.0.0.1"`, "no port"}},
		{"backend not an address", with(func(e *Entry) { e.Backend = "app:80" }), []string{`backend "app:80"`}},
		{"backend port 0", with(func(e *Entry) { e.Backend = "10.0.0.1:0" }), []string{`backend "10.0.0.1:0"`}},
		{"unknown protocol", with(func(e *Entry) { e.Protocol = "sctp" }), []string{`protocol "sctp"`}},
		{"protocol against scheme", with(func(e *Entry) { e.VIP = "udp:///dns:53"; e.Protocol = "tcp" }), []string{`protocol "tcp": the vip "udp:///dns:53" says udp`}},
		{"protocol against explicit tcp scheme", with(func(e *Entry) { e.VIP = "tcp:///dns:53"; e.Protocol = "udp" }), []string{`protocol "udp"`}},
		{"framework with a dot", with(func(e *Entry) { e.Framework = "a.b" }), []string{`framework "a.b"`, `'.'`}},
		{"framework too long", with(func(e *Entry) { e.Framework = strings.Repeat("f", 64) }), []string{"framework", "at most 63"}},
		{"weight too big", with(func(e *Entry) { e.Weight = u32(65536) }), []string{"weight 65536: above 65535"}},
		{"unknown scheduler", with(func(e *Entry) { e.Scheduler = "fastest" }), []string{`scheduler "fastest"`, "wlc"}},
		{"unknown check", with(func(e *Entry) { e.Check = "icmp" }), []string{`check "icmp": unknown check`}},
		{"https check", with(func(e *Entry) { e.Check = "https:///x" }), []string{`check "https:///x"`}},
		{"check with a host", with(func(e *Entry) { e.Check = "http://10.0.0.1:8080/x" }), []string{`"10.0.0.1:8080" looks like a host and port`}},
		{"check path with a space", with(func(e *Entry) { e.Check = "http:///a b" }), []string{`path has ' '`}},
		{"check path with a fragment", with(func(e *Entry) { e.Check = "http:///a#b" }), []string{`path has '#'`}},
		{"check path too long", with(func(e *Entry) { e.Check = "http:///" + strings.Repeat("a", 1024) }), []string{"longer than 1024"}},
		{"interval without check", with(func(e *Entry) { e.CheckInterval = "1s" }), []string{"check_interval: given without a check"}},
		{"timeout without check", with(func(e *Entry) { e.CheckTimeout = "1s" }), []string{"check_timeout: given without a check"}},
		{"rise without check", with(func(e *Entry) { e.CheckRise = 2 }), []string{"check_rise: given without a check"}},
		{"fall without check", with(func(e *Entry) { e.CheckFall = 2 }), []string{"check_fall: given without a check"}},
		{"interval not a duration", with(func(e *Entry) { e.Check = "tcp"; e.CheckInterval = "1" }), []string{`check_interval "1": not a duration`}},
		{"interval too short", with(func(e *Entry) { e.Check = "tcp"; e.CheckInterval = "10ms" }), []string{`check_interval "10ms": want 100ms to 1h0m0s`}},
		{"interval too long", with(func(e *Entry) { e.Check = "tcp"; e.CheckInterval = "2h" }), []string{`check_interval "2h"`}},
		{"timeout not a duration", with(func(e *Entry) { e.Check = "tcp"; e.CheckTimeout = "soon" }), []string{`check_timeout "soon": not a duration`}},
		{"timeout too short", with(func(e *Entry) { e.Check = "tcp"; e.CheckTimeout = "1ms" }), []string{`check_timeout "1ms": below 10ms`}},
		{"timeout longer than interval", with(func(e *Entry) { e.Check = "tcp"; e.CheckTimeout = "2s" }), []string{"check_timeout 2s: longer than check_interval 1s"}},
		{"rise negative", with(func(e *Entry) { e.Check = "tcp"; e.CheckRise = -1 }), []string{"check_rise -1: want 1 to 100"}},
		{"fall too big", with(func(e *Entry) { e.Check = "tcp"; e.CheckFall = 101 }), []string{"check_fall 101: want 1 to 100"}},
		{"public port too big", with(func(e *Entry) { e.Public = true; e.PublicPort = 65536 }), []string{"public_port 65536: want 1 to 65535 (or 0 for the VIP's port)"}},
		{"public port negative", with(func(e *Entry) { e.Public = true; e.PublicPort = -1 }), []string{"public_port -1: want 1 to 65535 (or 0 for the VIP's port)"}},
		{"public port without public", with(func(e *Entry) { e.PublicPort = 10000 }), []string{`public_port 10000: given without "public": true`}},
		{"IP VIP of another family than its backend", with(func(e *Entry) { e.VIP = "[::1]:80" }), []string{`backend "10.0.0.1:80" is IPv4 but the vip "[::1]:80" is IPv6`, "loopback"}},
		{"IPv6 backend for an IPv4 VIP", with(func(e *Entry) { e.VIP = "11.1.1.1:80"; e.Backend = "[fd00::1]:80" }), []string{"is IPv6 but the vip", "is IPv4"}},
		{"loopback VIP", with(func(e *Entry) { e.VIP = "127.0.0.5:80" }), []string{"127.0.0.5 is a loopback address"}},
		{"link-local VIP", with(func(e *Entry) { e.VIP = "169.254.1.1:80" }), []string{"link-local"}},
		{"broadcast VIP", with(func(e *Entry) { e.VIP = "255.255.255.255:80" }), []string{"broadcast"}},
		{"broadcast backend", with(func(e *Entry) { e.Backend = "255.255.255.255:80" }), []string{`backend "255.255.255.255:80": the broadcast address`}},
		{"multicast backend", with(func(e *Entry) { e.Backend = "224.0.0.1:80" }), []string{`backend "224.0.0.1:80"`, "multicast"}},
		{"unspecified backend", with(func(e *Entry) { e.Backend = "0.0.0.0:80" }), []string{`backend "0.0.0.0:80"`, "unspecified"}},
		{"multicast VIP", with(func(e *Entry) { e.VIP = "239.1.1.1:80" }), []string{`vip "239.1.1.1:80"`, "multicast"}},
		{"every problem at once", Entry{Backend: "x", Weight: u32(1 << 20), Scheduler: "x"}, []string{"vip: missing", `backend "x"`, "weight", `scheduler "x"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.entry.Parse()
			if err == nil {
				t.Fatalf("Parse accepted %+v as %+v", tc.entry, l)
			}
			if l != (Local{}) {
				t.Errorf("Parse returned %+v with its error, want the zero Local", l)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEntryParseWrapsVIPErrorKinds(t *testing.T) {
	_, err := Entry{VIP: "/app", Backend: "10.0.0.1"}.Parse()
	if !errors.Is(err, vip.ErrNoPort) {
		t.Errorf("error %v does not wrap vip.ErrNoPort", err)
	}
}

func TestParseCheck(t *testing.T) {
	cases := []struct {
		in   string
		kind health.Kind
		path string
	}{
		{"", "", ""},
		{"none", "", ""},
		{"NONE", "", ""},
		{"tcp", health.TCP, ""},
		{"http", health.HTTP, "/"},
		{"http://", health.HTTP, "/"},
		{"http:///", health.HTTP, "/"},
		{"http:///healthz", health.HTTP, "/healthz"},
		{"http://healthz", health.HTTP, "/healthz"},
		{"HTTP:///Health/Z", health.HTTP, "/Health/Z"},
		{"http://localhost/x", health.HTTP, "/localhost/x"},
		{"http:///a/b?c=d&e", health.HTTP, "/a/b?c=d&e"},
		{"http:///a:b", health.HTTP, "/a:b"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			kind, path, err := ParseCheck(tc.in)
			if err != nil || kind != tc.kind || path != tc.path {
				t.Errorf("ParseCheck(%q) = %q, %q, %v; want %q, %q", tc.in, kind, path, err, tc.kind, tc.path)
			}
			// The written form reads back the same.
			c := Check{Kind: kind, Path: path}
			k2, p2, err := ParseCheck(c.String())
			if err != nil || k2 != kind || p2 != path {
				t.Errorf("ParseCheck(%q) (the String of %q) = %q, %q, %v", c.String(), tc.in, k2, p2, err)
			}
		})
	}
}

func TestKey(t *testing.T) {
	a, _ := Entry{VIP: "/Dcos-101/App2:10000", Backend: "10.0.0.12:8080"}.Parse()
	b, _ := Entry{VIP: "tcp:///dcos-101/app2:10000", Backend: "10.0.0.12:8080", Framework: "other", Weight: u32(5)}.Parse()
	u, _ := Entry{VIP: "udp:///dcos-101/app2:10000", Backend: "10.0.0.12:8080"}.Parse()
	if got, want := a.Key(), "/dcos-101/app2:10000 10.0.0.12:8080"; got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	if a.Key() != b.Key() {
		t.Errorf("keys differ for the same VIP and backend: %q, %q", a.Key(), b.Key())
	}
	if a.Key() == u.Key() {
		t.Errorf("TCP and UDP VIPs have the same key %q", a.Key())
	}
	if got := KeyOf(a.VIP, a.Backend); got != a.Key() {
		t.Errorf("KeyOf = %q, Key = %q", got, a.Key())
	}
}

func TestRegistrationAndHealthTarget(t *testing.T) {
	l, err := Entry{VIP: "/app:80", Backend: "10.0.0.1:8080", Weight: u32(3), Check: "http:///hz",
		CheckInterval: "3s", CheckTimeout: "2s", CheckRise: 4, CheckFall: 5, Scheduler: "rr", Persistence: 60}.Parse()
	if err != nil {
		t.Fatal(err)
	}
	r := l.Registration(vip.Draining)
	want := vip.Registration{VIP: l.VIP, Framework: "marathon", Backend: l.Backend, Weight: 3, Health: vip.Draining, Scheduler: "rr", Persistence: 60}
	if r != want {
		t.Errorf("Registration = %+v, want %+v", r, want)
	}
	target, ok := l.HealthTarget()
	wantTarget := health.Target{Key: l.Key(), Addr: l.Backend, Kind: health.HTTP, Path: "/hz", Interval: 3 * time.Second, Timeout: 2 * time.Second, Rise: 4, Fall: 5}
	if !ok || target != wantTarget {
		t.Errorf("HealthTarget = %+v, %v; want %+v", target, ok, wantTarget)
	}
	l.Check = Check{}
	if _, ok := l.HealthTarget(); ok {
		t.Error("HealthTarget of a backend without a check says there is one")
	}
}

// randomLocal returns a valid Local built from r.
func randomLocal(r *rand.Rand) Local {
	var e Entry
	names := []string{"/app:80", "/dcos-101/app2:10000", "udp:///dns:53", "11.1.1.1:80", "[fd01:c::1]:443", "/A_b-c/d:1"}
	e.VIP = names[r.IntN(len(names))]
	// An IP VIP's backends are of its family; a named VIP's of either.
	if v4 := e.VIP == "11.1.1.1:80"; v4 || (e.VIP != "[fd01:c::1]:443" && r.IntN(2) == 0) {
		e.Backend = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))}), uint16(1+r.IntN(65535))).String()
	} else {
		e.Backend = fmt.Sprintf("[fd00::%x]:%d", r.IntN(65536), 1+r.IntN(65535))
	}
	if r.IntN(2) == 0 {
		e.Framework = []string{"marathon", "k8s", "Nomad_1"}[r.IntN(3)]
	}
	if r.IntN(2) == 0 {
		e.Weight = u32(uint32(r.IntN(MaxWeight + 1)))
	}
	switch r.IntN(3) {
	case 1:
		e.Check = "tcp"
	case 2:
		e.Check = []string{"http:///", "http:///healthz", "http://ready?x=1", "http:///a/b:c"}[r.IntN(4)]
	}
	if e.Check != "" {
		interval := time.Duration(100+r.IntN(10000)) * time.Millisecond
		if r.IntN(2) == 0 {
			e.CheckInterval = interval.String()
			e.CheckTimeout = (time.Duration(10+r.Int64N(int64(interval/time.Millisecond)-9)) * time.Millisecond).String()
		}
		e.CheckRise, e.CheckFall = r.IntN(MaxCheckThreshold+1), r.IntN(MaxCheckThreshold+1)
	}
	if r.IntN(2) == 0 {
		e.Scheduler = Schedulers[r.IntN(len(Schedulers))]
	}
	e.Persistence = uint32(r.IntN(3)) * 300
	l, err := e.Parse()
	if err != nil {
		panic(fmt.Sprintf("randomLocal built an invalid entry %+v: %v", e, err))
	}
	return l
}

// TestEntryRoundTrip: for every valid Local, its Entry, through JSON, parses
// back to the same Local.
func TestEntryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		l := randomLocal(r)
		data, err := json.Marshal(l.Entry())
		if err != nil {
			t.Fatal(err)
		}
		e, err := Decode(strings.NewReader(string(data)), 1<<10)
		if err != nil {
			t.Fatalf("Decode(%s): %v", data, err)
		}
		back, err := e.Parse()
		if err != nil {
			t.Fatalf("Parse(%s): %v", data, err)
		}
		if back != l {
			t.Fatalf("round trip of %+v through %s gave %+v", l, data, back)
		}
	}
}

func TestMerge(t *testing.T) {
	mk := func(v, b string, w uint32) Local {
		l, err := Entry{VIP: v, Backend: b, Weight: u32(w)}.Parse()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	api := []Local{mk("/b:80", "10.0.0.1:80", 1), mk("/a:80", "10.0.0.1:80", 1)}
	dir := []Local{mk("/a:80", "10.0.0.1:80", 9), mk("/c:80", "10.0.0.1:80", 9)}
	merged, shadowed := Merge(api, dir)
	var keys []string
	for _, l := range merged {
		keys = append(keys, fmt.Sprintf("%s w%d", l.Key(), l.Weight))
	}
	want := []string{"/a:80 10.0.0.1:80 w1", "/b:80 10.0.0.1:80 w1", "/c:80 10.0.0.1:80 w9"}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("merged = %v, want %v", keys, want)
	}
	if len(shadowed) != 1 || shadowed[0] != dir[0] {
		t.Errorf("shadowed = %+v, want the directory's /a:80", shadowed)
	}
}

func TestEntryOfHandBuiltLocalTakesCheckDefaults(t *testing.T) {
	l := mustLocal(t, Entry{VIP: "/app:80", Backend: "10.0.0.1:80"})
	l.Check = Check{Kind: health.TCP}
	got, err := l.Entry().Parse()
	if err != nil {
		t.Fatalf("Parse of the Entry of a Local with a bare check: %v", err)
	}
	want := Check{Kind: health.TCP, Interval: health.DefaultInterval, Timeout: health.DefaultTimeout, Rise: health.DefaultRise, Fall: health.DefaultFall}
	if got.Check != want {
		t.Errorf("check = %+v, want the defaults %+v", got.Check, want)
	}
}

func BenchmarkDecodeAndParse(b *testing.B) {
	data := `{"vip":"/dcos-101/app2:10000","backend":"10.0.0.12:8080","framework":"marathon","protocol":"tcp","weight":1,"check":"http:///healthz","scheduler":"wlc","persistence":0}`
	for b.Loop() {
		e, err := Decode(strings.NewReader(data), 4096)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Parse(); err != nil {
			b.Fatal(err)
		}
	}
}
