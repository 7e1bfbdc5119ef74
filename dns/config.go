package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// Defaults for Config fields left at their zero value.
const (
	DefaultTTL             = 5 * time.Second
	DefaultListen          = "198.51.100.1:53"
	DefaultUpstreamTimeout = 2 * time.Second
	DefaultMaxInFlight     = 1000
	// DefaultResolvConf is where NewServer reads upstreams when
	// Config.Upstreams is empty and forwarding is on.
	DefaultResolvConf = "/etc/resolv.conf"
)

// DefaultAliases are the other names DC/OS gave the named-VIP zone.
var DefaultAliases = []string{
	"dclb.thisdcos.directory",
	"l4lb.thisdcos.global",
	"dclb.thisdcos.global",
}

// Config says what the server answers, where it listens and where it
// forwards. The zero value of each field means its default, except Forward:
// forwarding is on only when Forward is true.
type Config struct {
	// Domain is the zone the server is authoritative for; the VIP names in
	// the table must be under it. Default vip.DefaultDomain.
	Domain string
	// Aliases are other apexes that answer exactly like Domain
	// (app2.dcos-101.marathon.dclb.thisdcos.global, ...). nil means
	// DefaultAliases; an empty non-nil slice means none.
	Aliases []string
	// TTL of every record, and the negative-caching TTL. Default 5s.
	TTL time.Duration
	// Listen are the ip:port addresses to serve UDP and TCP on. Default
	// DefaultListen. Port 0 picks a free port (see Server.Addrs).
	Listen []string
	// Upstreams are the resolvers ("ip" or "ip:port") that names outside the
	// zone are forwarded to, tried in order. Default: the nameservers of
	// /etc/resolv.conf. Our own listen addresses are always removed.
	Upstreams []string
	// Forward turns forwarding on; when off, names outside the zone get
	// REFUSED.
	Forward bool
	// UpstreamTimeout bounds one exchange with one upstream. Default 2s.
	UpstreamTimeout time.Duration
	// MaxInFlight caps the queries being handled at once; queries over the
	// cap get REFUSED. Default 1000.
	MaxInFlight int
	// Logger receives the server's logs; the server adds component=dns.
	Logger *logrus.Entry

	// resolvConf overrides DefaultResolvConf in tests.
	resolvConf string
}

// settled is a Config with defaults filled in and every address parsed.
type settled struct {
	apex        string   // canonical (lower-case, trailing dot) Domain
	aliases     []string // canonical aliases, without apex and duplicates
	ttl         uint32   // seconds
	listen      []netip.AddrPort
	upstreams   []string // "ip:port", never one of our own listen addresses
	forward     bool
	timeout     time.Duration
	maxInFlight int64
	log         *logrus.Entry
}

func settle(cfg Config) (settled, error) {
	var s settled
	domain := cfg.Domain
	if domain == "" {
		domain = vip.DefaultDomain
	}
	apex, err := canonicalZone(domain)
	if err != nil {
		return s, fmt.Errorf("domain: %w", err)
	}
	s.apex = apex
	aliases := cfg.Aliases
	if aliases == nil {
		aliases = DefaultAliases
	}
	seen := map[string]bool{apex: true}
	for _, a := range aliases {
		ca, err := canonicalZone(a)
		if err != nil {
			return s, fmt.Errorf("alias: %w", err)
		}
		if !seen[ca] {
			seen[ca] = true
			s.aliases = append(s.aliases, ca)
		}
	}
	switch {
	case cfg.TTL < 0:
		return s, fmt.Errorf("ttl %s is negative", cfg.TTL)
	case cfg.TTL == 0:
		s.ttl = uint32(DefaultTTL / time.Second)
	default:
		s.ttl = uint32(cfg.TTL / time.Second)
	}
	listen := cfg.Listen
	if len(listen) == 0 {
		listen = []string{DefaultListen}
	}
	for _, l := range listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return s, fmt.Errorf("listen address %q: %w", l, err)
		}
		s.listen = append(s.listen, ap)
	}
	s.forward = cfg.Forward
	s.timeout = cfg.UpstreamTimeout
	if s.timeout <= 0 {
		s.timeout = DefaultUpstreamTimeout
	}
	s.maxInFlight = int64(cfg.MaxInFlight)
	if s.maxInFlight <= 0 {
		s.maxInFlight = DefaultMaxInFlight
	}
	s.log = cfg.Logger
	if s.log == nil {
		s.log = logrus.NewEntry(logrus.StandardLogger())
	}
	s.log = s.log.WithField("component", "dns")

	upstreams := cfg.Upstreams
	if len(upstreams) == 0 && s.forward {
		path := cfg.resolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		upstreams, err = resolvConfServers(path)
		if err != nil {
			// Not fatal: the zone still works; forwarded names get SERVFAIL.
			s.log.WithField("reason", err.Error()).Warn("no upstream resolvers; names outside the zone will fail")
		}
	}
	for _, u := range upstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			return s, err
		}
		if isOwnAddress(ap, s.listen) {
			s.log.WithField("reason", "upstream is one of our listen addresses").
				Infof("not forwarding to %s", ap)
			continue
		}
		s.upstreams = append(s.upstreams, ap.String())
	}
	return s, nil
}

// canonicalZone checks a zone name and returns it lower-case and fully
// qualified.
func canonicalZone(name string) (string, error) {
	if _, ok := mdns.IsDomainName(name); !ok || name == "" || name == "." {
		return "", fmt.Errorf("%q is not a domain name", name)
	}
	return strings.ToLower(mdns.Fqdn(name)), nil
}

// parseUpstream accepts "ip" (port 53) or "ip:port".
func parseUpstream(u string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(u); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	ap, err := netip.ParseAddrPort(u)
	if err != nil {
		return ap, fmt.Errorf("upstream %q is neither ip nor ip:port: %w", u, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// resolvConfServers returns the nameservers of a resolv.conf as ip:port.
func resolvConfServers(path string) ([]string, error) {
	cc, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read upstreams from %s: %w", path, err)
	}
	if len(cc.Servers) == 0 {
		return nil, errors.New("no nameserver in " + path)
	}
	out := make([]string, 0, len(cc.Servers))
	for _, srv := range cc.Servers {
		out = append(out, net.JoinHostPort(srv, cc.Port))
	}
	return out, nil
}

// isOwnAddress says whether sending to up would reach one of our listeners:
// the same address and port, or the same port when we listen on every
// address and up is a loopback or local address.
func isOwnAddress(up netip.AddrPort, listen []netip.AddrPort) bool {
	for _, l := range listen {
		if l.Port() != up.Port() {
			continue
		}
		if l.Addr().Unmap() == up.Addr() {
			return true
		}
		if l.Addr().IsUnspecified() && (up.Addr().IsLoopback() || isLocalAddress(up.Addr())) {
			return true
		}
	}
	return false
}

func isLocalAddress(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}
