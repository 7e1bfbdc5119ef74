package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseStatTicks(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       uint64
		err        bool
	}{
		{"plain", "1234 (l4lb) S 1 1234 1234 0 -1 4194560 2553 0 0 0 150 37 0 0 20 0 9 0 12345 1000 200 18446744073709551615", 187, false},
		{"name with spaces and parentheses", "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1", 11, false},
		{"no parenthesis", "1234 l4lb S 1", 0, true},
		{"too short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s 0 0", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tc.line))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("ticks = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tl4lb\nVmPeak:\t 1000 kB\nVmHWM:\t   30000 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n"
	m, err := parseStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.rss != 20480<<10 || m.hwm != 30000<<10 {
		t.Fatalf("got %+v", m)
	}
	if _, err := parseStatus(strings.NewReader("Name:\tx\n")); err == nil {
		t.Fatal("no VmRSS: want an error")
	}
	if _, err := parseStatus(strings.NewReader("VmRSS:\t12 MB\nVmHWM:\t1 kB\n")); err == nil {
		t.Fatal("unit MB: want an error")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP l4lb_vips VIPs in the desired table.
# TYPE l4lb_vips gauge
l4lb_vips{state="desired"} 10000
l4lb_vips{state="programmed"} 9999
l4lb_gossip_wire_bytes_total{direction="sent"} 1.234567e+06
go_goroutines 42
odd{label="a } b"} 7 1700000000000

`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`l4lb_vips{state="desired"}`: 10000,
		programmedVIPs:               9999,
		wireBytesSent:                1234567,
		"go_goroutines":              42,
		`odd{label="a } b"}`:         7,
	}
	if len(m) != len(want) {
		t.Fatalf("got %d series %v, want %d", len(m), m, len(want))
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	for _, bad := range []string{"novalue\n", "x{a=\"b\"} notanumber\n", "x 1 2 3\n"} {
		if _, err := parseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct{ total, n, wantLen int }{
		{10000, 100, 101}, // 0, 100, ..., 9900 and the last
		{10, 100, 10},     // all of them
		{5, 1, 2},         // the first and the last
		{1, 5, 1},
	} {
		t.Run(fmt.Sprint(tc.total, "/", tc.n), func(t *testing.T) {
			got := spread(tc.total, tc.n)
			if len(got) != tc.wantLen {
				t.Fatalf("len = %d (%v), want %d", len(got), got, tc.wantLen)
			}
			if got[len(got)-1] != tc.total-1 {
				t.Fatalf("last = %d, want %d", got[len(got)-1], tc.total-1)
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] || got[i] >= tc.total {
					t.Fatalf("not increasing within range: %v", got)
				}
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := percentile(d, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := percentile(d[:1], 99); got != time.Millisecond {
		t.Errorf("p99 of one = %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
}

func TestNames(t *testing.T) {
	if got, want := dnsName("/scale-b/v12:80"), "v12.scale-b.marathon.l4lb.thisdcos.directory."; got != want {
		t.Errorf("dnsName = %q, want %q", got, want)
	}
	seen := map[string]bool{}
	for k := 0; k < 70000; k++ {
		a := backendAddr(k)
		if seen[a] {
			t.Fatalf("backendAddr(%d) = %s twice", k, a)
		}
		seen[a] = true
	}
	if got := backendAddr(0); got != "10.0.0.1:8080" {
		t.Errorf("backendAddr(0) = %s", got)
	}
	if got := thousands(1234567); got != "1,234,567" {
		t.Errorf("thousands = %s", got)
	}
	if got := thousands(-1000); got != "-1,000" {
		t.Errorf("thousands = %s", got)
	}
}
