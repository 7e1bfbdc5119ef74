package vip

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Property tests of Model: after any sequence of changes, the incremental
// table equals Build over the same state, and ChangedSince names every key
// that changed.

// world generates random registrations and keeps its own copy of the state
// (node -> key -> registration), the reference for Model.State.
type world struct {
	t     *testing.T
	cfg   Config
	rng   *rand.Rand
	m     *Model
	nodes []string
	names []string
	ref   map[string]map[RegKey]Registration
	// agent: new registrations carry the claim the model proposes (the
	// steady state of a real cluster); otherwise claims are random.
	agent bool
}

var longName = "/" + strings.Repeat("a", 63) + "/" + strings.Repeat("b", 63) + "/" + strings.Repeat("c", 63) + "/" + strings.Repeat("d", 50)

func newWorld(t *testing.T, cfg Config, seed uint64, agent bool) *world {
	w := &world{t: t, cfg: cfg, rng: rand.New(rand.NewPCG(seed, 7)), m: NewModel(cfg), ref: map[string]map[RegKey]Registration{}, agent: agent}
	w.nodes = []string{"a", "b", "c", "d", "e"}
	w.names = append(collidingNames(6, 6), "/web", "/api", "/API", "api", "/db", "/g1/cache", "/g2/Queue", "/g2/queue")
	if w.rng.IntN(3) == 0 {
		w.names = append(w.names, longName, "/a b", "/x/y")
	}
	return w
}

func (w *world) pick(xs []string) string { return xs[w.rng.IntN(len(xs))] }

func (w *world) addr(p netip.Prefix, usable bool) netip.Addr {
	r := newAddrRange(p)
	if usable && r.size > 0 {
		return r.addr(w.rng.Uint64N(min(r.size, 64)))
	}
	return p.Masked().Addr()
}

// randomReg returns a registration of any kind: mostly valid, sometimes not.
func (w *world) randomReg() Registration {
	cfg := w.cfg.WithDefaults()
	rng := w.rng
	var spec Spec
	v6 := rng.IntN(4) == 0
	switch x := rng.IntN(20); {
	case x < 16:
		spec = Spec{Protocol: []Protocol{TCP, UDP, ""}[rng.IntN(3)], Name: w.pick(w.names), Port: []uint16{80, 443}[rng.IntN(2)]}
	default:
		// An IP VIP, often on an address named VIPs get.
		var a netip.Addr
		switch rng.IntN(4) {
		case 0:
			a = netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + rng.IntN(3))})
		case 1:
			a = netip.MustParseAddr("2001:db8::1")
		case 2:
			a = w.addr(cfg.V6, true)
		default:
			a = w.addr(cfg.V4, true)
		}
		spec = Spec{Protocol: TCP, Addr: a, Port: []uint16{80, 443}[rng.IntN(2)]}
		v6 = a.Is6()
		if rng.IntN(8) == 0 {
			v6 = !v6 // a backend of the wrong family
		}
	}
	switch rng.IntN(40) {
	case 0:
		spec.Port = 0
	case 1:
		spec.Protocol = "sctp"
	case 2:
		if spec.Named() {
			spec.Addr = netip.MustParseAddr("11.0.0.1")
		}
	}
	var backend netip.AddrPort
	port := uint16(8000 + rng.IntN(3))
	switch {
	case rng.IntN(50) == 0:
		backend = netip.AddrPort{} // invalid
	case v6:
		backend = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 0, 15: byte(1 + rng.IntN(4))}), port)
	case rng.IntN(10) == 0:
		backend = netip.AddrPortFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(1 + rng.IntN(4))}), port) // IPv4-mapped
	default:
		backend = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + rng.IntN(4))}), port)
	}
	r := Registration{
		VIP:         spec,
		Framework:   []string{"", "", "marathon", "Marathon", "kubernetes"}[rng.IntN(5)],
		Backend:     backend,
		Weight:      uint32(rng.IntN(3)),
		Health:      []Health{Healthy, Healthy, "", Draining, Unhealthy}[rng.IntN(5)],
		Scheduler:   []string{"", "", "wlc", "rr"}[rng.IntN(4)],
		Persistence: uint32(rng.IntN(2) * 60),
		Public:      rng.IntN(3) == 0,
		PublicPort:  []uint16{0, 0, 10000, 80}[rng.IntN(4)],
	}
	if rng.IntN(60) == 0 {
		r.Framework = "bad fw"
	}
	if rng.IntN(60) == 0 {
		r.Health = "sleepy"
	}
	if !spec.Named() {
		return r
	}
	if w.agent && rng.IntN(20) != 0 {
		if c, err := ProposeClaim(w.cfg, w.m.State(), spec, r.Framework, v6, t0.Add(time.Duration(rng.IntN(100))*time.Second)); err == nil {
			r.Claim = c
		}
		return r
	}
	since := t0.Add(time.Duration(rng.IntN(4)) * time.Second)
	switch rng.IntN(8) {
	case 0, 1:
	case 2, 3, 4:
		r.Claim = Claim{Addr: w.addr(cfg.V4, true), Since: since}
		if v6 {
			r.Claim.Addr = w.addr(cfg.V6, true)
		}
	case 5:
		r.Claim = Claim{Addr: netip.MustParseAddr("12.0.0.1"), Since: since} // out of range
	case 6:
		r.Claim = Claim{Addr: netip.MustParseAddr("fd01:c::9"), Since: since} // maybe the wrong family
	case 7:
		r.Claim = Claim{Addr: netip.MustParseAddr("::ffff:11.0.0.2"), Since: since} // mapped
	}
	return r
}

