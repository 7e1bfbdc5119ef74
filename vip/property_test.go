package vip

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// Property tests: each rule is checked on many random cluster states, built
// from fixed seeds so that a failure names the seed that reproduces it.

// checkTable asserts what must hold for every table Build returns.
func checkTable(t *testing.T, cfg Config, tab *Table) {
	t.Helper()
	cfg = cfg.WithDefaults()
	type ident struct {
		framework, name string
		v6              bool
	}
	addrOf := map[ident]netip.Addr{}
	nameAt := map[netip.Addr]ident{}
	for i, v := range tab.VIPs {
		if i > 0 && compareServiceKeys(tab.VIPs[i-1].ServiceKey, v.ServiceKey) >= 0 {
			t.Fatalf("VIPs not strictly sorted by service key at %d: %+v then %+v", i, tab.VIPs[i-1].ServiceKey, v.ServiceKey)
		}
		for j, b := range v.Backends {
			if j > 0 && v.Backends[j-1].Addr.Compare(b.Addr) >= 0 {
				t.Fatalf("%s: backends not strictly sorted: %s then %s", v.Label, v.Backends[j-1].Addr, b.Addr)
			}
			if b.Health == Unhealthy {
				t.Fatalf("%s: unhealthy backend %s in the table", v.Label, b.Addr)
			}
			if b.Health == Draining && b.Weight != 0 {
				t.Fatalf("%s: draining backend %s has weight %d", v.Label, b.Addr, b.Weight)
			}
		}
		if v.Name == "" {
			continue
		}
		id := ident{v.Framework, strings.ToLower(v.Name), v.Addr.Is6()}
		r := newAddrRange(cfg.V4)
		if id.v6 {
			r = newAddrRange(cfg.V6)
		}
		if _, ok := r.index(v.Addr); !ok {
			t.Fatalf("%s (%s) at %s: not a usable address of %s", v.Label, v.Framework, v.Addr, r.prefix)
		}
		if a, ok := addrOf[id]; ok && a != v.Addr {
			t.Fatalf("%s (%s) has two addresses: %s and %s", v.Name, v.Framework, a, v.Addr)
		}
		if other, ok := nameAt[v.Addr]; ok && other != id {
			t.Fatalf("%s holds two names: %v and %v", v.Addr, other, id)
		}
		addrOf[id], nameAt[v.Addr] = v.Addr, id
	}
	if !slices.IsSorted(tab.Errors) || len(slices.Compact(slices.Clone(tab.Errors))) != len(tab.Errors) {
		t.Fatalf("errors not sorted and unique: %q", tab.Errors)
	}
}

// randomState returns a cluster state with every kind of registration: named
// and IP VIPs, both families, claims inside, outside and of the wrong family,
// equal Since times, every health, disagreeing schedulers, and backends that
// two nodes register.
func randomState(rng *rand.Rand, cfg Config, names, nodes int) ClusterState {
	cfg = cfg.WithDefaults()
	v4 := newAddrRange(cfg.V4)
	state := make(ClusterState, nodes)
	for i := range state {
		state[i].Node = fmt.Sprintf("node-%03d", i)
	}
	healths := []Health{Healthy, Healthy, Healthy, Draining, Unhealthy, ""}
	schedulers := []string{"", "", "wlc", "rr", "sh"}
	for n := range names {
		name := fmt.Sprintf("/g%d/app%d", n%3, n)
		framework := []string{"", "marathon", "kubernetes", "Marathon"}[rng.IntN(4)]
		port := []uint16{80, 443, 53}[rng.IntN(3)]
		proto := []Protocol{TCP, UDP}[rng.IntN(2)]
		spec := Spec{Protocol: proto, Name: name, Port: port}
		if rng.IntN(10) == 0 {
			// An IP VIP, sometimes inside the named range.
			addr := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + rng.IntN(9))})
			if rng.IntN(2) == 0 && v4.size > 0 {
				addr = v4.addr(rng.Uint64N(v4.size))
			}
			spec = Spec{Protocol: proto, Addr: addr, Port: port}
		}
		for b := range 1 + rng.IntN(4) {
			v6 := spec.Named() && rng.IntN(5) == 0 || spec.Addr.Is6()
			var backend netip.AddrPort
			if v6 {
				backend = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 0, 15: byte(b + 1)}), uint16(30000+n))
			} else {
				backend = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(n), byte(b + 1)}), uint16(30000+n))
			}
			regSpec := spec
			if spec.Named() && rng.IntN(5) == 0 {
				// Another spelling of the same name.
				regSpec.Name = strings.ToUpper(spec.Name)
			}
			r := Registration{
				VIP: regSpec, Framework: framework, Backend: backend,
				Weight: uint32(rng.IntN(3)), Health: healths[rng.IntN(len(healths))],
				Scheduler: schedulers[rng.IntN(len(schedulers))], Persistence: uint32(rng.IntN(2) * 60),
				Public: rng.IntN(3) == 0, PublicPort: []uint16{0, 10000}[rng.IntN(2)],
			}
			if spec.Named() {
				since := t0.Add(time.Duration(rng.IntN(4)) * time.Second)
				switch rng.IntN(10) {
				case 0, 1, 2, 3:
				case 4, 5, 6, 7:
					if v4.size > 0 && !v6 {
						r.Claim = Claim{Addr: v4.addr(rng.Uint64N(v4.size)), Since: since}
					}
				case 8:
					r.Claim = Claim{Addr: netip.MustParseAddr("12.0.0.1"), Since: since}
				case 9:
					r.Claim = Claim{Addr: netip.MustParseAddr("fd01:c::9"), Since: since}
				}
			}
			k := rng.IntN(nodes)
			state[k].Backends = append(state[k].Backends, r)
			if rng.IntN(10) == 0 {
				// The same backend from another node (or twice from one).
				k := rng.IntN(nodes)
				state[k].Backends = append(state[k].Backends, r)
			}
		}
	}
	return state
}

