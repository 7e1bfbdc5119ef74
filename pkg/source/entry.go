package source

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/vip"
)

// Entry is the wire form of one registration, as the HTTP API
// (PUT/DELETE /v1/backends), the services directory and the state file carry
// it:
//
//	{"vip": "/dcos-101/app2:10000", "backend": "10.0.0.12:8080",
//	 "framework": "marathon", "protocol": "tcp", "weight": 1,
//	 "check": "http:///healthz", "check_interval": "1s", "check_timeout": "1s",
//	 "check_rise": 2, "check_fall": 2, "scheduler": "wlc", "persistence": 0,
//	 "public": true, "public_port": 10000}
//
// Only vip and backend are required. Parse checks an Entry and fills in the
// defaults.
type Entry struct {
	// VIP is the VIP's label, as vip.ParseSpec reads it; "udp:///dns:53"
	// gives the protocol in its scheme.
	VIP string `json:"vip"`
	// Backend is the backend's address and port: "10.0.0.12:8080",
	// "[fd00::12]:8080".
	Backend string `json:"backend"`
	// Framework is the framework of a named VIP (vip.DefaultFramework when
	// empty); an IP VIP has none and ignores it.
	Framework string `json:"framework,omitempty"`
	// Protocol is "tcp" or "udp"; it must agree with the VIP's scheme when
	// both are given. TCP when neither is.
	Protocol string `json:"protocol,omitempty"`
	// Weight is the backend's IPVS weight, 0 to 65535; 1 when absent. 0 keeps
	// the backend but sends it no new connections.
	Weight *uint32 `json:"weight,omitempty"`
	// Check is the backend's health check: "tcp", "http:///PATH" (the short
	// "http://PATH" means the same), or "" / "none" for no check. See
	// ParseCheck.
	Check string `json:"check,omitempty"`
	// CheckInterval and CheckTimeout are Go durations ("1s", "500ms"); the
	// health package's defaults when empty. The timeout is at most the
	// interval.
	CheckInterval string `json:"check_interval,omitempty"`
	CheckTimeout  string `json:"check_timeout,omitempty"`
	// CheckRise and CheckFall are the passing and failing checks in a row
	// that make the backend healthy or unhealthy, 1 to 100; the health
	// package's defaults when 0.
	CheckRise int `json:"check_rise,omitempty"`
	CheckFall int `json:"check_fall,omitempty"`
	// Scheduler is the IPVS scheduler the backend asks for its VIP
	// (vip.DefaultScheduler when empty).
	Scheduler string `json:"scheduler,omitempty"`
	// Persistence is the client affinity the backend asks for its VIP, in
	// seconds; 0 for none.
	Persistence uint32 `json:"persistence,omitempty"`
	// Public asks that public nodes (agents with --public-address) serve
	// the VIP on their own addresses, at PublicPort: 1 to 65535, the VIP's
	// port when 0 or absent. Like the scheduler, it belongs to the VIP
	// (vip.Registration.Public).
	Public     bool `json:"public,omitempty"`
	PublicPort int  `json:"public_port,omitempty"`
}

// Limits and defaults that Parse applies.
const (
	DefaultWeight     = 1
	MaxWeight         = 65535 // ipvsadm's limit
	MinCheckInterval  = 100 * time.Millisecond
	MaxCheckInterval  = time.Hour
	MinCheckTimeout   = 10 * time.Millisecond
	MaxCheckThreshold = 100
	maxCheckPathLen   = 1024
)

// Schedulers are the IPVS schedulers a registration may ask for.
var Schedulers = []string{"dh", "fo", "lblc", "lblcr", "lc", "mh", "nq", "ovf", "rr", "sed", "sh", "twos", "wlc", "wrr"}

// Check is a backend's health check, parsed, with its defaults filled in.
type Check struct {
	// Kind is "" when the backend has no check.
	Kind health.Kind
	// Path is the HTTP path, starting with "/"; empty for other kinds.
	Path     string
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
}

// String returns the check in the Entry's syntax: "tcp", "http:///healthz",
// or "" for no check.
func (c Check) String() string {
	switch c.Kind {
	case health.HTTP:
		return "http://" + c.Path
	default:
		return string(c.Kind)
	}
}

