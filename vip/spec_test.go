package vip

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// 126 labels of one character: 251 characters as DNS labels.
	name251 := "/" + strings.TrimSuffix(strings.Repeat("a/", 126), "/")
	cases := []struct {
		name   string
		in     string
		want   Spec
		normal string
	}{
		{"named with leading slash", "/app2:80", Spec{Protocol: TCP, Name: "/app2", Port: 80}, "/app2:80"},
		{"named with group", "/dcos-101/app2:10000", Spec{Protocol: TCP, Name: "/dcos-101/app2", Port: 10000}, "/dcos-101/app2:10000"},
		{"named without leading slash", "app2:80", Spec{Protocol: TCP, Name: "/app2", Port: 80}, "/app2:80"},
		{"group without leading slash", "dcos-101/app2:80", Spec{Protocol: TCP, Name: "/dcos-101/app2", Port: 80}, "/dcos-101/app2:80"},
		{"tcp scheme is dropped", "tcp:///app2:80", Spec{Protocol: TCP, Name: "/app2", Port: 80}, "/app2:80"},
		{"udp scheme", "udp:///app:53", Spec{Protocol: UDP, Name: "/app", Port: 53}, "udp:///app:53"},
		{"udp scheme without slash", "udp://app:53", Spec{Protocol: UDP, Name: "/app", Port: 53}, "udp:///app:53"},
		{"scheme in upper case", "UDP:///app:53", Spec{Protocol: UDP, Name: "/app", Port: 53}, "udp:///app:53"},
		{"case kept in the path", "/My_App/Web:8080", Spec{Protocol: TCP, Name: "/My_App/Web", Port: 8080}, "/My_App/Web:8080"},
		{"highest port", "/a:65535", Spec{Protocol: TCP, Name: "/a", Port: 65535}, "/a:65535"},
		{"leading zeros in port", "/a:0080", Spec{Protocol: TCP, Name: "/a", Port: 80}, "/a:80"},
		{"label of 63 characters", "/" + label63 + ":1", Spec{Protocol: TCP, Name: "/" + label63, Port: 1}, "/" + label63 + ":1"},
		{"name of 251 characters", name251 + ":1", Spec{Protocol: TCP, Name: name251, Port: 1}, name251 + ":1"},
		{"numeric label is a name", "/1:80", Spec{Protocol: TCP, Name: "/1", Port: 80}, "/1:80"},
		{"IPv4 VIP", "11.1.1.1:80", Spec{Protocol: TCP, Addr: netip.MustParseAddr("11.1.1.1"), Port: 80}, "11.1.1.1:80"},
		{"IPv4 VIP over udp", "udp://11.1.1.1:53", Spec{Protocol: UDP, Addr: netip.MustParseAddr("11.1.1.1"), Port: 53}, "udp://11.1.1.1:53"},
		{"IPv6 VIP", "[fd01:c::1]:80", Spec{Protocol: TCP, Addr: netip.MustParseAddr("fd01:c::1"), Port: 80}, "[fd01:c::1]:80"},
		{"IPv6 VIP over udp", "udp://[FD01:C::1]:53", Spec{Protocol: UDP, Addr: netip.MustParseAddr("fd01:c::1"), Port: 53}, "udp://[fd01:c::1]:53"},
		{"IPv4-mapped IPv6 becomes IPv4", "[::ffff:11.1.1.1]:80", Spec{Protocol: TCP, Addr: netip.MustParseAddr("11.1.1.1"), Port: 80}, "11.1.1.1:80"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSpec(tc.in)
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseSpec(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
			if s := got.String(); s != tc.normal {
				t.Fatalf("String() = %q, want %q", s, tc.normal)
			}
			if got.Named() != (tc.want.Name != "") {
				t.Fatalf("Named() = %v for %#v", got.Named(), got)
			}
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseSpec(String()) = %#v, %v; want %#v", again, err, got)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	label64 := strings.Repeat("a", 64)
	// 127 labels of one character: 253 characters, fine; 128: 255, too long.
	name255 := "/" + strings.TrimSuffix(strings.Repeat("a/", 128), "/")
	cases := []struct {
		name string
		in   string
		kind error
		msg  string // the whole message, when given
	}{
		{"empty input", "", ErrEmptyName, `vip "": empty name`},
		{"empty name", "/:80", ErrEmptyName, `vip "/:80": empty name`},
		{"port only", ":80", ErrEmptyName, `vip ":80": empty name`},
		{"scheme and port only", "udp://:53", ErrEmptyName, ""},
		{"double slash", "/a//b:80", ErrEmptyLabel, `vip "/a//b:80": name "/a//b": empty label between slashes`},
		{"trailing slash", "/a/:80", ErrEmptyLabel, ""},
		{"port 0", "/a:0", ErrBadPort, `vip "/a:0": port "0" is not a port from 1 to 65535`},
		{"port 65536", "/a:65536", ErrBadPort, `vip "/a:65536": port "65536" is not a port from 1 to 65535`},
		{"huge port", "/a:99999999999999999999", ErrBadPort, ""},
		{"negative port", "/a:-1", ErrBadPort, ""},
		{"port with letters", "/a:8o", ErrBadPort, `vip "/a:8o": port "8o" is not a port from 1 to 65535`},
		{"no port", "/a", ErrNoPort, `vip "/a": no port (want host:port)`},
		{"empty port", "/a:", ErrNoPort, ""},
		{"label of 64 characters", "/x/" + label64 + ":80", ErrLabelTooLong, `vip "/x/` + label64 + `:80": label "` + label64 + `": 64 characters: a DNS label has at most 63 characters`},
		{"name of 255 characters", name255 + ":80", ErrNameTooLong, `vip "` + name255 + `:80": name "` + name255 + `": 255 characters as DNS labels: a DNS name has at most 253 characters`},
		{"space", "/a b:80", ErrBadCharacter, `vip "/a b:80": label "a b": character ' ' cannot stand in a DNS label`},
		{"dot", "/group/a.b:80", ErrBadCharacter, `vip "/group/a.b:80": label "a.b": character '.' cannot stand in a DNS label`},
		{"non-ASCII", "/café:80", ErrBadCharacter, `vip "/café:80": label "café": character 'é' cannot stand in a DNS label`},
		{"invalid UTF-8", "/a\xff:80", ErrBadCharacter, ""},
		{"colon in name", "/a:b:80", ErrBadCharacter, ""},
		{"unknown scheme", "http:///a:80", ErrUnknownScheme, `vip "http:///a:80": scheme "http": unknown scheme (want tcp:// or udp://)`},
		{"empty scheme", ":///a:80", ErrUnknownScheme, ""},
		{"IPv6 without brackets", "fd01:c::1:80", ErrBadAddress, ""},
		{"IPv4 in brackets", "[11.1.1.1]:80", ErrBadAddress, ""},
		{"unclosed bracket", "[fd01:c::1:80", ErrBadAddress, ""},
		{"bracket without port", "[fd01:c::1]", ErrNoPort, ""},
		{"IPv6 with zone", "[fe80::1%eth0]:80", ErrBadAddress, ""},
		{"unspecified address", "0.0.0.0:80", ErrBadAddress, `vip "0.0.0.0:80": address 0.0.0.0: not a usable address: unspecified`},
		{"multicast address", "224.0.0.1:80", ErrBadAddress, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSpec(tc.in)
			if err == nil {
				t.Fatalf("ParseSpec(%q) = %#v, want an error", tc.in, got)
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("ParseSpec(%q) error %q does not wrap %q", tc.in, err, tc.kind)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Fatalf("ParseSpec(%q) error\n got %s\nwant %s", tc.in, err, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "vip ") {
				t.Fatalf("error %q does not say which vip", err)
			}
			if got != (Spec{}) {
				t.Fatalf("ParseSpec(%q) returned %#v with its error", tc.in, got)
			}
		})
	}
}

func TestParseBackend(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string
		kind error
	}{
		{"IPv4", "10.0.0.12:8080", "10.0.0.12:8080", nil},
		{"IPv6", "[fd00::1]:80", "[fd00::1]:80", nil},
		{"IPv4-mapped becomes IPv4", "[::ffff:10.0.0.1]:80", "10.0.0.1:80", nil},
		{"highest port", "10.0.0.1:65535", "10.0.0.1:65535", nil},
		{"empty", "", "", ErrNoPort},
		{"no port", "10.0.0.1", "", ErrNoPort},
		{"port 0", "10.0.0.1:0", "", ErrBadPort},
		{"port 65536", "10.0.0.1:65536", "", ErrBadPort},
		{"name instead of address", "app:80", "", ErrBadAddress},
		{"empty address", ":80", "", ErrBadAddress},
		{"IPv6 without brackets", "fd00::1:80", "", ErrBadAddress},
		{"IPv4 in brackets", "[10.0.0.1]:80", "", ErrBadAddress},
		{"unclosed bracket", "[fd00::1:80", "", ErrBadAddress},
		{"zone", "[fe80::1%eth0]:80", "", ErrBadAddress},
		{"unspecified", "[::]:80", "", ErrBadAddress},
		{"multicast", "239.1.1.1:80", "", ErrBadAddress},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBackend(tc.in)
			if tc.kind != nil {
				if !errors.Is(err, tc.kind) {
					t.Fatalf("ParseBackend(%q) = %v, %v; want an error wrapping %q", tc.in, got, err, tc.kind)
				}
				if !strings.HasPrefix(err.Error(), "backend \""+tc.in+"\": ") {
					t.Fatalf("error %q does not say which backend", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBackend(%q): %v", tc.in, err)
			}
			if got.String() != tc.want {
				t.Fatalf("ParseBackend(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestDNSNames(t *testing.T) {
	cases := []struct {
		name, path, framework, domain string
		wantPath, wantFlat            string
	}{
		{"group and app", "/dcos-101/app2", "marathon", "",
			"app2.dcos-101.marathon.l4lb.thisdcos.directory.", "dcos-101app2.marathon.l4lb.thisdcos.directory."},
		{"one segment: both names the same", "/app2", "marathon", "",
			"app2.marathon.l4lb.thisdcos.directory.", "app2.marathon.l4lb.thisdcos.directory."},
		{"no leading slash", "dcos-101/app2", "", "",
			"app2.dcos-101.marathon.l4lb.thisdcos.directory.", "dcos-101app2.marathon.l4lb.thisdcos.directory."},
		{"upper case and underscore", "/My_Group/Web", "Marathon", "",
			"web.my_group.marathon.l4lb.thisdcos.directory.", "my-groupweb.marathon.l4lb.thisdcos.directory."},
		{"three segments", "/a/b/c", "kubernetes", "",
			"c.b.a.kubernetes.l4lb.thisdcos.directory.", "abc.kubernetes.l4lb.thisdcos.directory."},
		{"own domain, trailing dot, upper case", "/a/b", "marathon", "Example.ORG.",
			"b.a.marathon.example.org.", "ab.marathon.example.org."},
		{"flattened label too long: no flat name", "/" + strings.Repeat("a", 40) + "/" + strings.Repeat("b", 40), "marathon", "",
			strings.Repeat("b", 40) + "." + strings.Repeat("a", 40) + ".marathon.l4lb.thisdcos.directory.", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, flat, err := DNSNames(tc.path, tc.framework, tc.domain)
			if err != nil {
				t.Fatalf("DNSNames: %v", err)
			}
			if path != tc.wantPath || flat != tc.wantFlat {
				t.Fatalf("DNSNames(%q, %q, %q) = %q, %q; want %q, %q", tc.path, tc.framework, tc.domain, path, flat, tc.wantPath, tc.wantFlat)
			}
		})
	}
}

func TestDNSNamesErrors(t *testing.T) {
	long := "/" + strings.TrimSuffix(strings.Repeat("abcdefghi/", 23), "/") // 229 characters as labels, 262 with the suffix
	cases := []struct {
		name, path, framework, domain string
		kind                          error
	}{
		{"empty name", "", "marathon", "", ErrEmptyName},
		{"bad name", "/a b", "marathon", "", ErrBadCharacter},
		{"framework is not a label", "/a", "my framework", "", ErrBadCharacter},
		{"framework with a dot", "/a", "mara.thon", "", ErrBadCharacter},
		{"framework too long", "/a", strings.Repeat("f", 64), "", ErrLabelTooLong},
		{"domain with empty label", "/a", "marathon", "bad..domain", ErrEmptyLabel},
		{"domain with bad character", "/a", "marathon", "bad domain", ErrBadCharacter},
		{"full name over 253", long, "marathon", "", ErrNameTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, flat, err := DNSNames(tc.path, tc.framework, tc.domain)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("DNSNames(%q, %q, %q) = %q, %q, %v; want an error wrapping %q", tc.path, tc.framework, tc.domain, path, flat, err, tc.kind)
			}
		})
	}
}