func shuffled(rng *rand.Rand, state ClusterState) ClusterState {
	out := make(ClusterState, len(state))
	for i, n := range state {
		out[i] = NodeState{Node: n.Node, Backends: slices.Clone(n.Backends)}
		rng.Shuffle(len(out[i].Backends), func(a, b int) {
			out[i].Backends[a], out[i].Backends[b] = out[i].Backends[b], out[i].Backends[a]
		})
	}
	rng.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
	return out
}

func TestPropertyOrderIndependence(t *testing.T) {
	configs := []Config{
		{},
		{V4: netip.MustParsePrefix("11.0.0.0/28")}, // 14 addresses: collisions and exhaustion
		{V4: netip.MustParsePrefix("11.0.0.0/24"), V6: netip.MustParsePrefix("fd01:c::/125")},
	}
	for seed := range uint64(150) {
		cfg := configs[seed%uint64(len(configs))]
		rng := rand.New(rand.NewPCG(seed, 1))
		state := randomState(rng, cfg, 5+rng.IntN(40), 1+rng.IntN(6))
		want := Build(cfg, state)
		checkTable(t, cfg, want)
		for k := range 3 {
			got := Build(cfg, shuffled(rng, state))
			if !sameContent(got, want) {
				t.Fatalf("seed %d, shuffle %d: the table depends on the order of the state\n got %+v\nwant %+v", seed, k, got, want)
			}
		}
	}
}

// collidingNames returns n names whose probing starts at the same index of a
// range of size usable addresses: they all hash to one address.
func collidingNames(n int, size uint64) []string {
	var names []string
	want := probeStart(identity{framework: "marathon", name: "/c0"}, size)
	for i := 0; len(names) < n; i++ {
		name := fmt.Sprintf("/c%d", i)
		if probeStart(identity{framework: "marathon", name: name}, size) == want {
			names = append(names, name)
		}
	}
	return names
}

