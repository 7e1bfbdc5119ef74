package vip

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func mustSpec(s string) Spec {
	spec, err := ParseSpec(s)
	if err != nil {
		panic(err)
	}
	return spec
}

func mustBackend(s string) netip.AddrPort {
	ap, err := ParseBackend(s)
	if err != nil {
		panic(err)
	}
	return ap
}

// reg is a healthy registration of weight 1; opts change it.
func reg(spec, backend string, opts ...func(*Registration)) Registration {
	r := Registration{VIP: mustSpec(spec), Backend: mustBackend(backend), Weight: 1, Health: Healthy}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func withHealth(h Health) func(*Registration) { return func(r *Registration) { r.Health = h } }
func withWeight(w uint32) func(*Registration) { return func(r *Registration) { r.Weight = w } }
func withScheduler(s string) func(*Registration) {
	return func(r *Registration) { r.Scheduler = s }
}
func withPublic(port uint16) func(*Registration) {
	return func(r *Registration) { r.Public, r.PublicPort = true, port }
}

func withPersistence(p uint32) func(*Registration) {
	return func(r *Registration) { r.Persistence = p }
}
func withFramework(f string) func(*Registration) { return func(r *Registration) { r.Framework = f } }
func withClaim(addr string, since time.Time) func(*Registration) {
	return func(r *Registration) { r.Claim = Claim{Addr: netip.MustParseAddr(addr), Since: since} }
}

func node(name string, regs ...Registration) NodeState { return NodeState{Node: name, Backends: regs} }

// hashedV4 computes, independently of the allocator, where probing starts
// for "framework/name" in an IPv4 prefix: FNV-1a 64 modulo the usable
// addresses, counted from the one after the network address.
func hashedV4(p netip.Prefix, framework, name string) netip.Addr {
	h := fnv.New64a()
	h.Write([]byte(framework + "/" + name))
	size := uint64(1)<<(32-p.Bits()) - 2
	base := p.Masked().Addr().As4()
	n := binary.BigEndian.Uint32(base[:]) + 1 + uint32(h.Sum64()%size)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// hashedV6 is hashedV4 for an IPv6 /64 whose low 64 bits are zero.
func hashedV6(p netip.Prefix, framework, name string) netip.Addr {
	h := fnv.New64a()
	h.Write([]byte(framework + "/" + name))
	b := p.Masked().Addr().As16()
	binary.BigEndian.PutUint64(b[8:], 1+h.Sum64()%(1<<64-1))
	return netip.AddrFrom16(b)
}

func key(addr string, port uint16, proto Protocol) ServiceKey {
	return ServiceKey{Addr: netip.MustParseAddr(addr), Port: port, Protocol: proto}
}

func TestConfigWithDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{Domain: DefaultDomain, V4: netip.MustParsePrefix("11.0.0.0/8"), V6: netip.MustParsePrefix("fd01:c::/64")}
	if got != want {
		t.Fatalf("Config{}.WithDefaults() = %+v, want %+v", got, want)
	}
	own := Config{Domain: "example.org", V4: netip.MustParsePrefix("198.51.100.7/24")}.WithDefaults()
	if own.Domain != "example.org" || own.V4 != netip.MustParsePrefix("198.51.100.0/24") || own.V6 != want.V6 {
		t.Fatalf("WithDefaults kept %+v", own)
	}
}

func TestBuildNamedVIP(t *testing.T) {
	v4 := netip.MustParsePrefix("11.0.0.0/8")
	addr := hashedV4(v4, "marathon", "/dcos-101/app2")
	state := ClusterState{
		node("agent-2", reg("/dcos-101/app2:10000", "10.0.0.2:31000", withWeight(3))),
		node("agent-1", reg("/dcos-101/app2:10000", "10.0.0.1:31000")),
	}
	got := Build(Config{}, state)
	want := &Table{VIPs: []VIP{{
		ServiceKey: ServiceKey{Addr: addr, Port: 10000, Protocol: TCP},
		Label:      "/dcos-101/app2:10000",
		Name:       "/dcos-101/app2",
		Framework:  "marathon",
		Names: []string{
			"app2.dcos-101.marathon.l4lb.thisdcos.directory.",
			"dcos-101app2.marathon.l4lb.thisdcos.directory.",
		},
		Scheduler: DefaultScheduler,
		Backends: []Backend{
			{Addr: mustBackend("10.0.0.1:31000"), Weight: 1, Node: "agent-1", Health: Healthy},
			{Addr: mustBackend("10.0.0.2:31000"), Weight: 3, Node: "agent-2", Health: Healthy},
		},
	}}}
	if !sameContent(got, want) {
		t.Fatalf("Build =\n%+v\nwant\n%+v", got, want)
	}
	if !got.Equal(want) {
		t.Fatal("Equal says the tables differ")
	}
	if v, ok := got.Find(want.VIPs[0].ServiceKey); !ok || v.Label != "/dcos-101/app2:10000" {
		t.Fatalf("Find = %+v, %v", v, ok)
	}
	if _, ok := got.Find(ServiceKey{Addr: addr, Port: 10001, Protocol: TCP}); ok {
		t.Fatal("Find found a VIP on a port nobody registered")
	}
}

func TestBuildAddressIdentity(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("11.0.0.0/8"), netip.MustParsePrefix("fd01:c::/64")
	t.Run("all ports and protocols of a name share one address", func(t *testing.T) {
		tab := Build(Config{}, ClusterState{node("a",
			reg("/web:80", "10.0.0.1:1"),
			reg("/web:443", "10.0.0.1:2"),
			reg("udp:///web:53", "10.0.0.1:3"),
		)})
		want := hashedV4(v4, "marathon", "/web")
		if len(tab.VIPs) != 3 || len(tab.Errors) != 0 {
			t.Fatalf("table %+v", tab)
		}
		for _, v := range tab.VIPs {
			if v.Addr != want {
				t.Errorf("%s at %s, want %s", v.Label, v.Addr, want)
			}
		}
		wantKeys := []ServiceKey{{want, 53, UDP}, {want, 80, TCP}, {want, 443, TCP}}
		for i, v := range tab.VIPs {
			if v.ServiceKey != wantKeys[i] {
				t.Errorf("VIP %d is %+v, want %+v (sorted by port, then protocol)", i, v.ServiceKey, wantKeys[i])
			}
		}
	})
	t.Run("the family follows the backend", func(t *testing.T) {
		tab := Build(Config{}, ClusterState{node("a",
			reg("/web:80", "10.0.0.1:80"),
			reg("/web:80", "[fd00::1]:80"),
		)})
		if len(tab.VIPs) != 2 {
			t.Fatalf("want one IPv4 and one IPv6 VIP, got %+v", tab)
		}
		if a := tab.VIPs[0]; a.Addr != hashedV4(v4, "marathon", "/web") || a.Backends[0].Addr.Addr().Is6() {
			t.Errorf("IPv4 VIP %+v", a)
		}
		if a := tab.VIPs[1]; a.Addr != hashedV6(v6, "marathon", "/web") || !a.Backends[0].Addr.Addr().Is6() {
			t.Errorf("IPv6 VIP %+v", a)
		}
	})
	t.Run("frameworks are distinct names", func(t *testing.T) {
		tab := Build(Config{}, ClusterState{node("a",
			reg("/web:80", "10.0.0.1:80"),
			reg("/web:80", "10.0.0.2:80", withFramework("kubernetes")),
		)})
		if len(tab.VIPs) != 2 || tab.VIPs[0].Addr == tab.VIPs[1].Addr {
			t.Fatalf("want two VIPs at two addresses, got %+v", tab)
		}
		for _, v := range tab.VIPs {
			if want := hashedV4(v4, v.Framework, "/web"); v.Addr != want {
				t.Errorf("%s (%s) at %s, want %s", v.Label, v.Framework, v.Addr, want)
			}
		}
	})
	t.Run("names and frameworks are case-insensitive", func(t *testing.T) {
		tab := Build(Config{}, ClusterState{
			node("a", reg("/Web:80", "10.0.0.1:80", withFramework("Marathon"))),
			node("b", reg("/web:80", "10.0.0.2:80")),
		})
		if len(tab.VIPs) != 1 {
			t.Fatalf("want one VIP, got %+v", tab)
		}
		v := tab.VIPs[0]
		if v.Name != "/Web" || v.Label != "/Web:80" || v.Framework != "marathon" || len(v.Backends) != 2 {
			t.Fatalf("VIP %+v", v)
		}
		if v.Addr != hashedV4(v4, "marathon", "/web") {
			t.Fatalf("address %s is not from the lower-cased identity", v.Addr)
		}
		if !slices.Equal(v.Names, []string{"web.marathon.l4lb.thisdcos.directory."}) {
			t.Fatalf("names %q", v.Names)
		}
	})
	t.Run("own domain", func(t *testing.T) {
		tab := Build(Config{Domain: "example.org."}, ClusterState{node("a", reg("/g/web:80", "10.0.0.1:80"))})
		want := []string{"web.g.marathon.example.org.", "gweb.marathon.example.org."}
		if len(tab.VIPs) != 1 || !slices.Equal(tab.VIPs[0].Names, want) {
			t.Fatalf("table %+v, want names %q", tab, want)
		}
	})
}

func TestBuildHealth(t *testing.T) {
	state := ClusterState{
		node("a", reg("/web:80", "10.0.0.1:80", withWeight(5))),
		node("b", reg("/web:80", "10.0.0.2:80", withWeight(5), withHealth(Draining))),
		node("c", reg("/web:80", "10.0.0.3:80", withHealth(Unhealthy))),
		node("d", reg("/web:80", "10.0.0.4:80", withWeight(0))),
		node("e", reg("/sick:80", "10.0.0.5:80", withHealth(Unhealthy))),
		node("f", reg("/web:80", "10.0.0.6:80", withHealth(""))),
	}
	tab := Build(Config{}, state)
	if len(tab.Errors) != 0 {
		t.Fatalf("errors %q", tab.Errors)
	}
	web, ok := findByLabel(tab, "/web:80")
	if !ok {
		t.Fatal("no /web:80")
	}
	want := []Backend{
		{Addr: mustBackend("10.0.0.1:80"), Weight: 5, Node: "a", Health: Healthy},
		{Addr: mustBackend("10.0.0.2:80"), Weight: 0, Node: "b", Health: Draining},
		{Addr: mustBackend("10.0.0.4:80"), Weight: 0, Node: "d", Health: Healthy},
		{Addr: mustBackend("10.0.0.6:80"), Weight: 1, Node: "f", Health: Healthy},
	}
	if !slices.Equal(web.Backends, want) {
		t.Fatalf("backends\n got %+v\nwant %+v", web.Backends, want)
	}
	sick, ok := findByLabel(tab, "/sick:80")
	if !ok {
		t.Fatal("a VIP whose backends are all unhealthy left the table")
	}
	if len(sick.Backends) != 0 || sick.Addr != hashedV4(DefaultV4Range, "marathon", "/sick") {
		t.Fatalf("sick VIP %+v", sick)
	}
}

func findByLabel(t *Table, label string) (VIP, bool) {
	for _, v := range t.VIPs {
		if v.Label == label {
			return v, true
		}
	}
	return VIP{}, false
}

func TestBuildConflicts(t *testing.T) {
	cases := []struct {
		name            string
		state           ClusterState
		wantScheduler   string
		wantPersistence uint32
		wantPublic      uint16
		wantBackends    []string // "addr@node"
		wantConflicts   []string
	}{
		{
			name: "agreement: no conflict, default scheduler",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80")),
				node("b", reg("/web:80", "10.0.0.2:80", withScheduler(DefaultScheduler))),
			},
			wantScheduler: DefaultScheduler,
			wantBackends:  []string{"10.0.0.1:80@a", "10.0.0.2:80@b"},
		},
		{
			name: "the most asked-for scheduler wins",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withScheduler("rr"))),
				node("b", reg("/web:80", "10.0.0.2:80", withScheduler("wlc")), reg("/web:80", "10.0.0.3:80")),
			},
			wantScheduler: "wlc",
			wantBackends:  []string{"10.0.0.1:80@a", "10.0.0.2:80@b", "10.0.0.3:80@b"},
			wantConflicts: []string{"scheduler: wlc (2 backends) over rr (1 backend)"},
		},
		{
			name: "scheduler tie goes to the smallest, unhealthy backends vote",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withScheduler("sh"))),
				node("b", reg("/web:80", "10.0.0.2:80", withScheduler("rr"), withHealth(Unhealthy))),
				node("c", reg("/web:80", "10.0.0.3:80", withScheduler("wrr"))),
			},
			wantScheduler: "rr",
			wantBackends:  []string{"10.0.0.1:80@a", "10.0.0.3:80@c"},
			wantConflicts: []string{"scheduler: rr (1 backend) over sh (1 backend), wrr (1 backend)"},
		},
		{
			name: "persistence: most asked-for, ties to the smallest",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withPersistence(300))),
				node("b", reg("/web:80", "10.0.0.2:80", withPersistence(60))),
			},
			wantScheduler:   DefaultScheduler,
			wantPersistence: 60,
			wantBackends:    []string{"10.0.0.1:80@a", "10.0.0.2:80@b"},
			wantConflicts:   []string{"persistence: 60 (1 backend) over 300 (1 backend)"},
		},
		{
			name: "public: the VIP's port by default, agreed",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withPublic(0))),
				node("b", reg("/web:80", "10.0.0.2:80", withPublic(80))),
			},
			wantScheduler: DefaultScheduler,
			wantPublic:    80,
			wantBackends:  []string{"10.0.0.1:80@a", "10.0.0.2:80@b"},
		},
		{
			name: "public port: most asked-for wins, a port without public is not public",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withPublic(10000))),
				node("b", reg("/web:80", "10.0.0.2:80", withPublic(10000)), reg("/web:80", "10.0.0.3:80", func(r *Registration) { r.PublicPort = 9 })),
			},
			wantScheduler: DefaultScheduler,
			wantPublic:    10000,
			wantBackends:  []string{"10.0.0.1:80@a", "10.0.0.2:80@b", "10.0.0.3:80@b"},
			wantConflicts: []string{"public port: 10000 (2 backends) over none (1 backend)"},
		},
		{
			name: "public port tie goes to the smallest: not public",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withPublic(10000))),
				node("b", reg("/web:80", "10.0.0.2:80")),
			},
			wantScheduler: DefaultScheduler,
			wantBackends:  []string{"10.0.0.1:80@a", "10.0.0.2:80@b"},
			wantConflicts: []string{"public port: none (1 backend) over 10000 (1 backend)"},
		},
		{
			name: "same backend from two nodes: the smallest node name keeps it",
			state: ClusterState{
				node("b", reg("/web:80", "10.0.0.1:80", withWeight(7))),
				node("a", reg("/web:80", "10.0.0.1:80", withWeight(2))),
			},
			wantScheduler: DefaultScheduler,
			wantBackends:  []string{"10.0.0.1:80@a"},
			wantConflicts: []string{`backend 10.0.0.1:80: node "a" over node "b"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := Build(Config{}, tc.state)
			if len(tab.VIPs) != 1 || len(tab.Errors) != 0 {
				t.Fatalf("table %+v", tab)
			}
			v := tab.VIPs[0]
			var backends []string
			for _, b := range v.Backends {
				backends = append(backends, b.Addr.String()+"@"+b.Node)
			}
			if v.Scheduler != tc.wantScheduler || v.Persistence != tc.wantPersistence || v.PublicPort != tc.wantPublic ||
				!slices.Equal(backends, tc.wantBackends) || !slices.Equal(v.Conflicts, tc.wantConflicts) {
				t.Fatalf("got scheduler %q persistence %d backends %q conflicts %q\nwant scheduler %q persistence %d backends %q conflicts %q",
					v.Scheduler, v.Persistence, backends, v.Conflicts,
					tc.wantScheduler, tc.wantPersistence, tc.wantBackends, tc.wantConflicts)
			}
		})
	}
}

func TestBuildIPVIPs(t *testing.T) {
	v4 := netip.MustParsePrefix("11.0.0.0/8")
	web := hashedV4(v4, "marathon", "/web")
	t.Run("used as given", func(t *testing.T) {
		tab := Build(Config{}, ClusterState{node("a",
			reg("11.1.1.1:80", "10.0.0.1:80"),
			reg("[fd01:c::1]:80", "[fd00::1]:80"),
		)})
		if len(tab.VIPs) != 2 || len(tab.Errors) != 0 {
			t.Fatalf("table %+v", tab)
		}
		if v := tab.VIPs[0]; v.ServiceKey != key("11.1.1.1", 80, TCP) || v.Label != "11.1.1.1:80" || v.Name != "" || v.Names != nil {
			t.Fatalf("IPv4 VIP %+v", v)
		}
		if v := tab.VIPs[1]; v.ServiceKey != key("fd01:c::1", 80, TCP) || v.Label != "[fd01:c::1]:80" {
			t.Fatalf("IPv6 VIP %+v", v)
		}
	})
	t.Run("backend of the other family is left out", func(t *testing.T) {
		tab := Build(Config{}, ClusterState{node("a",
			reg("11.1.1.1:80", "10.0.0.1:80"),
			reg("11.1.1.1:80", "[fd00::1]:80"),
		)})
		if len(tab.VIPs) != 1 || len(tab.VIPs[0].Backends) != 1 {
			t.Fatalf("table %+v", tab)
		}
		want := []string{`node "a": 11.1.1.1:80 backend [fd00::1]:80: backend is IPv6 but the VIP is IPv4: an IP VIP's backends must be of its family`}
		if !slices.Equal(tab.Errors, want) {
			t.Fatalf("errors\n got %q\nwant %q", tab.Errors, want)
		}
	})
	t.Run("a named VIP keeps its service key over an IP VIP", func(t *testing.T) {
		ip := web.String() + ":80"
		tab := Build(Config{}, ClusterState{
			node("a", reg("/web:80", "10.0.0.1:80", withClaim(web.String(), t0))),
			node("b", reg(ip, "10.0.0.2:80"), reg(web.String()+":81", "10.0.0.3:80")),
		})
		if len(tab.VIPs) != 2 {
			t.Fatalf("table %+v", tab)
		}
		if v := tab.VIPs[0]; v.Label != "/web:80" || v.Backends[0].Node != "a" {
			t.Fatalf("port 80 went to %+v", v)
		}
		if v := tab.VIPs[1]; v.Label != web.String()+":81" {
			t.Fatalf("the IP VIP on another port must stay: %+v", v)
		}
		want := []string{"vip " + ip + ": left out: named VIP /web (marathon) holds " + ip}
		if !slices.Equal(tab.Errors, want) {
			t.Fatalf("errors\n got %q\nwant %q", tab.Errors, want)
		}
	})
	t.Run("names without a claim do not probe onto an IP VIP's address", func(t *testing.T) {
		next := web.Next()
		tab := Build(Config{}, ClusterState{
			node("a", reg("/web:80", "10.0.0.1:80")),
			node("b", reg(web.String()+":443", "10.0.0.2:80")),
		})
		v, ok := findByLabel(tab, "/web:80")
		if !ok || v.Addr != next {
			t.Fatalf("/web at %s, want %s (the address after the IP VIP's); table %+v", v.Addr, next, tab)
		}
	})
}