// ParseCheck reads a check as a user writes it:
//
//	tcp               TCP connect to the backend
//	http:///healthz   HTTP GET /healthz on the backend, 2xx passes
//	http://healthz    the same: what follows "http://" is the path, and a
//	                  missing leading "/" is added
//	http://  http     HTTP GET /
//	"" or none        no check
//
// A check always goes to the backend's own address, so it has no host: a
// first path segment with a ':' in it ("http://10.0.0.1:8080/x") looks like a
// host and port and is refused, to say so. "http://localhost/x" is the path
// "/localhost/x". Kinds and "none" are case-insensitive; the path is kept as
// written.
func ParseCheck(s string) (kind health.Kind, path string, err error) {
	lower := strings.ToLower(s)
	switch {
	case lower == "" || lower == "none":
		return "", "", nil
	case lower == string(health.TCP):
		return health.TCP, "", nil
	case lower == string(health.HTTP):
		return health.HTTP, "/", nil
	case strings.HasPrefix(lower, "http://"):
	default:
		return "", "", fmt.Errorf("check %q: unknown check (want \"tcp\", \"http:///PATH\" or \"none\")", s)
	}
	path = s[len("http://"):]
	if !strings.HasPrefix(path, "/") {
		if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ":") {
			return "", "", fmt.Errorf("check %q: %q looks like a host and port, but a check always goes to the backend: write \"http:///PATH\"", s, first)
		}
		path = "/" + path
	}
	if len(path) > maxCheckPathLen {
		return "", "", fmt.Errorf("check %q: path longer than %d bytes", s, maxCheckPathLen)
	}
	for _, r := range path {
		if r <= ' ' || r == 0x7f || r == '#' {
			return "", "", fmt.Errorf("check %q: path has %q, which cannot be in a request path", s, r)
		}
	}
	if _, err := url.ParseRequestURI(path); err != nil {
		return "", "", fmt.Errorf("check %q: path %q is not a request path: %w", s, path, err)
	}
	return health.HTTP, path, nil
}

// Local is a registration of a backend on this node, checked and with its
// defaults filled in. Locals are comparable with ==.
type Local struct {
	VIP vip.Spec
	// Framework is the named VIP's framework; empty for an IP VIP.
	Framework   string
	Backend     netip.AddrPort
	Weight      uint32
	Check       Check
	Scheduler   string
	Persistence uint32
	Public      bool
	PublicPort  uint16 // 0: the VIP's port
}

// KeyOf is the key of the registration of backend for spec: the VIP's
// normalised label, lower-cased (DNS names ignore case), a space, and the
// backend ("/dcos-101/app2:10000 10.0.0.12:8080"). The framework is not part
// of it: one backend registers once for a VIP label.
func KeyOf(spec vip.Spec, backend netip.AddrPort) string {
	return strings.ToLower(spec.String()) + " " + backend.String()
}

// Key identifies l among the registrations of this node; see KeyOf.
func (l Local) Key() string { return KeyOf(l.VIP, l.Backend) }

// Registration returns l as the cluster state carries it, with the given
// health. The Claim is left zero: the agent fills it.
func (l Local) Registration(h vip.Health) vip.Registration {
	return vip.Registration{
		VIP:         l.VIP,
		Framework:   l.Framework,
		Backend:     l.Backend,
		Weight:      l.Weight,
		Health:      h,
		Scheduler:   l.Scheduler,
		Persistence: l.Persistence,
		Public:      l.Public,
		PublicPort:  l.PublicPort,
	}
}

// HealthTarget returns the health check of l as a target for a
// health.Checker, keyed by l.Key(); false when l has no check.
func (l Local) HealthTarget() (health.Target, bool) {
	if l.Check.Kind == "" {
		return health.Target{}, false
	}
	return health.Target{
		Key:      l.Key(),
		Addr:     l.Backend,
		Kind:     l.Check.Kind,
		Path:     l.Check.Path,
		Interval: l.Check.Interval,
		Timeout:  l.Check.Timeout,
		Rise:     l.Check.Rise,
		Fall:     l.Check.Fall,
	}, true
}