func TestPropertyCollisionSafety(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/29")} // 6 usable addresses
	const capacity = 6
	colliding := collidingNames(12, capacity)
	first := hashedV4(cfg.V4, "marathon", colliding[0])
	for _, n := range colliding {
		if hashedV4(cfg.V4, "marathon", n) != first {
			t.Fatalf("%s does not hash to %s", n, first)
		}
	}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 2))
		// Colliding names plus ordinary ones, some claiming addresses others hold.
		pool := append(slices.Clone(colliding), "/a", "/b", "/c", "/d")
		rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
		pool = pool[:1+rng.IntN(len(pool))]
		var regs []Registration
		for i, name := range pool {
			r := reg(name+":80", fmt.Sprintf("10.0.0.%d:80", i+1))
			if rng.IntN(2) == 0 {
				r.Claim = Claim{Addr: newAddrRange(cfg.V4).addr(rng.Uint64N(capacity)), Since: t0.Add(time.Duration(rng.IntN(3)) * time.Second)}
			}
			regs = append(regs, r)
		}
		tab := Build(cfg, ClusterState{node("n", regs...)})
		checkTable(t, cfg, tab)
		placed := map[string]bool{}
		for _, v := range tab.VIPs {
			placed[v.Name] = true
		}
		if want := min(len(pool), capacity); len(placed) != want {
			t.Fatalf("seed %d: %d of %d names placed in %d addresses, want %d; table %+v", seed, len(placed), len(pool), capacity, want, tab)
		}
		if len(tab.Errors) != len(pool)-len(placed) {
			t.Fatalf("seed %d: %d errors for %d unplaced names: %q", seed, len(tab.Errors), len(pool)-len(placed), tab.Errors)
		}
		for _, name := range pool {
			line := "range 11.0.0.0/29 is full: " + name + " (marathon) not placed"
			if !placed[name] && !slices.Contains(tab.Errors, line) {
				t.Fatalf("seed %d: %s is neither placed nor reported; errors %q", seed, name, tab.Errors)
			}
		}
	}
}

// cluster is a live cluster for the stability property: names come and go,
// each new registration carries the claim ProposeClaim gave it.
type cluster struct {
	cfg   Config
	nodes []string
	regs  map[string][]Registration // node -> registrations
}

func (c *cluster) state() ClusterState {
	var s ClusterState
	for _, n := range c.nodes {
		s = append(s, NodeState{Node: n, Backends: slices.Clone(c.regs[n])})
	}
	return s
}

func (c *cluster) register(t *testing.T, nodeName, name string, backend netip.AddrPort, now time.Time) Claim {
	t.Helper()
	spec := mustSpec(name + ":80")
	claim, err := ProposeClaim(c.cfg, c.state(), spec, "", false, now)
	if err != nil {
		t.Fatalf("ProposeClaim(%s): %v", name, err)
	}
	c.regs[nodeName] = append(c.regs[nodeName], Registration{VIP: spec, Backend: backend, Weight: 1, Health: Healthy, Claim: claim})
	return claim
}

// deregister removes every registration of name, or only the first one.
func (c *cluster) deregister(name string, all bool) {
	removed := false
	for _, n := range c.nodes {
		c.regs[n] = slices.DeleteFunc(c.regs[n], func(r Registration) bool {
			if r.VIP.Name != name || removed && !all {
				return false
			}
			removed = true
			return true
		})
	}
}

func addresses(tab *Table) map[string]netip.Addr {
	m := map[string]netip.Addr{}
	for _, v := range tab.VIPs {
		m[v.Name] = v.Addr
	}
	return m
}

func TestPropertyStability(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/28")} // 14 usable addresses
	pool := append(collidingNames(8, 14), "/web", "/api", "/db", "/cache", "/queue", "/auth", "/search", "/mail")
	const maxAlive = 12 // fewer than the range holds: no name is ever refused
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 3))
		c := &cluster{cfg: cfg, nodes: []string{"a", "b", "c", "d"}, regs: map[string][]Registration{}}
		alive := map[string]int{} // name -> registrations
		clock := t0
		before := map[string]netip.Addr{}
		backendPort := uint16(1)
		for step := range 80 {
			var names []string
			for n := range alive {
				names = append(names, n)
			}
			slices.Sort(names)
			clock = clock.Add(time.Second)
			now := clock
			if rng.IntN(4) == 0 {
				now = t0.Add(-time.Hour) // a node whose clock is behind
			}
			what := ""
			switch op := rng.IntN(4); {
			case op == 0 && len(alive) < maxAlive || len(alive) == 0:
				name := pool[rng.IntN(len(pool))]
				what = "register " + name
				claim := c.register(t, c.nodes[rng.IntN(len(c.nodes))], name, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), backendPort), now)
				backendPort++
				if old, ok := before[name]; ok && claim.Addr != old {
					t.Fatalf("seed %d step %d: %s is at %s but ProposeClaim said %s", seed, step, name, old, claim.Addr)
				}
				alive[name]++
				tab := Build(cfg, c.state())
				if got := addresses(tab)[name]; got != claim.Addr {
					t.Fatalf("seed %d step %d: %s claimed %s but Build put it at %s", seed, step, name, claim.Addr, got)
				}
			case op == 1:
				name := names[rng.IntN(len(names))]
				what = "deregister every backend of " + name
				c.deregister(name, true)
				delete(alive, name)
			case op == 2:
				name := names[rng.IntN(len(names))]
				what = "deregister one backend of " + name
				c.deregister(name, false)
				if alive[name]--; alive[name] == 0 {
					delete(alive, name)
				}
			default:
				name := names[rng.IntN(len(names))]
				what = "one more backend for " + name
				c.register(t, c.nodes[rng.IntN(len(c.nodes))], name, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), backendPort), now)
				backendPort++
				alive[name]++
			}
			tab := Build(cfg, c.state())
			checkTable(t, cfg, tab)
			if len(tab.Errors) != 0 {
				t.Fatalf("seed %d step %d (%s): errors %q", seed, step, what, tab.Errors)
			}
			after := addresses(tab)
			if len(after) != len(alive) {
				t.Fatalf("seed %d step %d (%s): %d names in the table, %d alive", seed, step, what, len(after), len(alive))
			}
			for name, addr := range before {
				if now, ok := after[name]; ok && now != addr {
					t.Fatalf("seed %d step %d (%s): %s moved from %s to %s", seed, step, what, name, addr, now)
				}
			}
			before = after
		}
	}
}

