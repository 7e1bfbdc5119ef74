package docker

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// The labels a container carries to be published. LabelVIP and LabelCheck
// are prefixes: the container port (and "/udp" for a UDP port) follows.
const (
	LabelPrefix      = "l4lb."
	LabelVIP         = "l4lb.vip."   // l4lb.vip.<port>[/udp]=<VIP spec>[,<VIP spec>...]
	LabelCheck       = "l4lb.check." // l4lb.check.<port>[/udp]=tcp|http:///PATH|none
	LabelFramework   = "l4lb.framework"
	LabelWeight      = "l4lb.weight"
	LabelScheduler   = "l4lb.scheduler"
	LabelPersistence = "l4lb.persistence"
	LabelPublic      = "l4lb.public"
	LabelNetwork     = "l4lb.network"
)

// Limits of the label parser.
const (
	maxLabelValue  = 4096 // bytes of one l4lb.* label's value
	maxVIPsPerPort = 64
	maxNetworkName = 255
)

// Port is what a container's labels ask for one of its ports.
type Port struct {
	// Port is the container port, 1 to 65535; Protocol is TCP unless the
	// label key ended in "/udp".
	Port     uint16
	Protocol vip.Protocol
	// VIPs are the VIPs the port is a backend of, in label order, each with
	// Protocol set.
	VIPs []vip.Spec
	// Check is l4lb's own health check of the port, from l4lb.check.<port>;
	// its Kind is "" when there is none.
	Check source.Check
}

// Key is the port as Docker writes it: "8080/tcp", "53/udp".
func (p Port) Key() string { return strconv.Itoa(int(p.Port)) + "/" + string(p.Protocol) }

// Labels is what a container's l4lb.* labels ask for, checked.
type Labels struct {
	// Ports are sorted by port, then protocol; never empty.
	Ports       []Port
	Framework   string  // l4lb.framework; "" for the default
	Weight      *uint32 // l4lb.weight; nil for the default
	Scheduler   string  // l4lb.scheduler, lower-cased; "" for the default
	Persistence uint32  // l4lb.persistence, seconds
	// Public is l4lb.public ("true" or "false"): public nodes serve the
	// container's VIPs on their own addresses, at the VIP's port
	// (source.Local.Public).
	Public bool
	// Network is l4lb.network: the Docker network whose address of the
	// container is the backend's, as other nodes reach it.
	Network string
}