func TestBuildClaims(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/24")}
	at := func(tab *Table, label string) string {
		v, ok := findByLabel(tab, label)
		if !ok {
			return "absent"
		}
		return v.Addr.String()
	}
	cases := []struct {
		name  string
		state ClusterState
		want  map[string]string // label -> address
	}{
		{
			name:  "a claim inside the range is honoured",
			state: ClusterState{node("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.77", t0)))},
			want:  map[string]string{"/web:80": "11.0.0.77"},
		},
		{
			name:  "a claim outside the range is not",
			state: ClusterState{node("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.1.77", t0)))},
			want:  map[string]string{"/web:80": hashedV4(cfg.V4, "marathon", "/web").String()},
		},
		{
			name:  "the network address is not usable",
			state: ClusterState{node("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.0", t0)))},
			want:  map[string]string{"/web:80": hashedV4(cfg.V4, "marathon", "/web").String()},
		},
		{
			name:  "the broadcast address is not usable",
			state: ClusterState{node("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.255", t0)))},
			want:  map[string]string{"/web:80": hashedV4(cfg.V4, "marathon", "/web").String()},
		},
		{
			name:  "a claim of the other family is no claim",
			state: ClusterState{node("a", reg("/web:80", "10.0.0.1:80", withClaim("fd01:c::5", t0)))},
			want:  map[string]string{"/web:80": hashedV4(cfg.V4, "marathon", "/web").String()},
		},
		{
			name: "the earliest claim of a name's registrations wins",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.20", t0.Add(time.Minute)))),
				node("b", reg("/web:80", "10.0.0.2:80", withClaim("11.0.0.10", t0))),
			},
			want: map[string]string{"/web:80": "11.0.0.10"},
		},
		{
			name: "equal Since: the smallest claimed address wins",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.20", t0))),
				node("b", reg("/web:80", "10.0.0.2:80", withClaim("11.0.0.10", t0))),
			},
			want: map[string]string{"/web:80": "11.0.0.10"},
		},
		{
			name: "two names claim one address: the earlier claim keeps it, the other probes",
			state: ClusterState{
				node("a", reg("/late:80", "10.0.0.1:80", withClaim("11.0.0.9", t0.Add(time.Second)))),
				node("b", reg("/early:80", "10.0.0.2:80", withClaim("11.0.0.9", t0))),
			},
			want: map[string]string{"/early:80": "11.0.0.9", "/late:80": hashedV4(cfg.V4, "marathon", "/late").String()},
		},
		{
			name: "two names claim one address at the same time: the smaller name keeps it",
			state: ClusterState{
				node("a", reg("/bbb:80", "10.0.0.1:80", withClaim("11.0.0.9", t0))),
				node("b", reg("/aaa:80", "10.0.0.2:80", withClaim("11.0.0.9", t0))),
			},
			want: map[string]string{"/aaa:80": "11.0.0.9", "/bbb:80": hashedV4(cfg.V4, "marathon", "/bbb").String()},
		},
		{
			name: "a claimed name takes its address even where an unclaimed name hashes",
			state: ClusterState{
				node("a", reg("/web:80", "10.0.0.1:80")),
				node("b", reg("/api:80", "10.0.0.2:80", withClaim(hashedV4(cfg.V4, "marathon", "/web").String(), t0))),
			},
			want: map[string]string{
				"/api:80": hashedV4(cfg.V4, "marathon", "/web").String(),
				"/web:80": hashedV4(cfg.V4, "marathon", "/web").Next().String(),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := Build(cfg, tc.state)
			if len(tab.Errors) != 0 {
				t.Fatalf("errors %q", tab.Errors)
			}
			for label, want := range tc.want {
				if got := at(tab, label); got != want {
					t.Errorf("%s at %s, want %s", label, got, want)
				}
			}
		})
	}
}

