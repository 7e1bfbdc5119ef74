package vip

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		"/app2:80", "/dcos-101/app2:10000", "app2:80", "tcp:///app2:80", "udp:///app:53",
		"11.1.1.1:80", "[fd01:c::1]:80", "udp://[fd01:c::1]:53", "[::ffff:11.1.1.1]:80",
		"", "/:80", "/a//b:80", "/a:0", "/a:65536", "/a b:80", "http:///a:80", "fd01:c::1:80",
		"/" + strings.Repeat("a", 64) + ":80", "[fe80::1%eth0]:80", "/My_App:8080",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		spec, err := ParseSpec(in)
		if err != nil {
			if spec != (Spec{}) {
				t.Fatalf("ParseSpec(%q) returned %#v with error %v", in, spec, err)
			}
			if !strings.HasPrefix(err.Error(), "vip "+strconv.Quote(in)+": ") {
				t.Fatalf("error %q does not name the input %q", err, in)
			}
			return
		}
		if spec.Port == 0 || (spec.Protocol != TCP && spec.Protocol != UDP) {
			t.Fatalf("ParseSpec(%q) = %#v: bad port or protocol", in, spec)
		}
		if spec.Named() == spec.Addr.IsValid() {
			t.Fatalf("ParseSpec(%q) = %#v: must be named or have an address, not both", in, spec)
		}
		if _, err := spec.validate(); err != nil {
			t.Fatalf("ParseSpec(%q) = %#v, which does not validate: %v", in, spec, err)
		}
		normal := spec.String()
		again, err := ParseSpec(normal)
		if err != nil || again != spec {
			t.Fatalf("ParseSpec(%q) = %#v; its String %q parses to %#v, %v", in, spec, normal, again, err)
		}
		if again.String() != normal {
			t.Fatalf("String is not stable: %q then %q", normal, again.String())
		}
		if spec.Named() {
			path, _, err := DNSNames(spec.Name, "", "")
			if err != nil && !errors.Is(err, ErrNameTooLong) {
				t.Fatalf("a parsed name has no DNS names: %v", err)
			}
			if err == nil && path != strings.ToLower(path) {
				t.Fatalf("DNS name %q is not lower-case", path)
			}
		}
	})
}

func FuzzParseBackend(f *testing.F) {
	for _, s := range []string{"10.0.0.12:8080", "[fd00::1]:80", "[::ffff:10.0.0.1]:80", "10.0.0.1:0", "app:80", "", ":80", "[fe80::1%eth0]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ap, err := ParseBackend(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "backend "+strconv.Quote(in)+": ") {
				t.Fatalf("error %q does not name the input %q", err, in)
			}
			return
		}
		if ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
			t.Fatalf("ParseBackend(%q) = %s", in, ap)
		}
		again, err := ParseBackend(ap.String())
		if err != nil || again != ap {
			t.Fatalf("ParseBackend(%q) = %s; reparsed %s, %v", in, ap, again, err)
		}
	})
}

func FuzzDNSNames(f *testing.F) {
	f.Add("/dcos-101/app2", "marathon", "")
	f.Add("/My_Group/Web", "Marathon", "Example.ORG.")
	f.Add("/a b", "x", "bad..domain")
	f.Fuzz(func(t *testing.T, name, framework, domain string) {
		path, flat, err := DNSNames(name, framework, domain)
		if err != nil {
			return
		}
		for _, n := range []string{path, flat} {
			if n == "" {
				continue
			}
			if !strings.HasSuffix(n, ".") || len(n)-1 > maxNameLen || n != strings.ToLower(n) {
				t.Fatalf("DNSNames(%q, %q, %q) gave %q", name, framework, domain, n)
			}
			for _, label := range strings.Split(strings.TrimSuffix(n, "."), ".") {
				if err := checkLabel(label); err != nil {
					t.Fatalf("DNSNames(%q, %q, %q) gave %q: %v", name, framework, domain, n, err)
				}
			}
		}
		if path == "" {
			t.Fatal("no path name without an error")
		}
	})
}