// ParseLabels reads a container's labels. It returns ok false, and no
// error, when the container has no l4lb.* label at all: it is not meant to
// be published. Otherwise every problem is reported at once, sorted, each
// naming its label: `label l4lb.vip.80x: port "80x": not a number from 1 to
// 65535; label l4lb.wieght: unknown (known: ...)`. Labels outside the l4lb.
// prefix are ignored.
func ParseLabels(labels map[string]string) (l Labels, ok bool, err error) {
	keys := make([]string, 0, 8)
	for k := range labels {
		if strings.HasPrefix(k, LabelPrefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return Labels{}, false, nil
	}
	slices.Sort(keys)

	var errs problems
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("label %s: %s", key, fmt.Sprintf(format, args...)))
	}
	ports := map[string]*Port{}         // by Port.Key()
	checks := map[string]source.Check{} // by Port.Key()
	checkKeys := map[string]string{}    // Port.Key() -> label key, for errors
	portKeys := map[string]string{}     // Port.Key() -> label key, for duplicates
	for _, key := range keys {
		value := labels[key]
		if len(value) > maxLabelValue {
			bad(key, "value of %d bytes; at most %d", len(value), maxLabelValue)
			continue
		}
		switch {
		case strings.HasPrefix(key, LabelVIP):
			port, proto, perr := parsePortKey(key[len(LabelVIP):])
			if perr != nil {
				bad(key, "%v", perr)
				continue
			}
			p := Port{Port: port, Protocol: proto}
			if prev, dup := portKeys[p.Key()]; dup {
				bad(key, "port %s is also given by label %s", p.Key(), prev)
				continue
			}
			portKeys[p.Key()] = key
			vips, verrs := parseVIPList(value, proto)
			for _, e := range verrs {
				bad(key, "%v", e)
			}
			if len(verrs) > 0 {
				continue
			}
			p.VIPs = vips
			ports[p.Key()] = &p
		case strings.HasPrefix(key, LabelCheck):
			port, proto, perr := parsePortKey(key[len(LabelCheck):])
			if perr != nil {
				bad(key, "%v", perr)
				continue
			}
			pk := Port{Port: port, Protocol: proto}.Key()
			if prev, dup := checkKeys[pk]; dup {
				bad(key, "port %s is also given by label %s", pk, prev)
				continue
			}
			checkKeys[pk] = key
			kind, path, cerr := source.ParseCheck(value)
			if cerr != nil {
				bad(key, "%v", cerr)
				continue
			}
			if kind != "" && proto == vip.UDP {
				bad(key, "a %s check cannot check a UDP port", kind)
				continue
			}
			c, cerr := checkWithDefaults(kind, path)
			if cerr != nil {
				bad(key, "%v", cerr)
				continue
			}
			checks[pk] = c
		case key == LabelFramework:
			if err := checkFramework(value); err != nil {
				bad(key, "%v", err)
				continue
			}
			l.Framework = value
		case key == LabelWeight:
			w, werr := parseUint(value, source.MaxWeight)
			if werr != nil {
				bad(key, "%v", werr)
				continue
			}
			w32 := uint32(w)
			l.Weight = &w32
		case key == LabelScheduler:
			s := strings.ToLower(value)
			if !slices.Contains(source.Schedulers, s) {
				bad(key, "scheduler %q: want one of %s", value, strings.Join(source.Schedulers, ", "))
				continue
			}
			l.Scheduler = s
		case key == LabelPersistence:
			p, perr := parseUint(value, 1<<32-1)
			if perr != nil {
				bad(key, "%v (seconds of client affinity)", perr)
				continue
			}
			l.Persistence = uint32(p)
		case key == LabelPublic:
			switch value {
			case "true":
				l.Public = true
			case "false":
				l.Public = false
			default:
				bad(key, "%q: want \"true\" or \"false\"", value)
			}
		case key == LabelNetwork:
			if err := checkNetworkName(value); err != nil {
				bad(key, "%v", err)
				continue
			}
			l.Network = value
		default:
			bad(key, "unknown (known: %s<port>[/udp], %s<port>[/udp], %s, %s, %s, %s, %s, %s)",
				LabelVIP, LabelCheck, LabelFramework, LabelWeight, LabelScheduler, LabelPersistence, LabelPublic, LabelNetwork)
		}
	}
	for pk, c := range checks {
		p, found := ports[pk]
		if !found {
			if _, declared := portKeys[pk]; !declared {
				bad(checkKeys[pk], "no label %s%s gives port %s a VIP", LabelVIP, strings.TrimSuffix(pk, "/tcp"), pk)
			}
			continue
		}
		p.Check = c
	}
	if len(portKeys) == 0 {
		errs = append(errs, fmt.Errorf("no label %s<port> says which VIP the container serves, though it has l4lb labels (%s)", LabelVIP, strings.Join(keys, ", ")))
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return Labels{}, true, errs
	}
	for _, p := range ports {
		l.Ports = append(l.Ports, *p)
	}
	slices.SortFunc(l.Ports, func(a, b Port) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(string(a.Protocol), string(b.Protocol))
	})
	return l, true, nil
}

// parsePortKey reads what follows "l4lb.vip." or "l4lb.check.": "8080",
// "8080/tcp" or "53/udp".
func parsePortKey(s string) (uint16, vip.Protocol, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	p := vip.TCP
	if hasProto {
		switch proto {
		case "tcp":
		case "udp":
			p = vip.UDP
		default:
			return 0, "", fmt.Errorf("protocol %q: want tcp or udp, lower-case", proto)
		}
	}
	port, err := parseUint(num, 65535)
	if err != nil || port == 0 {
		return 0, "", fmt.Errorf("port %q: want the container port, a number from 1 to 65535", num)
	}
	return uint16(port), p, nil
}

