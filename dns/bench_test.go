package dns

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// benchTable is n named VIPs /bench/appN on TCP 80, one address each (the
// same shape as bench/dns/dnsbench).
func benchTable(n int) *vip.Table {
	t := &vip.Table{}
	for i := range n {
		v := named(fmt.Sprintf("/bench/app%d", i), "11.0.0.1", 80, vip.TCP)
		v.Addr = netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		t.VIPs = append(t.VIPs, v)
	}
	return t
}

// discard is a ResponseWriter that throws replies away (after packing, for
// WriteMsg), so that benchmarks measure the handler.
type discard struct{ remote net.Addr }

func (d discard) LocalAddr() net.Addr  { return d.remote }
func (d discard) RemoteAddr() net.Addr { return d.remote }
func (d discard) WriteMsg(m *mdns.Msg) error {
	_, err := m.Pack()
	return err
}
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) Close() error                { return nil }
func (d discard) TsigStatus() error           { return nil }
func (d discard) TsigTimersOnly(bool)         {}
func (d discard) Hijack()                     {}

// BenchmarkServeDNS is the handler on a 10,000-VIP zone.
func BenchmarkServeDNS(b *testing.B) {
	s := newTestServer(b, Config{}, benchTable(10000))
	var w mdns.ResponseWriter = discard{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	cases := []struct {
		name string
		q    *mdns.Msg
	}{
		{"A/prepared", question("app4242.bench.marathon."+apex, mdns.TypeA)},
		{"A/prepared+EDNS", withEDNS(question("app4242.bench.marathon."+apex, mdns.TypeA), 1232, false)},
		{"SRV/prepared", question("_app4242._tcp.bench.marathon."+apex, mdns.TypeSRV)},
		{"A/alias", question("app4242.bench.marathon.dclb.thisdcos.global.", mdns.TypeA)},
		{"NXDOMAIN", question("nope.bench.marathon."+apex, mdns.TypeA)},
		{"NODATA", question("app4242.bench.marathon."+apex, mdns.TypeAAAA)},
		{"refused", question("example.com.", mdns.TypeA)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.ServeDNS(w, c.q)
			}
		})
	}
}

// BenchmarkPreparedRaw is the UDP read loop's work per query, without the
// socket: read the raw query, find and patch the prepared answer.
func BenchmarkPreparedRaw(b *testing.B) {
	s := newTestServer(b, Config{}, benchTable(10000))
	z := s.zone.Load()
	wire, _ := withEDNS(question("app4242.bench.marathon."+apex, mdns.TypeA), 1232, false).Pack()
	out := make([]byte, 0, 512)
	var key [256]byte
	b.ReportAllocs()
	for b.Loop() {
		var q query
		if !parseQuery(wire, &q, key[:]) {
			b.Fatal("not parsed")
		}
		r, ok := z.fastReply(out, &q)
		if !ok {
			b.Fatal("no prepared answer")
		}
		out = r[:0]
	}
}

// BenchmarkBuildZone is one zone built from scratch: the first table, and
// the fallback for a table that does not descend from the last one.
func BenchmarkBuildZone(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			t := benchTable(n)
			b.ReportAllocs()
			for b.Loop() {
				buildZone(zoneInput{apex: apex, ttl: 5, serial: 1}, t)
			}
		})
	}
	b.Run("vips=10000/backends=10/nodes=1000", func(b *testing.B) {
		t := vip.Build(vip.Config{}, benchState(10000, 10, 1000))
		b.ReportAllocs()
		for b.Loop() {
			buildZone(zoneInput{apex: apex, ttl: 5, serial: 1}, t)
		}
	})
}

// benchState is a cluster of vips named VIPs (/groupG/appN, TCP port 80 to
// 82) of backendsPer backends each, spread over nodes nodes: the shape of
// vip's BenchmarkBuild.
func benchState(vips, backendsPer, nodes int) vip.ClusterState {
	state := make(vip.ClusterState, nodes)
	for i := range state {
		state[i].Node = fmt.Sprintf("node-%04d", i)
	}
	for v := range vips {
		spec := vip.Spec{Protocol: vip.TCP, Name: fmt.Sprintf("/group%d/app%d", v%100, v), Port: uint16(80 + v%3)}
		for k := range backendsPer {
			n := (v*backendsPer + k) % nodes
			state[n].Backends = append(state[n].Backends, vip.Registration{
				VIP:     spec,
				Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 1}), uint16(10000+v%50000)),
				Weight:  1, Health: vip.Healthy,
			})
		}
	}
	return state
}

// BenchmarkZoneOneBackendChange is Update with a table derived from the last
// one (vip.Derive) in a 10,000-VIP x 10-backend table over 1,000 nodes (made
// by vip.Build): one backend of one VIP goes to weight 0, and back, on
// alternate iterations. "last backend" drains every backend of the VIP
// instead, so that its names leave the zone and come back. Each iteration
// includes the Derive.
func BenchmarkZoneOneBackendChange(b *testing.B) {
	base := vip.Build(vip.Config{}, benchState(10000, 10, 1000))
	if len(base.VIPs) != 10000 || len(base.Errors) != 0 {
		b.Fatalf("%d VIPs, errors %q", len(base.VIPs), base.Errors)
	}
	for _, tc := range []struct {
		name    string
		drained []int // backends of the VIP set to weight 0
	}{
		{"one backend", []int{3}},
		{"last backend", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := newTestServer(b, Config{}, base)
			i := len(base.VIPs) / 2
			changed := slices.Clone(base.VIPs)
			changed[i].Backends = slices.Clone(changed[i].Backends)
			for _, k := range tc.drained {
				changed[i].Backends[k].Weight = 0
			}
			keys := []vip.ServiceKey{base.VIPs[i].ServiceKey}
			name := base.VIPs[i].Names[0]
			prev, n := base, 0
			b.ReportAllocs()
			for b.Loop() {
				vips := changed
				if n%2 == 1 {
					vips = base.VIPs
				}
				prev = vip.Derive(prev, vips, nil, keys)
				s.Update(prev)
				n++
			}
			b.StopTimer()
			if st := s.Stats(); st.ZoneRebuilds != 2 || st.ZoneUpdates != uint64(n) {
				b.Fatalf("%d rebuilds, %d updates by difference in %d iterations", st.ZoneRebuilds, st.ZoneUpdates, n)
			}
			r := ask(b, s, question(name, mdns.TypeA), false)
			if serving := n%2 == 0 || len(tc.drained) < 10; serving != (len(r.Answer) == 1) {
				b.Fatalf("after %d flips: %s", n, r)
			}
		})
	}
}

// BenchmarkZoneLookup is the map lookup of the prepared-answer path on a
// 10,000-VIP zone: the zone's 1,024 maps against one map of the same names
// (the layout before updates by difference), in the same run.
func BenchmarkZoneLookup(b *testing.B) {
	z, _ := buildZone(zoneInput{apex: apex, ttl: 5, serial: 1}, benchTable(10000))
	one := map[string]*node{}
	z.each(func(name string, nd *node) { one[name] = nd })
	var keys [][]byte
	for i := range 1000 {
		keys = append(keys, []byte(fmt.Sprintf("app%d.bench.marathon.%s", i*7, apex)))
	}
	b.Run("sharded", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if z.lookupKey(keys[i%len(keys)]) == nil {
				b.Fatal("missing")
			}
			i++
		}
	})
	b.Run("one map", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if one[string(keys[i%len(keys)])] == nil {
				b.Fatal("missing")
			}
			i++
		}
	})
}
