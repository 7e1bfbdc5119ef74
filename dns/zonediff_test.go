package dns

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// tableModel is a set of VIPs that a test changes at random, deriving each
// table from the previous one as the agent's pipeline does.
type tableModel struct {
	rng  *rand.Rand
	vips map[vip.ServiceKey]vip.VIP
	last *vip.Table
}

// Pools small enough that keys, names and addresses collide often: one name
// on several ports and protocols, several names on one address, A and AAAA
// under one name, SRV owners shared by ports.
var (
	modelAddrs = []string{"11.0.0.1", "11.0.0.2", "11.0.1.3", "fd01:c::1", "fd01:c::2", "10.9.9.9"}
	modelPorts = []uint16{80, 443, 8080}
	modelApps  = []string{"/dcos-101/app2", "/dcos-101/app3", "/web", "/g1/web", "/g1/g2/db", "/a", "/b/a"}
)

// randomNames returns the names of a random VIP: mostly an app's two names,
// sometimes a name outside the apex, the apex itself, one directly under
// the apex, a mixed-case spelling or no name at all (an IP VIP).
func (m *tableModel) randomNames() (string, []string) {
	app := modelApps[m.rng.IntN(len(modelApps))]
	v := named(app, "11.0.0.1", 80, vip.TCP)
	names := v.Names
	switch m.rng.IntN(12) {
	case 0:
		return "", nil
	case 1:
		names = append(slices.Clone(names), "x.marathon.example.org.")
	case 2:
		names = []string{apex, "top." + apex}
	case 3:
		names = []string{strings.ToUpper(names[0]), names[0]}
	case 4:
		names = []string{"top." + apex}
	}
	return app, names
}

func (m *tableModel) randomVIP(k vip.ServiceKey) vip.VIP {
	app, names := m.randomNames()
	v := vip.VIP{ServiceKey: k, Label: fmt.Sprintf("%s:%d", app, k.Port), Name: app, Names: names, Scheduler: vip.DefaultScheduler}
	if app != "" {
		v.Framework = vip.DefaultFramework
	}
	v.Backends = m.randomBackends()
	return v
}

// randomBackends: none, all draining, or some with weight.
func (m *tableModel) randomBackends() []vip.Backend {
	var out []vip.Backend
	for i := range m.rng.IntN(4) {
		out = append(out, vip.Backend{
			Addr:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080),
			Weight: uint32(m.rng.IntN(3)), Node: "node-1", Health: vip.Healthy,
		})
	}
	return out
}

func (m *tableModel) randomKey() vip.ServiceKey {
	proto := vip.TCP
	if m.rng.IntN(3) == 0 {
		proto = vip.UDP
	}
	return vip.ServiceKey{
		Addr:     netip.MustParseAddr(modelAddrs[m.rng.IntN(len(modelAddrs))]),
		Port:     modelPorts[m.rng.IntN(len(modelPorts))],
		Protocol: proto,
	}
}

// step makes a few random changes and derives the next table, telling
// vip.Derive the keys it changed (and, at times, one it did not).
func (m *tableModel) step() *vip.Table {
	var changed []vip.ServiceKey
	for range m.rng.IntN(5) {
		k := m.randomKey()
		v, ok := m.vips[k]
		switch op := m.rng.IntN(6); {
		case !ok:
			m.vips[k] = m.randomVIP(k)
		case op == 0:
			delete(m.vips, k)
		case op == 1: // the backends change: drain, undrain, lose them all
			v.Backends = m.randomBackends()
			m.vips[k] = v
		case op == 2: // one backend flips to weight 0 or back
			if len(v.Backends) > 0 {
				v.Backends = slices.Clone(v.Backends)
				b := &v.Backends[m.rng.IntN(len(v.Backends))]
				b.Weight = 1 - min(b.Weight, 1)
				m.vips[k] = v
			}
		case op == 3: // the VIP moves to another key with its names
			delete(m.vips, k)
			k2 := m.randomKey()
			v.ServiceKey = k2
			m.vips[k2] = v
			changed = append(changed, k2)
		default: // the VIP changes names
			_, v.Names = m.randomNames()
			m.vips[k] = v
		}
		changed = append(changed, k)
	}
	if m.rng.IntN(4) == 0 {
		changed = append(changed, m.randomKey()) // may not have changed at all
	}
	m.last = vip.Derive(m.last, m.sorted(), nil, changed)
	return m.last
}