// Entry returns l in its wire form, every field written out except the check
// parameters of a backend without a check, and check parameters that are zero
// (Parse reads those as the defaults). Parse gives l back.
func (l Local) Entry() Entry {
	w := l.Weight
	e := Entry{
		VIP:         l.VIP.String(),
		Backend:     l.Backend.String(),
		Framework:   l.Framework,
		Protocol:    string(l.VIP.Protocol),
		Weight:      &w,
		Scheduler:   l.Scheduler,
		Persistence: l.Persistence,
		Public:      l.Public,
		PublicPort:  int(l.PublicPort),
	}
	if l.Check.Kind != "" {
		e.Check = l.Check.String()
		if l.Check.Interval != 0 {
			e.CheckInterval = l.Check.Interval.String()
		}
		if l.Check.Timeout != 0 {
			e.CheckTimeout = l.Check.Timeout.String()
		}
		e.CheckRise = l.Check.Rise
		e.CheckFall = l.Check.Fall
	}
	return e
}

// problems is every problem Parse found in one Entry.
type problems []error

func (p problems) Error() string {
	parts := make([]string, len(p))
	for i, err := range p {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (p problems) Unwrap() []error { return p }

// Parse checks e and returns it as a Local with its defaults filled in. The
// error, if any, lists every problem, each naming its field and value:
// `backend "10.0.0.1": no port (want host:port)`.
func (e Entry) Parse() (Local, error) {
	var errs problems
	var l Local

	protocol := vip.Protocol(strings.ToLower(e.Protocol))
	if protocol != "" && protocol != vip.TCP && protocol != vip.UDP {
		errs = append(errs, fmt.Errorf("protocol %q: want \"tcp\" or \"udp\"", e.Protocol))
		protocol = ""
	}
	if e.VIP == "" {
		errs = append(errs, fmt.Errorf("vip: missing"))
	} else if spec, err := vip.ParseSpec(e.VIP); err != nil {
		errs = append(errs, err) // already says `vip "...": ...`
	} else {
		l.VIP = spec
		if protocol != "" {
			if strings.Contains(e.VIP, "://") && protocol != spec.Protocol {
				errs = append(errs, fmt.Errorf("protocol %q: the vip %q says %s", e.Protocol, e.VIP, spec.Protocol))
			}
			l.VIP.Protocol = protocol
		}
	}

	if e.Backend == "" {
		errs = append(errs, fmt.Errorf("backend: missing"))
	} else if backend, err := vip.ParseBackend(e.Backend); err != nil {
		errs = append(errs, err) // already says `backend "...": ...`
	} else {
		l.Backend = backend
	}

	if a := l.VIP.Addr; a.IsValid() {
		switch {
		case a.IsLoopback():
			errs = append(errs, fmt.Errorf("vip %q: %s is a loopback address: a VIP is reached from other hosts", e.VIP, a))
		case a.IsLinkLocalUnicast():
			errs = append(errs, fmt.Errorf("vip %q: %s is a link-local address: a VIP is reached from other networks", e.VIP, a))
		case a == limitedBroadcast:
			errs = append(errs, fmt.Errorf("vip %q: %s is the broadcast address", e.VIP, a))
		}
		if b := l.Backend.Addr(); b.IsValid() && a.Is4() != b.Is4() {
			errs = append(errs, fmt.Errorf("backend %q is %s but the vip %q is %s: an IP VIP's backends must be of its family", e.Backend, family(b), e.VIP, family(a)))
		}
	}
	if b := l.Backend.Addr(); b == limitedBroadcast {
		errs = append(errs, fmt.Errorf("backend %q: the broadcast address", e.Backend))
	}

	if e.Framework != "" {
		if err := checkFramework(e.Framework); err != nil {
			errs = append(errs, fmt.Errorf("framework %q: %w", e.Framework, err))
		}
	}
	if l.VIP.Named() {
		l.Framework = cmp.Or(e.Framework, vip.DefaultFramework)
	}

	l.Weight = DefaultWeight
	if e.Weight != nil {
		if *e.Weight > MaxWeight {
			errs = append(errs, fmt.Errorf("weight %d: above %d", *e.Weight, MaxWeight))
		}
		l.Weight = *e.Weight
	}

	l.Scheduler = cmp.Or(strings.ToLower(e.Scheduler), vip.DefaultScheduler)
	if !slices.Contains(Schedulers, l.Scheduler) {
		errs = append(errs, fmt.Errorf("scheduler %q: want one of %s", e.Scheduler, strings.Join(Schedulers, ", ")))
	}
	l.Persistence = e.Persistence
	l.Public = e.Public
	switch {
	case e.PublicPort < 0 || e.PublicPort > 65535:
		errs = append(errs, fmt.Errorf("public_port %d: want 1 to 65535 (or 0 for the VIP's port)", e.PublicPort))
	case e.PublicPort != 0 && !e.Public:
		errs = append(errs, fmt.Errorf("public_port %d: given without \"public\": true", e.PublicPort))
	default:
		l.PublicPort = uint16(e.PublicPort)
	}

	check, checkErrs := e.parseCheck()
	l.Check = check
	errs = append(errs, checkErrs...)

	if len(errs) > 0 {
		return Local{}, errs
	}
	return l, nil
}

// limitedBroadcast is IPv4's broadcast address.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// parseCheck reads the check fields of e.
func (e Entry) parseCheck() (Check, []error) {
	var errs []error
	kind, path, err := ParseCheck(e.Check)
	if err != nil {
		return Check{}, []error{err}
	}
	if kind == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"check_interval", e.CheckInterval != ""},
			{"check_timeout", e.CheckTimeout != ""},
			{"check_rise", e.CheckRise != 0},
			{"check_fall", e.CheckFall != 0},
		} {
			if f.set {
				errs = append(errs, fmt.Errorf("%s: given without a check", f.name))
			}
		}
		return Check{}, errs
	}
	c := Check{Kind: kind, Path: path, Interval: health.DefaultInterval, Timeout: health.DefaultTimeout, Rise: health.DefaultRise, Fall: health.DefaultFall}
	intervalOK := true
	if e.CheckInterval != "" {
		d, err := time.ParseDuration(e.CheckInterval)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("check_interval %q: not a duration (want \"1s\", \"500ms\")", e.CheckInterval))
			intervalOK = false
		case d < MinCheckInterval || d > MaxCheckInterval:
			errs = append(errs, fmt.Errorf("check_interval %q: want %s to %s", e.CheckInterval, MinCheckInterval, MaxCheckInterval))
			intervalOK = false
		default:
			c.Interval = d
		}
	}
	if e.CheckTimeout != "" {
		d, err := time.ParseDuration(e.CheckTimeout)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("check_timeout %q: not a duration (want \"1s\", \"500ms\")", e.CheckTimeout))
		case d < MinCheckTimeout:
			errs = append(errs, fmt.Errorf("check_timeout %q: below %s", e.CheckTimeout, MinCheckTimeout))
		default:
			c.Timeout = d
		}
	}
	if intervalOK && c.Timeout > c.Interval {
		errs = append(errs, fmt.Errorf("check_timeout %s: longer than check_interval %s", c.Timeout, c.Interval))
	}
	for _, f := range []struct {
		name string
		val  int
		dst  *int
	}{
		{"check_rise", e.CheckRise, &c.Rise},
		{"check_fall", e.CheckFall, &c.Fall},
	} {
		switch {
		case f.val == 0:
		case f.val < 1 || f.val > MaxCheckThreshold:
			errs = append(errs, fmt.Errorf("%s %d: want 1 to %d", f.name, f.val, MaxCheckThreshold))
		default:
			*f.dst = f.val
		}
	}
	return c, errs
}

// checkFramework checks that a framework name can be a DNS label: 1 to 63
// letters, digits, '-' or '_'.
func checkFramework(f string) error {
	if len(f) > 63 {
		return fmt.Errorf("%d characters; a DNS label has at most 63", len(f))
	}
	for _, r := range f {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("character %q cannot stand in a DNS label", r)
		}
	}
	return nil
}

// Merge joins sets of registrations into one, sorted by key. When a key is
// in more than one set, the earliest set wins and the others' registrations
// are returned as shadowed, in the order met.
func Merge(sets ...[]Local) (merged, shadowed []Local) {
	seen := map[string]bool{}
	for _, set := range sets {
		for _, l := range set {
			k := l.Key()
			if seen[k] {
				shadowed = append(shadowed, l)
				continue
			}
			seen[k] = true
			merged = append(merged, l)
		}
	}
	sortLocals(merged)
	return merged, shadowed
}

// sortLocals sorts ls by key.
func sortLocals(ls []Local) {
	type keyed struct {
		key   string
		local Local
	}
	ks := make([]keyed, len(ls))
	for i, l := range ls {
		ks[i] = keyed{l.Key(), l}
	}
	slices.SortFunc(ks, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	for i, k := range ks {
		ls[i] = k.local
	}
}
