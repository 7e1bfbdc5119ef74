package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Limits of DNS names (RFC 1035, section 2.3.4).
const (
	maxLabelLen = 63
	maxNameLen  = 253
)

// The kinds of error that ParseSpec, ParseBackend and DNSNames return. Each
// error they return wraps exactly one of these (test with errors.Is) and says,
// around it, what was wrong and where.
var (
	ErrEmptyName     = errors.New("empty name")
	ErrEmptyLabel    = errors.New("empty label")
	ErrNoPort        = errors.New("no port (want host:port)")
	ErrBadPort       = errors.New("is not a port from 1 to 65535")
	ErrLabelTooLong  = errors.New("a DNS label has at most 63 characters")
	ErrNameTooLong   = errors.New("a DNS name has at most 253 characters")
	ErrBadCharacter  = errors.New("cannot stand in a DNS label")
	ErrUnknownScheme = errors.New("unknown scheme (want tcp:// or udp://)")
	ErrBadAddress    = errors.New("not a usable address")
)

// ParseSpec parses a VIP label as a user writes it:
//
//	/dcos-101/app2:10000      named VIP, TCP
//	app2:80                   named VIP, normalised to "/app2"
//	udp:///dns:53             named VIP, UDP
//	11.1.1.1:80               IP VIP
//	tcp://[fd01:c::1]:80      IP VIP, IPv6
//
// A named VIP's path segments must be DNS labels: 1 to 63 letters, digits,
// '-' or '_'; the path as DNS labels ("app2.dcos-101") has at most 253
// characters. The path keeps the case it was written in; DNS names built from
// it are lower-cased (see DNSNames). The error, if any, names the input and
// the part of it that is wrong, and wraps one of the Err* kinds above.
func ParseSpec(s string) (Spec, error) {
	spec, err := parseSpec(s)
	if err != nil {
		return Spec{}, fmt.Errorf("vip %q: %w", s, err)
	}
	return spec, nil
}

func parseSpec(s string) (Spec, error) {
	if s == "" {
		return Spec{}, ErrEmptyName
	}
	spec := Spec{Protocol: TCP}
	rest := s
	if i := strings.Index(rest, "://"); i >= 0 {
		scheme := rest[:i]
		switch {
		case strings.EqualFold(scheme, string(TCP)):
			spec.Protocol = TCP
		case strings.EqualFold(scheme, string(UDP)):
			spec.Protocol = UDP
		default:
			return Spec{}, fmt.Errorf("scheme %q: %w", scheme, ErrUnknownScheme)
		}
		rest = rest[i+3:]
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return Spec{}, err
	}
	spec.Port = port
	if strings.HasPrefix(host, "[") {
		addr, err := parseBracketedIPv6(host)
		if err != nil {
			return Spec{}, err
		}
		spec.Addr = addr
		return spec, nil
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Is6() && !addr.Is4In6() {
			return Spec{}, fmt.Errorf("address %q: %w: write an IPv6 VIP in brackets, as [%s]:%d", host, ErrBadAddress, host, port)
		}
		addr = addr.Unmap()
		if err := checkVIPAddr(addr); err != nil {
			return Spec{}, err
		}
		spec.Addr = addr
		return spec, nil
	}
	name := host
	if !strings.HasPrefix(name, "/") {
		name = "/" + name
	}
	if err := checkName(name); err != nil {
		return Spec{}, err
	}
	spec.Name = name
	return spec, nil
}

// splitHostPort splits "host:port" at its last colon and parses the port.
func splitHostPort(s string) (string, uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || (strings.HasPrefix(s, "[") && i < strings.LastIndexByte(s, ']')) {
		return "", 0, ErrNoPort
	}
	host, portText := s[:i], s[i+1:]
	port, err := parsePort(portText)
	if err != nil {
		return "", 0, err
	}
	if host == "" || host == "/" {
		return "", 0, ErrEmptyName
	}
	return host, port, nil
}

func parsePort(p string) (uint16, error) {
	if p == "" {
		return 0, ErrNoPort
	}
	for _, c := range []byte(p) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q %w", p, ErrBadPort)
		}
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return 0, fmt.Errorf("port %q %w", p, ErrBadPort)
	}
	return uint16(n), nil
}

func parseBracketedIPv6(host string) (netip.Addr, error) {
	if !strings.HasSuffix(host, "]") {
		return netip.Addr{}, fmt.Errorf("address %q: %w: missing ']'", host, ErrBadAddress)
	}
	inner := host[1 : len(host)-1]
	addr, err := netip.ParseAddr(inner)
	if err != nil || !addr.Is6() {
		return netip.Addr{}, fmt.Errorf("address %q: %w: not an IPv6 address", host, ErrBadAddress)
	}
	if addr.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q: %w: a VIP has no zone", host, ErrBadAddress)
	}
	addr = addr.Unmap()
	if err := checkVIPAddr(addr); err != nil {
		return netip.Addr{}, err
	}
	return addr, nil
}