func TestBuildRangeFull(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/30")} // two usable addresses
	state := ClusterState{node("a",
		reg("/x:80", "10.0.0.1:80", withClaim("11.0.0.1", t0)),
		reg("/y:80", "10.0.0.1:81", withClaim("11.0.0.2", t0)),
		reg("/z:80", "10.0.0.1:82"),
		reg("/z:81", "10.0.0.1:83"),
	)}
	tab := Build(cfg, state)
	want := []string{"range 11.0.0.0/30 is full: /z (marathon) not placed"}
	if !slices.Equal(tab.Errors, want) {
		t.Fatalf("errors\n got %q\nwant %q", tab.Errors, want)
	}
	if len(tab.VIPs) != 2 || tab.VIPs[0].Label != "/x:80" || tab.VIPs[1].Label != "/y:80" {
		t.Fatalf("VIPs %+v", tab.VIPs)
	}
}

func TestBuildInvalidRegistrations(t *testing.T) {
	good := reg("/web:80", "10.0.0.1:80")
	cases := []struct {
		name string
		r    Registration
		want string
	}{
		{"zero port", Registration{VIP: Spec{Name: "/web"}, Backend: mustBackend("10.0.0.2:80")},
			`node "n": /web:0 backend 10.0.0.2:80: port "0" is not a port from 1 to 65535`},
		{"bad name", Registration{VIP: Spec{Name: "/a b", Port: 80}, Backend: mustBackend("10.0.0.2:80")},
			`node "n": /a b:80 backend 10.0.0.2:80: label "a b": character ' ' cannot stand in a DNS label`},
		{"unknown protocol", Registration{VIP: Spec{Protocol: "sctp", Name: "/web", Port: 80}, Backend: mustBackend("10.0.0.2:80")},
			`node "n": sctp:///web:80 backend 10.0.0.2:80: protocol "sctp": unknown scheme (want tcp:// or udp://)`},
		{"name and address", Registration{VIP: Spec{Name: "/web", Addr: netip.MustParseAddr("11.1.1.1"), Port: 80}, Backend: mustBackend("10.0.0.2:80")},
			`node "n": /web:80 backend 10.0.0.2:80: name "/web" with address 11.1.1.1: not a usable address: a VIP is named or has an address, not both`},
		{"neither name nor address", Registration{VIP: Spec{Port: 80}, Backend: mustBackend("10.0.0.2:80")},
			`node "n": invalid AddrPort backend 10.0.0.2:80: address: not a usable address`},
		{"backend without address", Registration{VIP: mustSpec("/web:80")},
			`node "n": /web:80 backend invalid AddrPort: backend address: not a usable address`},
		{"backend port 0", Registration{VIP: mustSpec("/web:80"), Backend: netip.MustParseAddrPort("10.0.0.2:0")},
			`node "n": /web:80 backend 10.0.0.2:0: backend port "0" is not a port from 1 to 65535`},
		{"unknown health", reg("/web:80", "10.0.0.2:80", withHealth("sleepy")),
			`node "n": /web:80 backend 10.0.0.2:80: health "sleepy" is not one of healthy, draining, unhealthy`},
		{"bad framework", reg("/web:80", "10.0.0.2:80", withFramework("mara thon")),
			`node "n": /web:80 backend 10.0.0.2:80: framework: label "mara thon": character ' ' cannot stand in a DNS label`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := Build(Config{}, ClusterState{node("n", good, tc.r)})
			if !slices.Equal(tab.Errors, []string{tc.want}) {
				t.Fatalf("errors\n got %q\nwant %q", tab.Errors, []string{tc.want})
			}
			if len(tab.VIPs) != 1 || len(tab.VIPs[0].Backends) != 1 || tab.VIPs[0].Backends[0].Addr != good.Backend {
				t.Fatalf("the valid registration must stay alone: %+v", tab.VIPs)
			}
		})
	}
	t.Run("full DNS name too long", func(t *testing.T) {
		long := "/" + strings.TrimSuffix(strings.Repeat("abcdefghi/", 23), "/")
		tab := Build(Config{}, ClusterState{node("n", good, reg(long+":80", "10.0.0.2:80"))})
		if len(tab.Errors) != 1 || !strings.Contains(tab.Errors[0], "a DNS name has at most 253 characters") {
			t.Fatalf("errors %q", tab.Errors)
		}
		if len(tab.VIPs) != 1 {
			t.Fatalf("VIPs %+v", tab.VIPs)
		}
	})
	t.Run("range of the wrong family", func(t *testing.T) {
		tab := Build(Config{V4: netip.MustParsePrefix("fd00::/64")}, ClusterState{node("n", good)})
		want := []string{
			"config: V4 range fd00::/64 is not an IPv4 range",
			"range fd00::/64 is full: /web (marathon) not placed",
		}
		if !slices.Equal(tab.Errors, want) || len(tab.VIPs) != 0 {
			t.Fatalf("table %+v, want errors %q", tab, want)
		}
	})
}