func (m *tableModel) sorted() []vip.VIP {
	out := make([]vip.VIP, 0, len(m.vips))
	for _, v := range m.vips {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b vip.VIP) int { return vip.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return out
}

// Property: after every step of a random sequence of derived tables, the zone
// made by difference answers exactly as a zone built from scratch for the
// same table (records, owner names, prepared answers and the answer to every
// question), and every step after the first was made by difference.
func TestZoneByDifferenceEqualsRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for seq := range 25 {
		cfg := Config{Forward: seq%2 == 0, Upstreams: []string{"127.0.0.1:1"}}
		if seq%3 == 0 {
			cfg.Listen = []string{"127.0.0.2:53", "[::1]:53", "127.0.0.2:5353"}
		}
		s := newTestServer(t, cfg, nil)
		m := &tableModel{rng: rng, vips: map[vip.ServiceKey]vip.VIP{}}
		for step := range 40 {
			tab := m.step()
			s.Update(tab)
			where := fmt.Sprintf("sequence %d step %d", seq, step)
			assertZoneEqualsRebuild(t, where, s, tab)
			if st := s.Stats(); st.ZoneRebuilds != 2 || st.ZoneUpdates != uint64(step) {
				t.Fatalf("%s: %d rebuilds and %d updates by difference; want 2 (NewServer, the first table) and %d", where, st.ZoneRebuilds, st.ZoneUpdates, step)
			}
		}
	}
}

// assertZoneEqualsRebuild checks that the server's zone says exactly what a
// zone built from scratch for tab says.
func assertZoneEqualsRebuild(t *testing.T, where string, s *Server, tab *vip.Table) {
	t.Helper()
	got := s.zone.Load()
	want, _ := buildZone(s.zoneInput(got.serial), tab)
	if a, b := rrStrings(got.records()), rrStrings(want.records()); !slices.Equal(a, b) {
		t.Fatalf("%s: records differ\n got %q\nwant %q", where, a, b)
	}
	gotNames, wantNames := zoneNames(got), zoneNames(want)
	if !slices.Equal(gotNames, wantNames) {
		t.Fatalf("%s: owner names differ\n got %q\nwant %q", where, gotNames, wantNames)
	}
	if got.vipNames != want.vipNames {
		t.Fatalf("%s: %d VIP names, want %d", where, got.vipNames, want.vipNames)
	}
	for _, name := range wantNames {
		g, w := got.lookup(name), want.lookup(name)
		if g.below != w.below || !slices.Equal(g.addrs, w.addrs) || !slices.Equal(g.srvs, w.srvs) {
			t.Fatalf("%s: %s counts: got below %d %v %v, want below %d %v %v", where, name, g.below, g.addrs, g.srvs, w.below, w.addrs, w.srvs)
		}
		if !sameFast(g.fast, w.fast) {
			t.Fatalf("%s: %s: prepared answers differ", where, name)
		}
	}
	// Every question: the names in either zone and every name any VIP of
	// the model could have, under the apex and an alias.
	questions := slices.Clone(wantNames)
	for _, app := range modelApps {
		questions = append(questions, named(app, "11.0.0.1", 80, vip.TCP).Names...)
	}
	questions = append(questions, "top."+apex, "_top._tcp."+apex, "_top._udp."+apex, "marathon."+apex, "nope."+apex)
	slices.Sort(questions)
	for _, name := range slices.Compact(questions) {
		for _, qname := range []string{name, strings.TrimSuffix(name, apex) + "dclb.thisdcos.global."} {
			for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypeSOA, mdns.TypeNS, mdns.TypeANY, mdns.TypeTXT} {
				for rot := range uint32(2) {
					a, b := got.resolve(qname, qtype, rot), want.resolve(qname, qtype, rot)
					if !sameResolution(a, b) {
						t.Fatalf("%s: %s %s differs\n got %s\nwant %s", where, qname, mdns.TypeToString[qtype], resolutionText(a), resolutionText(b))
					}
				}
			}
		}
	}
}