// checkVIPAddr refuses addresses that cannot be a virtual service's address.
func checkVIPAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("address: %w", ErrBadAddress)
	case a.Zone() != "":
		return fmt.Errorf("address %s: %w: zones are not allowed", a, ErrBadAddress)
	case a.IsUnspecified():
		return fmt.Errorf("address %s: %w: unspecified", a, ErrBadAddress)
	case a.IsMulticast():
		return fmt.Errorf("address %s: %w: multicast", a, ErrBadAddress)
	}
	return nil
}

// checkName validates a named VIP's path ("/dcos-101/app2"), which must start
// with "/".
func checkName(name string) error {
	path := strings.TrimPrefix(name, "/")
	if path == "" {
		return ErrEmptyName
	}
	for rest := path; ; {
		label, tail, more := strings.Cut(rest, "/")
		if label == "" {
			return fmt.Errorf("name %q: %w between slashes", name, ErrEmptyLabel)
		}
		if err := checkLabel(label); err != nil {
			return err
		}
		if !more {
			break
		}
		rest = tail
	}
	// As DNS labels the path has one '.' for each '/' but the leading one.
	if n := len(path); n > maxNameLen {
		return fmt.Errorf("name %q: %d characters as DNS labels: %w", name, n, ErrNameTooLong)
	}
	return nil
}

// checkLabel validates one DNS label: 1 to 63 of [A-Za-z0-9_-].
func checkLabel(label string) error {
	if label == "" {
		return ErrEmptyLabel
	}
	for _, r := range label {
		if !isLabelRune(r) {
			return fmt.Errorf("label %q: character %q %w", label, r, ErrBadCharacter)
		}
	}
	if len(label) > maxLabelLen {
		return fmt.Errorf("label %q: %d characters: %w", label, len(label), ErrLabelTooLong)
	}
	return nil
}

func isLabelRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// Named reports whether s is a named VIP (rather than an IP VIP).
func (s Spec) Named() bool { return s.Name != "" }

// String returns the normalised label: "/dcos-101/app2:10000",
// "udp:///dns:53", "11.1.1.1:80", "[fd01:c::1]:80". TCP has no scheme.
// ParseSpec(s.String()) gives s back for every Spec that ParseSpec returned.
func (s Spec) String() string {
	var b strings.Builder
	if s.Protocol != "" && s.Protocol != TCP {
		b.WriteString(string(s.Protocol))
		b.WriteString("://")
	}
	if s.Named() {
		b.WriteString(s.Name)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(s.Port)))
	} else {
		b.WriteString(netip.AddrPortFrom(s.Addr, s.Port).String())
	}
	return b.String()
}

// validate checks a Spec that may not have come from ParseSpec (a
// registration can carry any value) and returns it with its protocol
// normalised (empty means TCP).
func (s Spec) validate() (Spec, error) {
	switch s.Protocol {
	case "", TCP:
		s.Protocol = TCP
	case UDP:
	default:
		return s, fmt.Errorf("protocol %q: %w", s.Protocol, ErrUnknownScheme)
	}
	if s.Port == 0 {
		return s, fmt.Errorf("port \"0\" %w", ErrBadPort)
	}
	if s.Named() {
		if s.Addr.IsValid() {
			return s, fmt.Errorf("name %q with address %s: %w: a VIP is named or has an address, not both", s.Name, s.Addr, ErrBadAddress)
		}
		if !strings.HasPrefix(s.Name, "/") {
			s.Name = "/" + s.Name
		}
		return s, checkName(s.Name)
	}
	s.Addr = s.Addr.Unmap()
	return s, checkVIPAddr(s.Addr)
}

// ParseBackend parses a backend's address and port: "10.0.0.12:8080" or
// "[fd00::1]:80". The port must be 1 to 65535; the address must be a unicast
// address without a zone. IPv4-mapped IPv6 addresses become IPv4.
func ParseBackend(s string) (netip.AddrPort, error) {
	ap, err := parseBackend(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("backend %q: %w", s, err)
	}
	return ap, nil
}

func parseBackend(s string) (netip.AddrPort, error) {
	host, port, err := splitHostPort(s)
	if err != nil {
		if errors.Is(err, ErrEmptyName) {
			return netip.AddrPort{}, fmt.Errorf("address: %w: empty", ErrBadAddress)
		}
		return netip.AddrPort{}, err
	}
	var addr netip.Addr
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w: missing ']'", host, ErrBadAddress)
		}
		addr, err = netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !addr.Is6() {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w: not an IPv6 address", host, ErrBadAddress)
		}
	} else {
		addr, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", host, ErrBadAddress)
		}
		if addr.Is6() && !addr.Is4In6() {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w: write an IPv6 backend in brackets", host, ErrBadAddress)
		}
	}
	addr = addr.Unmap()
	if err := checkVIPAddr(addr); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, port), nil
}