func TestBuildEmpty(t *testing.T) {
	for name, state := range map[string]ClusterState{"nil": nil, "nodes without backends": {node("a"), node("b")}} {
		t.Run(name, func(t *testing.T) {
			tab := Build(Config{}, state)
			if len(tab.VIPs) != 0 || len(tab.Errors) != 0 {
				t.Fatalf("table %+v", tab)
			}
			if !tab.Equal(&Table{}) || !tab.Equal(nil) {
				t.Fatal("an empty table must equal the empty table")
			}
		})
	}
}

func TestTableEqual(t *testing.T) {
	state := ClusterState{node("a", reg("/web:80", "10.0.0.1:80"), reg("11.1.1.1:80", "10.0.0.1:81"))}
	a, b := Build(Config{}, state), Build(Config{}, state)
	if !a.Equal(b) {
		t.Fatal("two builds of one state differ")
	}
	b.VIPs[0].Backends[0].Weight = 9
	if a.Equal(b) {
		t.Fatal("Equal missed a weight")
	}
	c := Build(Config{}, state)
	c.Errors = []string{"x"}
	if a.Equal(c) {
		t.Fatal("Equal missed an error")
	}
}

func TestProposeClaim(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/24")}
	web := mustSpec("/web:80")
	t.Run("a new name gets its hashed address, since now", func(t *testing.T) {
		c, err := ProposeClaim(cfg, nil, web, "", false, t0)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Claim{Addr: hashedV4(cfg.V4, "marathon", "/web"), Since: t0}); c != want {
			t.Fatalf("claim %+v, want %+v", c, want)
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		c, err := ProposeClaim(cfg, nil, web, "", true, t0)
		if err != nil || c.Addr != hashedV6(DefaultV6Range, "marathon", "/web") {
			t.Fatalf("claim %+v, %v", c, err)
		}
	})
	t.Run("a placed name keeps its claim", func(t *testing.T) {
		state := ClusterState{node("a", reg("/web:443", "10.0.0.1:80", withClaim("11.0.0.42", t0)))}
		c, err := ProposeClaim(cfg, state, web, "marathon", false, t0.Add(time.Hour))
		if err != nil || c != (Claim{Addr: netip.MustParseAddr("11.0.0.42"), Since: t0}) {
			t.Fatalf("claim %+v, %v", c, err)
		}
	})
	t.Run("a name placed without a claim gets its current address, since now", func(t *testing.T) {
		state := ClusterState{node("a", reg("/Web:443", "10.0.0.1:80"))}
		now := t0.Add(time.Hour)
		c, err := ProposeClaim(cfg, state, web, "Marathon", false, now)
		if err != nil || c != (Claim{Addr: hashedV4(cfg.V4, "marathon", "/web"), Since: now}) {
			t.Fatalf("claim %+v, %v", c, err)
		}
	})
	t.Run("probing skips names and IP VIPs", func(t *testing.T) {
		h := hashedV4(cfg.V4, "marathon", "/web")
		state := ClusterState{node("a",
			reg("/other:80", "10.0.0.1:80", withClaim(h.String(), t0)),
			reg(h.Next().String()+":80", "10.0.0.1:81"),
		)}
		c, err := ProposeClaim(cfg, state, web, "", false, t0)
		if err != nil || c.Addr != h.Next().Next() {
			t.Fatalf("claim %+v, %v; want %s", c, err, h.Next().Next())
		}
	})
	t.Run("full range", func(t *testing.T) {
		tiny := Config{V4: netip.MustParsePrefix("11.0.0.0/30")}
		state := ClusterState{node("a", reg("/x:80", "10.0.0.1:80"), reg("/y:80", "10.0.0.1:81"))}
		if c, err := ProposeClaim(tiny, state, web, "", false, t0); err == nil || !strings.Contains(err.Error(), "range is full") {
			t.Fatalf("claim %+v, %v; want a full-range error", c, err)
		}
		// Claimed names are placed before /web, which has no claim.
		state = ClusterState{
			node("a", reg("/x:80", "10.0.0.1:80", withClaim("11.0.0.1", t0)), reg("/y:80", "10.0.0.1:81", withClaim("11.0.0.2", t0))),
			node("b", reg("/web:80", "10.0.0.2:80")),
		}
		if _, err := ProposeClaim(tiny, state, web, "", false, t0); err == nil {
			t.Fatal("a name the state cannot place got a claim")
		}
	})
	t.Run("not a named VIP", func(t *testing.T) {
		if _, err := ProposeClaim(cfg, nil, mustSpec("11.1.1.1:80"), "", false, t0); err == nil {
			t.Fatal("an IP VIP got a claim")
		}
		if _, err := ProposeClaim(cfg, nil, web, "bad framework", false, t0); err == nil {
			t.Fatal("a bad framework got a claim")
		}
	})
}