func sameFast(a, b fastNode) bool {
	eq := func(x, y [][]byte) bool { return slices.EqualFunc(x, y, bytes.Equal) }
	return eq(a.a, b.a) && eq(a.aaaa, b.aaaa) && eq(a.srv, b.srv)
}

// sameResolution compares two answers record by record, in order, TTL
// included.
func sameResolution(a, b resolution) bool {
	same := func(x, y []mdns.RR) bool {
		return slices.EqualFunc(x, y, func(p, q mdns.RR) bool {
			return p.Header().Name == q.Header().Name && p.Header().Ttl == q.Header().Ttl && mdns.IsDuplicate(p, q)
		})
	}
	return a.inZone == b.inZone && a.rcode == b.rcode && same(a.answer, b.answer) && same(a.ns, b.ns) && same(a.extra, b.extra)
}

func resolutionText(r resolution) string {
	return fmt.Sprintf("in=%v rcode=%d answer=%q ns=%q extra=%q", r.inZone, r.rcode, rrStrings(r.answer), rrStrings(r.ns), rrStrings(r.extra))
}

// A table that does not descend from the last one applied is built in full,
// and the zone is still right: another lineage, a table made by hand, a
// sibling derived from the same base, an ancestor, and nil.
func TestZoneRebuiltWhenNotDescended(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	m := &tableModel{rng: rng, vips: map[vip.ServiceKey]vip.VIP{}}
	for range 5 {
		m.step()
	}
	base := m.step()
	child := m.step()
	m2 := &tableModel{rng: rng, vips: map[vip.ServiceKey]vip.VIP{}}
	for range 3 {
		m2.step()
	}
	other := m2.step()
	sibling := vip.Derive(base, baseTable().VIPs, nil, nil)
	tests := []struct {
		name        string
		first, then *vip.Table
	}{
		{"another lineage", child, other},
		{"a table made by hand", child, table(m.sorted()...)},
		{"a sibling derived from the same base", child, sibling},
		{"an ancestor", child, base},
		{"nil", child, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{}, tc.first)
			before := s.Stats()
			s.Update(tc.then)
			after := s.Stats()
			if after.ZoneRebuilds != before.ZoneRebuilds+1 || after.ZoneUpdates != before.ZoneUpdates {
				t.Fatalf("rebuilds %d -> %d, updates by difference %d -> %d; want one rebuild", before.ZoneRebuilds, after.ZoneRebuilds, before.ZoneUpdates, after.ZoneUpdates)
			}
			if after.ZoneSerial <= before.ZoneSerial {
				t.Fatalf("serial %d after %d", after.ZoneSerial, before.ZoneSerial)
			}
			assertZoneEqualsRebuild(t, tc.name, s, tc.then)
		})
	}
	t.Run("a descendant is made by difference", func(t *testing.T) {
		// A fresh lineage: deriving the sibling above cut child off base's.
		m := &tableModel{rng: rng, vips: map[vip.ServiceKey]vip.VIP{}}
		base := m.step()
		for range 3 {
			m.step()
		}
		child := m.step()
		s := newTestServer(t, Config{}, base)
		before := s.Stats()
		s.Update(child)
		if after := s.Stats(); after.ZoneUpdates != before.ZoneUpdates+1 || after.ZoneSerial <= before.ZoneSerial {
			t.Fatalf("stats %+v after %+v", after, before)
		}
		assertZoneEqualsRebuild(t, "descendant", s, child)
	})
	t.Run("the same table again moves the serial only", func(t *testing.T) {
		s := newTestServer(t, Config{}, child)
		before := s.Stats()
		old := s.zone.Load()
		s.Update(child)
		after := s.Stats()
		if after.ZoneUpdates != before.ZoneUpdates+1 || after.ZoneSerial <= before.ZoneSerial {
			t.Fatalf("stats %+v after %+v", after, before)
		}
		if z := s.zone.Load(); &z.shards[0] != &old.shards[0] {
			t.Fatalf("an update without change copied the zone's maps")
		}
	})
}