// held returns a random key node holds, if any.
func (w *world) held(node string) (RegKey, bool) {
	regs := w.ref[node]
	if len(regs) == 0 {
		return RegKey{}, false
	}
	keys := slices.SortedFunc(maps.Keys(regs), func(a, b RegKey) int {
		if d := strings.Compare(a.VIP.String(), b.VIP.String()); d != 0 {
			return d
		}
		if d := strings.Compare(a.Framework, b.Framework); d != 0 {
			return d
		}
		return a.Backend.Compare(b.Backend)
	})
	return keys[w.rng.IntN(len(keys))], true
}

// randomDelta changes one node at random, in the reference state too.
func (w *world) randomDelta() (NodeDelta, string) {
	node := w.pick(w.nodes)
	d := NodeDelta{Node: node}
	regs := w.ref[node]
	if regs == nil {
		regs = map[RegKey]Registration{}
		w.ref[node] = regs
	}
	var what string
	switch op := w.rng.IntN(10); {
	case op < 4 || len(regs) == 0:
		what = "add"
		for range 1 + w.rng.IntN(4) {
			r := w.randomReg()
			d.Set = append(d.Set, r)
		}
	case op < 6:
		what = "replace"
		for range 1 + w.rng.IntN(2) {
			k, _ := w.held(node)
			r := regs[k]
			switch w.rng.IntN(5) {
			case 0:
				r.Weight = uint32(w.rng.IntN(3))
			case 1:
				r.Health = []Health{Healthy, Draining, Unhealthy}[w.rng.IntN(3)]
			case 2:
				r.Scheduler = []string{"wlc", "rr", "sh"}[w.rng.IntN(3)]
			case 3:
				r.Claim = w.randomReg().Claim
			case 4: // the same registration again: no change
			}
			d.Set = append(d.Set, r)
		}
	case op < 8:
		what = "remove"
		for range 1 + w.rng.IntN(3) {
			k, _ := w.held(node)
			if !slices.Contains(d.Removed, k) {
				d.Removed = append(d.Removed, k)
			}
		}
		if w.rng.IntN(4) == 0 {
			d.Removed = append(d.Removed, RegKey{VIP: Spec{Name: "/never", Port: 1}}) // absent
		}
	case op < 9:
		what = "node gone"
		for k := range regs {
			d.Removed = append(d.Removed, k)
		}
	default:
		what = "remove and add"
		k, _ := w.held(node)
		d.Removed = append(d.Removed, k)
		d.Set = append(d.Set, w.randomReg())
	}
	for _, k := range d.Removed {
		delete(regs, k)
	}
	for i, r := range d.Set {
		if slices.Contains(d.Removed, r.Key()) {
			// A key is in at most one list.
			d.Set[i] = w.randomReg()
			for slices.Contains(d.Removed, d.Set[i].Key()) {
				d.Set[i] = w.randomReg()
			}
		}
		regs[d.Set[i].Key()] = d.Set[i]
	}
	return d, what
}