func TestPropertyExhaustion(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/28")} // 14 usable addresses
	const capacity = 14
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 4))
		n := capacity + 1 + rng.IntN(30)
		names := collidingNames(n/2, capacity)
		for i := len(names); i < n; i++ {
			names = append(names, fmt.Sprintf("/n%d", i))
		}
		c := &cluster{cfg: cfg, nodes: []string{"a", "b"}, regs: map[string][]Registration{}}
		for i, name := range names {
			nodeName := c.nodes[rng.IntN(2)]
			backend := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i+1))
			if rng.IntN(3) == 0 {
				// A registration without a claim (an old agent, say).
				c.regs[nodeName] = append(c.regs[nodeName], Registration{VIP: mustSpec(name + ":80"), Backend: backend, Weight: 1, Health: Healthy})
				continue
			}
			_, err := ProposeClaim(cfg, c.state(), mustSpec(name+":80"), "", false, t0.Add(time.Duration(i)*time.Second))
			if err != nil {
				c.regs[nodeName] = append(c.regs[nodeName], Registration{VIP: mustSpec(name + ":80"), Backend: backend, Weight: 1, Health: Healthy})
				continue
			}
			c.register(t, nodeName, name, backend, t0.Add(time.Duration(i)*time.Second))
		}
		tab := Build(cfg, c.state())
		checkTable(t, cfg, tab)
		if len(tab.VIPs) != capacity {
			t.Fatalf("seed %d: %d names in %d addresses: %d placed", seed, n, capacity, len(tab.VIPs))
		}
		if len(tab.Errors) != n-capacity {
			t.Fatalf("seed %d: %d errors for %d names that did not fit: %q", seed, len(tab.Errors), n-capacity, tab.Errors)
		}
		for _, e := range tab.Errors {
			if !strings.HasPrefix(e, "range 11.0.0.0/28 is full: ") {
				t.Fatalf("seed %d: unexpected error %q", seed, e)
			}
		}
	}
}

func TestPropertyHundredThousandNamesInASlash16(t *testing.T) {
	cfg := Config{V4: netip.MustParsePrefix("11.7.0.0/16")}
	const names, usable = 100_000, 65_534
	state := make(ClusterState, 1000)
	for i := range state {
		state[i].Node = fmt.Sprintf("node-%04d", i)
	}
	for i := range names {
		n := &state[i%len(state)]
		n.Backends = append(n.Backends, Registration{
			VIP:     Spec{Protocol: TCP, Name: fmt.Sprintf("/group%d/app%d", i%97, i), Port: 80},
			Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 8080),
			Weight:  1, Health: Healthy,
		})
	}
	tab := Build(cfg, state)
	checkTable(t, cfg, tab) // distinct addresses, all usable
	if len(tab.VIPs) != usable {
		t.Fatalf("%d names placed in a /16, want %d", len(tab.VIPs), usable)
	}
	if len(tab.Errors) != names-usable {
		t.Fatalf("%d errors, want %d", len(tab.Errors), names-usable)
	}
	for _, e := range tab.Errors {
		if !strings.HasPrefix(e, "range 11.7.0.0/16 is full: /group") {
			t.Fatalf("unexpected error %q", e)
		}
	}
}
