package vip

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchState is a cluster in steady state: vips named VIPs of backendsPer
// backends each, spread over nodes nodes, every registration carrying the
// claim its name holds (as ProposeClaim gave it).
func benchState(vips, backendsPer, nodes int) ClusterState {
	state := make(ClusterState, nodes)
	for i := range state {
		state[i].Node = fmt.Sprintf("node-%04d", i)
	}
	for v := range vips {
		spec := Spec{Protocol: TCP, Name: fmt.Sprintf("/group%d/app%d", v%100, v), Port: uint16(80 + v%3)}
		for b := range backendsPer {
			k := (v*backendsPer + b) % nodes
			state[k].Backends = append(state[k].Backends, Registration{
				VIP:     spec,
				Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 1}), uint16(10000+v%50000)),
				Weight:  1, Health: Healthy,
			})
		}
	}
	tab := Build(Config{}, state)
	addr := map[string]netip.Addr{}
	for _, v := range tab.VIPs {
		addr[v.Name] = v.Addr
	}
	for i := range state {
		for j := range state[i].Backends {
			r := &state[i].Backends[j]
			r.Claim = Claim{Addr: addr[r.VIP.Name], Since: t0}
		}
	}
	return state
}

func BenchmarkBuild(b *testing.B) {
	for _, vips := range []int{1000, 5000, 10000} {
		state := benchState(vips, 10, 1000)
		b.Run(fmt.Sprintf("vips=%d/backends=10/nodes=1000", vips), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab := Build(Config{}, state)
				if len(tab.VIPs) != vips || len(tab.Errors) != 0 {
					b.Fatalf("%d VIPs, errors %q", len(tab.VIPs), tab.Errors)
				}
			}
		})
	}
}

func BenchmarkProposeClaim(b *testing.B) {
	state := benchState(10000, 10, 1000)
	spec := mustSpec("/new/app:80")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ProposeClaim(Config{}, state, spec, "", false, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSpec(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSpec("udp:///dcos-101/app2:10000"); err != nil {
			b.Fatal(err)
		}
	}
}

// modelOf returns a model holding state, with its table made.
func modelOf(b *testing.B, state ClusterState) *Model {
	m := NewModel(Config{})
	m.Apply(deltasOf(state))
	if tab := m.Table(); len(tab.Errors) != 0 {
		b.Fatalf("errors %q", tab.Errors)
	}
	return m
}

// deltasOf is state as changes to an empty model: each node sets its
// registrations.
func deltasOf(state ClusterState) []NodeDelta {
	deltas := make([]NodeDelta, len(state))
	for i, n := range state {
		deltas[i] = NodeDelta{Node: n.Node, Set: n.Backends}
	}
	return deltas
}

// BenchmarkModelOneBackendChange times what one backend changing costs the
// model in a steady 10,000 VIPs x 10 backends over 1,000 nodes: one
// registration's weight flips (a different one each time), Apply, then
// Table (which copies the VIP slice once).
func BenchmarkModelOneBackendChange(b *testing.B) {
	state := benchState(10000, 10, 1000)
	m := modelOf(b, state)
	prev := m.Table()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n := &state[i%len(state)]
		r := &n.Backends[(i/len(state))%len(n.Backends)]
		r.Weight = 3 - r.Weight // 1 <-> 2
		m.Apply([]NodeDelta{{Node: n.Node, Set: []Registration{*r}}})
		tab := m.Table()
		if tab == prev || len(tab.VIPs) != 10000 {
			b.Fatalf("no new table, or %d VIPs", len(tab.VIPs))
		}
		prev = tab
		i++
	}
}

// BenchmarkModelCopyVIPs is the part of Table that does not depend on the
// change: copying the 10,000 VIPs into the new table's slice.
func BenchmarkModelCopyVIPs(b *testing.B) {
	vips := Build(Config{}, benchState(10000, 10, 1000)).VIPs
	b.ReportAllocs()
	for b.Loop() {
		out := make([]VIP, 0, len(vips))
		out = append(out, vips...)
		if len(out) != len(vips) {
			b.Fatal(len(out))
		}
	}
}

// BenchmarkModelNameChurn times a name coming (one backend, with the claim
// ProposeClaims gave it) and going on the 10,000-VIP state: while every
// name holds its claim (clean), and when one name in a hundred has no
// claim, so the address book re-places the family (unclaimed).
func BenchmarkModelNameChurn(b *testing.B) {
	for _, unclaimed := range []bool{false, true} {
		name := "clean"
		if unclaimed {
			name = "unclaimed"
		}
		b.Run(name, func(b *testing.B) {
			state := benchState(10000, 10, 1000)
			if unclaimed {
				for i := range state {
					for j := range state[i].Backends {
						if r := &state[i].Backends[j]; r.Backend.Port()%100 == 0 {
							r.Claim = Claim{}
						}
					}
				}
			}
			m := modelOf(b, state)
			spec := mustSpec("/churn/app:80")
			claims, errs := m.ProposeClaims([]ClaimRequest{{Spec: spec}}, t0)
			if errs[0] != nil {
				b.Fatal(errs[0])
			}
			r := Registration{VIP: spec, Backend: netip.MustParseAddrPort("10.9.9.9:80"), Weight: 1, Health: Healthy, Claim: claims[0]}
			b.ReportAllocs()
			for b.Loop() {
				m.Apply([]NodeDelta{{Node: "node-0000", Set: []Registration{r}}})
				if tab := m.Table(); len(tab.VIPs) != 10001 {
					b.Fatalf("%d VIPs", len(tab.VIPs))
				}
				m.Apply([]NodeDelta{{Node: "node-0000", Removed: []RegKey{r.Key()}}})
				if tab := m.Table(); len(tab.VIPs) != 10000 {
					b.Fatalf("%d VIPs", len(tab.VIPs))
				}
			}
		})
	}
}

// BenchmarkProposeClaims proposes k new names in one batch on the
// 10,000-VIP state.
func BenchmarkProposeClaims(b *testing.B) {
	m := modelOf(b, benchState(10000, 10, 1000))
	for _, k := range []int{1, 1000} {
		reqs := make([]ClaimRequest, k)
		for i := range reqs {
			reqs[i] = ClaimRequest{Spec: Spec{Protocol: TCP, Name: fmt.Sprintf("/new/app%d", i), Port: 80}}
		}
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, errs := m.ProposeClaims(reqs, t0)
				if errs[k-1] != nil {
					b.Fatal(errs[k-1])
				}
			}
		})
	}
}

// BenchmarkModelFromEmpty applies the whole 10,000 VIPs x 10 backends state
// to an empty model and makes its table: compare with BenchmarkBuild's
// vips=10000 in the same run.
func BenchmarkModelFromEmpty(b *testing.B) {
	state := benchState(10000, 10, 1000)
	deltas := deltasOf(state)
	b.ReportAllocs()
	for b.Loop() {
		m := NewModel(Config{})
		m.Apply(deltas)
		if tab := m.Table(); len(tab.VIPs) != 10000 {
			b.Fatalf("%d VIPs", len(tab.VIPs))
		}
	}
}