func (w *world) state() ClusterState {
	var s ClusterState
	for _, n := range slices.Sorted(maps.Keys(w.ref)) {
		if len(w.ref[n]) == 0 {
			continue
		}
		ns := NodeState{Node: n}
		for _, r := range w.ref[n] {
			ns.Backends = append(ns.Backends, r)
		}
		s = append(s, ns)
	}
	return s
}

// sameState reports whether two states hold the same registrations per node.
func sameState(a, b ClusterState) bool {
	index := func(s ClusterState) map[string]map[RegKey]Registration {
		m := map[string]map[RegKey]Registration{}
		for _, n := range s {
			m[n.Node] = map[RegKey]Registration{}
			for _, r := range n.Backends {
				m[n.Node][r.Key()] = r
			}
		}
		return m
	}
	return reflect.DeepEqual(index(a), index(b))
}

// differingKeys returns the service keys at which two tables' VIPs differ.
func differingKeys(a, b *Table) []ServiceKey {
	var out []ServiceKey
	for _, v := range a.VIPs {
		if o, ok := b.Find(v.ServiceKey); !ok || !reflect.DeepEqual(o, v) {
			out = append(out, v.ServiceKey)
		}
	}
	for _, v := range b.VIPs {
		if _, ok := a.Find(v.ServiceKey); !ok {
			out = append(out, v.ServiceKey)
		}
	}
	return out
}

// check asserts that the model's table equals Build over its state, that
// its state is the reference state, that ChangedSince(prev) names exactly
// the keys that changed, and that Placed agrees with the table.
func (w *world) check(prev *Table, label string) *Table {
	t := w.t
	t.Helper()
	state := w.m.State()
	if !sameState(state, w.state()) {
		t.Fatalf("%s: State() differs from the changes applied\n got %+v\nwant %+v", label, state, w.state())
	}
	if !slices.IsSortedFunc(state, func(a, b NodeState) int { return strings.Compare(a.Node, b.Node) }) {
		t.Fatalf("%s: State() not sorted by node", label)
	}
	want := Build(w.cfg, state)
	got := w.m.Table()
	if !sameContent(got, want) {
		for _, k := range differingKeys(got, want) {
			g, _ := got.Find(k)
			b, _ := want.Find(k)
			t.Logf("at %v:\n model %+v\n build %+v", k, g, b)
		}
		t.Fatalf("%s: Table() differs from Build\n model errors %q\n build errors %q", label, got.Errors, want.Errors)
	}
	checkTable(t, w.cfg, got)
	if again := w.m.Table(); again != got {
		t.Fatalf("%s: Table() twice without a change returned a new table", label)
	}
	if prev != nil {
		keys, ok := got.ChangedSince(prev)
		if !ok {
			t.Fatalf("%s: ChangedSince(previous table) not known", label)
		}
		diff := differingKeys(prev, got)
		slices.SortFunc(keys, compareServiceKeys)
		slices.SortFunc(diff, compareServiceKeys)
		if !slices.Equal(keys, diff) {
			t.Fatalf("%s: ChangedSince lists %v; the tables differ at %v", label, keys, diff)
		}
		if got == prev && !slices.Equal(got.Errors, want.Errors) {
			t.Fatalf("%s: same table returned though errors changed", label)
		}
	}
	for _, v := range got.VIPs {
		if v.Name == "" {
			continue
		}
		k := NameKey{Framework: v.Framework, Name: v.Name, V6: v.Addr.Is6()}
		if a, ok := w.m.Placed(k); !ok || a != v.Addr {
			t.Fatalf("%s: Placed(%+v) = %s, %v; the table has %s", label, k, a, ok, v.Addr)
		}
	}
	return got
}