// Many distinct schedulers asked for across a table (past the builder's
// first few interned names) are each kept apart and voted right.
func TestBuildManySchedulers(t *testing.T) {
	var regs []Registration
	want := map[string]string{}
	for i := 0; i < 20; i++ {
		spec := fmt.Sprintf("/app%d:80", i)
		sched := fmt.Sprintf("sched%02d", i)
		want[spec] = sched
		// Two backends ask for the VIP's own scheduler, one for the next
		// VIP's: the VIP's own wins, with a conflict.
		regs = append(regs,
			reg(spec, fmt.Sprintf("10.0.%d.1:80", i), withScheduler(sched)),
			reg(spec, fmt.Sprintf("10.0.%d.2:80", i), withScheduler(sched)),
			reg(spec, fmt.Sprintf("10.0.%d.3:80", i), withScheduler(fmt.Sprintf("sched%02d", i+1))))
	}
	tab := Build(Config{}, ClusterState{node("a", regs...)})
	if len(tab.VIPs) != 20 {
		t.Fatalf("%d VIPs, want 20 (errors %v)", len(tab.VIPs), tab.Errors)
	}
	for _, v := range tab.VIPs {
		if v.Scheduler != want[v.Label] || len(v.Conflicts) != 1 {
			t.Errorf("%s: scheduler %q, conflicts %q; want %q and one conflict", v.Label, v.Scheduler, v.Conflicts, want[v.Label])
		}
	}
}

// sameContent reports whether two tables hold deeply equal VIPs and errors,
// nil and empty slices told apart (Equal does not tell them apart; the
// lineage fields differ between any two builds).
func sameContent(a, b *Table) bool {
	return reflect.DeepEqual(a.VIPs, b.VIPs) && reflect.DeepEqual(a.Errors, b.Errors)
}