// parseUint reads a decimal number from 0 to max, without sign, spaces or
// leading zeros.
func parseUint(s string, max uint64) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty; want a number from 0 to %d", max)
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q: leading zero", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q: want a number from 0 to %d", s, max)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("%q: above %d", s, max)
	}
	return n, nil
}

// parseVIPList reads "<VIP spec>[,<VIP spec>...]" for a port of protocol
// proto.
func parseVIPList(value string, proto vip.Protocol) ([]vip.Spec, []error) {
	if strings.TrimSpace(value) == "" {
		return nil, []error{fmt.Errorf("empty; want a VIP such as /app:80")}
	}
	parts := strings.Split(value, ",")
	if len(parts) > maxVIPsPerPort {
		return nil, []error{fmt.Errorf("%d VIPs; at most %d", len(parts), maxVIPsPerPort)}
	}
	var errs []error
	var specs []vip.Spec
	seen := map[string]int{}
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			errs = append(errs, fmt.Errorf("VIP %d is empty (a stray comma?)", i+1))
			continue
		}
		spec, err := vip.ParseSpec(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.Contains(part, "://") {
			if spec.Protocol != proto {
				errs = append(errs, fmt.Errorf("vip %q is %s but the port is %s (write the port as <port>/%s)", part, spec.Protocol, proto, spec.Protocol))
				continue
			}
		}
		spec.Protocol = proto
		k := strings.ToLower(spec.String())
		if j, dup := seen[k]; dup {
			errs = append(errs, fmt.Errorf("vip %q is given twice (VIPs %d and %d)", part, j, i+1))
			continue
		}
		seen[k] = i + 1
		specs = append(specs, spec)
	}
	return specs, errs
}

// checkWithDefaults returns a label's check with the health package's
// defaults, as source.Entry.Parse would give it.
func checkWithDefaults(kind health.Kind, path string) (source.Check, error) {
	if kind == "" {
		return source.Check{}, nil
	}
	e := source.Entry{VIP: "/x:1", Backend: "192.0.2.1:1", Check: string(kind)}
	if kind == health.HTTP {
		e.Check = "http://" + path
	}
	l, err := e.Parse()
	if err != nil {
		return source.Check{}, err
	}
	return l.Check, nil
}

// checkFramework checks that a framework name can stand in a DNS label, as
// source.Entry.Parse does.
func checkFramework(f string) error {
	if f == "" {
		return fmt.Errorf("empty; want a framework name such as marathon")
	}
	_, err := source.Entry{VIP: "/x:1", Backend: "192.0.2.1:1", Framework: f}.Parse()
	return err
}

// checkNetworkName checks a Docker network name: a letter or digit, then
// letters, digits, '_', '.' or '-'.
func checkNetworkName(n string) error {
	if n == "" || len(n) > maxNetworkName {
		return fmt.Errorf("network name %q: want 1 to %d characters", n, maxNetworkName)
	}
	for i, r := range n {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return fmt.Errorf("network name %q: character %q cannot stand there", n, r)
		}
	}
	return nil
}

// Locals returns the registrations the labels ask for, each port's backend
// address given by addr (false: the port is left out). Every Local is built
// through source.Entry.Parse, so it obeys the same rules as the API's.
func (l Labels) Locals(addr func(Port) (netip.AddrPort, bool)) ([]source.Local, error) {
	var out []source.Local
	var errs problems
	for _, p := range l.Ports {
		backend, ok := addr(p)
		if !ok {
			continue
		}
		for _, spec := range p.VIPs {
			e := source.Entry{
				VIP:         spec.String(),
				Backend:     backend.String(),
				Framework:   l.Framework,
				Protocol:    string(p.Protocol),
				Weight:      l.Weight,
				Scheduler:   l.Scheduler,
				Persistence: l.Persistence,
				Public:      l.Public,
			}
			local, err := e.Parse()
			if err != nil {
				errs = append(errs, fmt.Errorf("port %s, vip %s: %w", p.Key(), spec, err))
				continue
			}
			local.Check = p.Check
			out = append(out, local)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// problems is every problem found in one container's labels.
type problems []error

func (p problems) Error() string {
	parts := make([]string, len(p))
	for i, err := range p {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (p problems) Unwrap() []error { return p }