var modelConfigs = []Config{
	{},
	{V4: netip.MustParsePrefix("11.0.0.0/29"), V6: netip.MustParsePrefix("fd01:c::/125")}, // 6 and 7 addresses
	{V4: netip.MustParsePrefix("11.0.0.0/28")},
	{V4: netip.MustParsePrefix("11.0.0.0/29"), V6: netip.MustParsePrefix("fd01:c::/127")}, // 1 IPv6 address
	{V4: netip.MustParsePrefix("fd02::/120")},                                             // not IPv4: no address
	{Domain: "bad domain!"}, // every name has a DNS error
}

func TestModelEqualsBuild(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 60
	}
	modelEqualsBuild(t, runs, 60)
}

// TestModelEqualsBuildWithCollidingKeyHashes: the same, with a key hash
// that files most of a node's registrations under a few hashes, so that
// finding, replacing and removing walk the collision chains.
func TestModelEqualsBuildWithCollidingKeyHashes(t *testing.T) {
	real := regKeyHash
	t.Cleanup(func() { regKeyHash = real })
	regKeyHash = func(k *RegKey) uint64 { return uint64(len(k.VIP.Name) % 2) }
	modelEqualsBuild(t, 60, 60)
}

// modelEqualsBuild applies random deltas to a Model and checks its table
// against Build of the same state after each step.
func modelEqualsBuild(t *testing.T, runs, steps int) {
	for seed := range uint64(runs) {
		cfg := modelConfigs[seed%uint64(len(modelConfigs))]
		agent := seed%3 == 0
		w := newWorld(t, cfg, seed, agent)
		var prev *Table
		for step := range steps {
			var deltas []NodeDelta
			var whats []string
			for range 1 + w.rng.IntN(3) {
				d, what := w.randomDelta()
				deltas = append(deltas, d)
				whats = append(whats, what+" "+d.Node)
			}
			w.m.Apply(deltas)
			if w.rng.IntN(5) == 0 && step < steps-1 {
				continue // several Applies before the next table
			}
			prev = w.check(prev, fmt.Sprintf("cfg %d seed %d step %d (%s)", seed%uint64(len(modelConfigs)), seed, step, strings.Join(whats, ", ")))
		}
	}
}

// TestModelAgentLike runs a larger cluster in the steady state: every new
// registration carries the claim the model proposed, as the agent does, so
// the address book stays on its fast path (every name at its claim).
func TestModelAgentLike(t *testing.T) {
	for seed := range uint64(20) {
		cfg := Config{V4: netip.MustParsePrefix("11.0.0.0/24")}
		w := newWorld(t, cfg, 1000+seed, true)
		w.nodes = nil
		for i := range 20 {
			w.nodes = append(w.nodes, fmt.Sprintf("node-%02d", i))
		}
		w.names = nil
		for i := range 60 {
			w.names = append(w.names, fmt.Sprintf("/g%d/app%d", i%4, i))
		}
		var prev *Table
		for step := range 80 {
			d, what := w.randomDelta()
			w.m.Apply([]NodeDelta{d})
			prev = w.check(prev, fmt.Sprintf("seed %d step %d (%s %s)", seed, step, what, d.Node))
		}
	}
}

