package config

import (
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newFS() (*flag.FlagSet, *string, *string, *int, *bool) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	join := fs.String("join", "", "")
	name := fs.String("node-name", "host", "")
	port := fs.Int("gossip-port", 7946, "")
	fwd := fs.Bool("dns-forward", true, "")
	fs.String("config", "", "")
	return fs, join, name, port, fwd
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "l4lb.json")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyFileSetsUnsetFlags(t *testing.T) {
	fs, join, name, port, fwd := newFS()
	if err := fs.Parse([]string{"--node-name", "cli"}); err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, `{"join": ["10.0.0.1", "10.0.0.2:7946"], "node-name": "file", "gossip-port": 8000, "dns-forward": false}`)
	if err := ApplyFile(fs, p); err != nil {
		t.Fatal(err)
	}
	if *join != "10.0.0.1,10.0.0.2:7946" || *name != "cli" || *port != 8000 || *fwd {
		t.Errorf("join=%q node-name=%q (command line must win) gossip-port=%d dns-forward=%v", *join, *name, *port, *fwd)
	}
}

func TestApplyFileErrors(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":  {`{"nope": 1}`, `unknown setting "nope"`},
		"not object":   {`[1,2]`, "not a JSON object"},
		"bad value":    {`{"gossip-port": "x"}`, `"gossip-port"`},
		"bad list":     {`{"join": [1]}`, "list item 0 is not a string"},
		"nested value": {`{"join": {"a": 1}}`, "must be a string"},
	} {
		t.Run(name, func(t *testing.T) {
			fs, _, _, _, _ := newFS()
			_ = fs.Parse(nil)
			err := ApplyFile(fs, writeFile(t, tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	fs, _, _, _, _ := newFS()
	if err := ApplyFile(fs, "/nonexistent/l4lb.json"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" a, b,,c ,")
	if strings.Join(got, "|") != "a|b|c" {
		t.Errorf("SplitList = %q", got)
	}
	if SplitList("") != nil {
		t.Error("SplitList(\"\") not empty")
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		v6   bool
		want string // "" = ok
	}{
		{"11.0.0.0/8", false, ""},
		{"fd01:c::/64", true, ""},
		{"11.0.0.1/8", false, "host bits set; did you mean 11.0.0.0/8"},
		{"fd01:c::/64", false, "want an IPv4 range"},
		{"11.0.0.0/8", true, "want an IPv6 range"},
		{"eleven", false, `--vip-cidr "eleven"`},
	} {
		_, err := ParsePrefix("vip-cidr", tc.in, tc.v6)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ParsePrefix(%q, v6=%v) = %v, want %q", tc.in, tc.v6, err, tc.want)
		}
	}
}

func TestParseAddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the addresses joined by "|", or an error's text
	}{
		{"192.0.2.10", "192.0.2.10"},
		{" 192.0.2.10, 2001:db8::10 ", "192.0.2.10|2001:db8::10"},
		{"::ffff:192.0.2.10", "192.0.2.10"},
		{"", ""},
		{"node1", `--public-address "node1": not an IP address`},
		{"192.0.2.10:80", `--public-address "192.0.2.10:80": not an IP address`},
		{"[2001:db8::10]", `not an IP address`},
		{"fe80::1%eth0", "with a zone"},
		{"0.0.0.0", "cannot be reached from other hosts"},
		{"127.0.0.1", "cannot be reached from other hosts"},
		{"fe80::1", "cannot be reached from other hosts"},
		{"224.0.0.1", "cannot be reached from other hosts"},
		{"192.0.2.10,192.0.2.10", "given twice"},
	} {
		got, err := ParseAddrs("public-address", tc.in)
		s := ""
		if err != nil {
			s = err.Error()
		} else {
			parts := make([]string, len(got))
			for i, a := range got {
				parts[i] = a.String()
			}
			s = strings.Join(parts, "|")
		}
		if (err == nil && s != tc.want) || (err != nil && !strings.Contains(s, tc.want)) || (err != nil && tc.want == "") {
			t.Errorf("ParseAddrs(%q) = %q, want %q", tc.in, s, tc.want)
		}
	}
}

// FuzzParseAddrs: never panics; what it accepts parses back from its
// String form, is reachable from other hosts and holds no duplicate.
func FuzzParseAddrs(f *testing.F) {
	for _, s := range []string{"192.0.2.10", "192.0.2.10,2001:db8::10", "::ffff:1.2.3.4", "x", "127.0.0.1", "fe80::1%eth0", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseAddrs("public-address", s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--public-address ") {
				t.Fatalf("error does not name the flag: %v", err)
			}
			return
		}
		seen := map[netip.Addr]bool{}
		for _, a := range got {
			if b, err := netip.ParseAddr(a.String()); err != nil || b != a || a.Is4In6() || a.IsLoopback() || a.IsUnspecified() || seen[a] {
				t.Fatalf("ParseAddrs(%q) gave %v", s, got)
			}
			seen[a] = true
		}
	})
}

func TestLogger(t *testing.T) {
	if _, err := Logger("loud", "text", io.Discard); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := Logger("info", "xml", io.Discard); err == nil {
		t.Error("bad format accepted")
	}
	var b strings.Builder
	l, err := Logger("debug", "json", &b)
	if err != nil {
		t.Fatal(err)
	}
	l.WithField("component", "test").Debug("hello")
	if !strings.Contains(b.String(), `"component":"test"`) {
		t.Errorf("json log = %q", b.String())
	}
}
