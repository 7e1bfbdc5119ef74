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