// step is one Apply in a table test, and what the table must show after it.
type step struct {
	deltas []NodeDelta
	check  func(t *testing.T, m *Model, tab *Table)
}

func set(node string, regs ...Registration) NodeDelta { return NodeDelta{Node: node, Set: regs} }
func removed(node string, regs ...Registration) NodeDelta {
	d := NodeDelta{Node: node}
	for _, r := range regs {
		d.Removed = append(d.Removed, r.Key())
	}
	return d
}

// at asserts that the table holds label at addr.
func at(label, addr string) func(*testing.T, *Model, *Table) {
	return func(t *testing.T, _ *Model, tab *Table) {
		t.Helper()
		v, ok := findByLabel(tab, label)
		if !ok || v.Addr != netip.MustParseAddr(addr) {
			t.Fatalf("%s at %s (in table: %v), want %s; table %+v", label, v.Addr, ok, addr, tab.VIPs)
		}
	}
}

func errorsAre(want ...string) func(*testing.T, *Model, *Table) {
	return func(t *testing.T, _ *Model, tab *Table) {
		t.Helper()
		if !slices.Equal(tab.Errors, want) {
			t.Fatalf("errors %q, want %q", tab.Errors, want)
		}
	}
}

func all(checks ...func(*testing.T, *Model, *Table)) func(*testing.T, *Model, *Table) {
	return func(t *testing.T, m *Model, tab *Table) {
		t.Helper()
		for _, c := range checks {
			c(t, m, tab)
		}
	}
}