// A table derived from one that vip.Build made (the agent's case) is applied
// by difference, and the flattened names are spelled as vip spells them.
func TestZoneByDifferenceFromBuild(t *testing.T) {
	reg := func(name string, port uint16, backend string, weight uint32) vip.Registration {
		spec, err := vip.ParseSpec(fmt.Sprintf("%s:%d", name, port))
		if err != nil {
			t.Fatal(err)
		}
		return vip.Registration{VIP: spec, Backend: netip.MustParseAddrPort(backend), Weight: weight, Health: vip.Healthy}
	}
	state := vip.ClusterState{{Node: "n1", Backends: []vip.Registration{
		reg("/dcos-101/app2", 10000, "10.0.0.1:8080", 1),
		reg("/dcos-101/app2", 10001, "10.0.0.1:8081", 1),
		reg("/web", 80, "10.0.0.2:80", 1),
	}}}
	built := vip.Build(vip.Config{}, state)
	if len(built.VIPs) != 3 {
		t.Fatalf("table %+v", built)
	}
	s := newTestServer(t, Config{}, built)
	r := ask(t, s, question(app2Flat, mdns.TypeA), false)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("%s from vip.Build's table: %s", app2Flat, r)
	}
	addr := r.Answer[0].(*mdns.A).A.String()
	// Drain every backend of /web: its names go, app2's stay.
	vips := slices.Clone(built.VIPs)
	var changed []vip.ServiceKey
	for i := range vips {
		if vips[i].Name == "/web" {
			vips[i].Backends = slices.Clone(vips[i].Backends)
			vips[i].Backends[0].Weight = 0
			changed = append(changed, vips[i].ServiceKey)
		}
	}
	next := vip.Derive(built, vips, nil, changed)
	s.Update(next)
	if st := s.Stats(); st.ZoneUpdates != 1 {
		t.Fatalf("not applied by difference: %+v", st)
	}
	assertZoneEqualsRebuild(t, "drained /web", s, next)
	if r := ask(t, s, question("web.marathon."+apex, mdns.TypeA), false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("drained /web: %s", r)
	}
	for _, name := range []string{app2, app2Flat} {
		if r := ask(t, s, question(name, mdns.TypeA), false); len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != addr {
			t.Fatalf("%s after /web drained: %s", name, r)
		}
	}
}

// Queries during updates by difference see the old zone or the new one,
// never a mix (go test -race).
func TestQueriesDuringUpdatesByDifference(t *testing.T) {
	with := vip.Derive(nil, baseTable().VIPs, nil, nil)
	s := newTestServer(t, Config{}, with)
	done := make(chan struct{})
	go func() {
		defer close(done)
		prev := with
		for i := range 40 {
			vips := slices.Clone(prev.VIPs)
			var changed []vip.ServiceKey
			for j := range vips {
				if vips[j].Name == "/dcos-101/app2" {
					vips[j].Backends = slices.Clone(vips[j].Backends)
					vips[j].Backends[0].Weight = uint32(i % 2) // drained, then back
					changed = append(changed, vips[j].ServiceKey)
				}
			}
			prev = vip.Derive(prev, vips, nil, changed)
			s.Update(prev)
		}
	}()
	queries := 0
	for running := true; running || queries < 200; queries++ {
		select {
		case <-done:
			running = false
		default:
		}
		for _, tcp := range []bool{false, true} {
			r := ask(t, s, question(app2, mdns.TypeA), tcp)
			switch {
			case r.Rcode == mdns.RcodeNameError && len(r.Answer) == 0 && len(r.Ns) == 1:
			case r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 && r.Answer[0].(*mdns.A).A.String() == "11.0.0.1":
			default:
				t.Fatalf("reply from neither zone:\n%s", r)
			}
		}
	}
	if st := s.Stats(); st.ZoneUpdates != 40 {
		t.Fatalf("%d updates by difference, want 40", st.ZoneUpdates)
	}
}