func TestModelCases(t *testing.T) {
	small := Config{V4: netip.MustParsePrefix("11.0.0.0/29")} // 11.0.0.1 to 11.0.0.6
	colliding := collidingNames(3, 6)
	c0, c1, c2 := colliding[0], colliding[1], colliding[2]
	hashed := hashedV4(small.V4, "marathon", c0).String()
	next := func(a string, n int) string {
		x := netip.MustParseAddr(a)
		for range n {
			x = x.Next()
			if x == netip.MustParseAddr("11.0.0.7") {
				x = netip.MustParseAddr("11.0.0.1")
			}
		}
		return x.String()
	}
	web := reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.3", t0))
	webB := reg("/web:80", "10.0.0.2:80", withClaim("11.0.0.3", t0))
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"the earlier claim wins; the loser moves to its claim when the winner leaves", small, []step{
			{[]NodeDelta{set("a", reg(c0+":80", "10.0.0.1:80", withClaim("11.0.0.5", t0)))}, at(c0+":80", "11.0.0.5")},
			{[]NodeDelta{set("b", reg("/other:80", "10.0.0.2:80", withClaim("11.0.0.5", t0.Add(time.Second))))}, all(at(c0+":80", "11.0.0.5"), at("/other:80", hashedV4(small.V4, "marathon", "/other").String()))},
			{[]NodeDelta{removed("a", reg(c0+":80", "10.0.0.1:80", withClaim("11.0.0.5", t0)))}, at("/other:80", "11.0.0.5")},
		}},
		{"names without a claim probe from their hash, in name order", small, []step{
			{[]NodeDelta{set("a", reg(c1+":80", "10.0.0.1:80"), reg(c0+":80", "10.0.0.2:80"))}, nil},
			{[]NodeDelta{set("b", reg(c2+":80", "10.0.0.3:80"))}, nil},
			{[]NodeDelta{removed("a", reg(c0+":80", "10.0.0.2:80"))}, nil},
		}},
		{"a claimed name keeps its address when an unclaimed one hashes onto it", small, []step{
			{[]NodeDelta{set("a", reg(c1+":80", "10.0.0.1:80", withClaim(hashed, t0)))}, at(c1+":80", hashed)},
			{[]NodeDelta{set("a", reg(c0+":80", "10.0.0.2:80"))}, all(at(c1+":80", hashed), at(c0+":80", next(hashed, 1)))},
		}},
		{"an IP VIP under a named VIP is left out while the name holds its key", small, []step{
			{[]NodeDelta{set("a", reg("11.0.0.3:80", "10.0.0.9:80"))}, all(at("11.0.0.3:80", "11.0.0.3"), errorsAre())},
			{[]NodeDelta{set("b", web)}, all(at("/web:80", "11.0.0.3"), errorsAre("vip 11.0.0.3:80: left out: named VIP /web (marathon) holds 11.0.0.3:80"))},
			{[]NodeDelta{set("c", reg("/Web:80", "10.0.0.3:80", withClaim("11.0.0.3", t0)))}, errorsAre("vip 11.0.0.3:80: left out: named VIP /Web (marathon) holds 11.0.0.3:80")},
			{[]NodeDelta{removed("b", web), removed("c", reg("/Web:80", "10.0.0.3:80", withClaim("11.0.0.3", t0)))}, all(at("11.0.0.3:80", "11.0.0.3"), errorsAre())},
		}},
		{"a tiny range fills up, then frees an address", Config{V4: netip.MustParsePrefix("11.0.0.0/30")}, []step{
			{[]NodeDelta{set("a", reg("/a:80", "10.0.0.1:80"), reg("/b:80", "10.0.0.2:80"), reg("/c:80", "10.0.0.3:80"))}, errorsAre("range 11.0.0.0/30 is full: /c (marathon) not placed")},
			{[]NodeDelta{removed("a", reg("/a:80", "10.0.0.1:80"))}, errorsAre()},
		}},
		{"a node that goes takes its backends, not the VIP others serve", Config{}, []step{
			{[]NodeDelta{set("a", web), set("b", webB)}, nil},
			{[]NodeDelta{removed("a", web)}, func(t *testing.T, _ *Model, tab *Table) {
				if v, _ := findByLabel(tab, "/web:80"); len(v.Backends) != 1 || v.Backends[0].Node != "b" {
					t.Fatalf("backends %+v, want node b's only", v.Backends)
				}
			}},
			{[]NodeDelta{removed("b", webB)}, func(t *testing.T, _ *Model, tab *Table) {
				if len(tab.VIPs) != 0 || tab.VIPs == nil {
					t.Fatalf("VIPs %#v, want none (an empty slice, as Build)", tab.VIPs)
				}
			}},
		}},
		{"draining at weight 0, unhealthy left out, the VIP kept", Config{}, []step{
			{[]NodeDelta{set("a", web, reg("/web:80", "10.0.0.5:80", withClaim("11.0.0.3", t0), withHealth(Draining), withWeight(3)))}, nil},
			{[]NodeDelta{set("a", reg("/web:80", "10.0.0.1:80", withClaim("11.0.0.3", t0), withHealth(Unhealthy)))}, func(t *testing.T, _ *Model, tab *Table) {
				v, _ := findByLabel(tab, "/web:80")
				if len(v.Backends) != 1 || v.Backends[0].Weight != 0 || v.Backends[0].Health != Draining {
					t.Fatalf("backends %+v, want the draining one at weight 0", v.Backends)
				}
			}},
		}},
		{"a registration set twice unchanged gives the same table", Config{}, []step{
			{[]NodeDelta{set("a", web)}, nil},
			{[]NodeDelta{set("a", web), {Node: "a", Removed: []RegKey{{VIP: mustSpec("/gone:80")}}}, {Node: "zz", Removed: []RegKey{web.Key()}}}, nil},
		}},
		{"bad registrations are reported, and the report goes with them", Config{}, []step{
			{[]NodeDelta{set("a", reg("/web:80", "10.0.0.1:80", withHealth("sleepy")))}, errorsAre(`node "a": /web:80 backend 10.0.0.1:80: health "sleepy" is not one of healthy, draining, unhealthy`)},
			{[]NodeDelta{set("a", reg("/web:80", "10.0.0.1:80"))}, errorsAre()},
		}},
		{"the second family of a name", Config{V6: netip.MustParsePrefix("fd01:c::/125")}, []step{
			{[]NodeDelta{set("a", web, reg("/web:80", "[fd00::1]:80", withClaim("fd01:c::2", t0)))}, func(t *testing.T, m *Model, tab *Table) {
				if a, ok := m.Placed(NameKey{Name: "WEB", V6: true}); !ok || a != netip.MustParseAddr("fd01:c::2") {
					t.Fatalf("Placed(WEB, v6) = %s, %v", a, ok)
				}
			}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewModel(c.cfg)
			var prev *Table
			for i, s := range c.steps {
				m.Apply(s.deltas)
				tab := m.Table()
				if want := Build(c.cfg, m.State()); !sameContent(tab, want) {
					t.Fatalf("step %d: model %+v %q\nbuild %+v %q", i, tab.VIPs, tab.Errors, want.VIPs, want.Errors)
				}
				if prev != nil {
					keys, ok := tab.ChangedSince(prev)
					diff := differingKeys(prev, tab)
					slices.SortFunc(keys, compareServiceKeys)
					slices.SortFunc(diff, compareServiceKeys)
					if !ok || !slices.Equal(keys, diff) {
						t.Fatalf("step %d: ChangedSince = %v, %v; tables differ at %v", i, keys, ok, diff)
					}
					if len(diff) == 0 && slices.Equal(prev.Errors, tab.Errors) && tab != prev {
						t.Fatalf("step %d: nothing changed but a new table was made", i)
					}
				}
				if s.check != nil {
					s.check(t, m, tab)
				}
				prev = tab
			}
		})
	}
}

// TestModelKeyHashChains: with every key under one hash, a node's
// registrations form one chain; removing the head, the middle and the tail,
// and setting a removed key again, keep the model equal to Build.
func TestModelKeyHashChains(t *testing.T) {
	real := regKeyHash
	t.Cleanup(func() { regKeyHash = real })
	regKeyHash = func(*RegKey) uint64 { return 7 }

	a, b, c := reg("/app:80", "10.0.0.1:80"), reg("/app:80", "10.0.0.2:80"), reg("/web:80", "10.0.0.3:80")
	heavier := func(r Registration) Registration { r.Weight = 5; return r }
	m := NewModel(Config{})
	state := map[RegKey]Registration{}
	for i, d := range []NodeDelta{
		set("n1", a, b, c),
		removed("n1", b),       // the middle of the chain (c, b, a)
		set("n1", heavier(b)),  // b again, at the head
		removed("n1", a),       // the tail
		set("n1", heavier(c)),  // a replacement in the middle
		removed("n1", b),       // the head
		set("n1", a, b),        // both back
		removed("n1", a, b, c), // all
		set("n1", heavier(a)),  // a node that emptied, again
	} {
		for _, k := range d.Removed {
			delete(state, k)
		}
		for _, r := range d.Set {
			state[r.Key()] = r
		}
		m.Apply([]NodeDelta{d})
		var regs []Registration
		for _, r := range state {
			regs = append(regs, r)
		}
		want := Build(Config{}, ClusterState{{Node: "n1", Backends: regs}})
		if got := m.Table(); !sameContent(got, want) {
			t.Fatalf("step %d: model %+v\nbuild %+v", i, got.VIPs, want.VIPs)
		}
		if n := m.nodes["n1"]; n != nil {
			chain := 0
			for r := n.byKey[7]; r != nil; r = r.next {
				chain++
			}
			if chain != len(state) || len(n.regs) != len(state) {
				t.Fatalf("step %d: chain of %d, %d registrations held, want %d", i, chain, len(n.regs), len(state))
			}
		} else if len(state) != 0 {
			t.Fatalf("step %d: node gone with %d registrations", i, len(state))
		}
	}
}
