package agent

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/vip"
)

// connsPlane is a data plane of which only the connection counts are read.
type connsPlane struct {
	DataPlane
	conns map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns
}

func (p connsPlane) Connections() map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns { return p.conns }

// figuresFromView is what the collector exported before vipFigures: the
// numbers of each VIP of /v1/vips.
func figuresFromView(a *localNode) []vipFigures {
	var out []vipFigures
	for _, x := range a.VIPs().VIPs {
		f := vipFigures{label: x.Label, programmed: len(x.ProgrammedOn), live: x.LiveNodes}
		for _, b := range x.Backends {
			f.active += b.ActiveConns
			f.inactive += b.InactConns
		}
		if t := x.Traffic; t != nil {
			f.counted = true
			f.traffic = ipvs.Traffic{Conns: t.Conns, InPkts: t.InPkts, OutPkts: t.OutPkts, InBytes: t.InBytes, OutBytes: t.OutBytes, CPS: t.CPS}
		}
		out = append(out, f)
	}
	return out
}

// TestVIPFiguresMatchTheView: for random tables (named and IP VIPs, public
// ports, unhealthy backends, backends of live and unknown nodes) and random
// kernel counts (some with counters, some draining, some of backends no
// longer in the table), the figures /metrics exports equal those of the
// /v1/vips view they replaced.
func TestVIPFiguresMatchTheView(t *testing.T) {
	net := memnet.New()
	n1, seed := startProgressNode(t, net, "n1")
	startProgressNode(t, net, "n2", seed)
	waitFor := time.Now().Add(10 * time.Second)
	for len(n1.a.cluster.Applied()) < 2 && time.Now().Before(waitFor) {
		time.Sleep(20 * time.Millisecond)
	}
	nodes := []string{"n1", "n2", "gone-node"}
	healths := []vip.Health{vip.Healthy, vip.Healthy, vip.Draining, vip.Unhealthy}
	programmedSome := false
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		state := vip.ClusterState{}
		for _, n := range nodes {
			ns := vip.NodeState{Node: n}
			for range rng.IntN(12) {
				r := vip.Registration{
					VIP:     vip.Spec{Protocol: vip.TCP, Name: fmt.Sprintf("/app%d", rng.IntN(6)), Port: 80},
					Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(3)), byte(1 + rng.IntN(20))}), 8080),
					Weight:  uint32(rng.IntN(3)), Health: healths[rng.IntN(len(healths))],
				}
				if rng.IntN(4) == 0 {
					r.VIP = vip.Spec{Protocol: vip.TCP, Addr: netip.AddrFrom4([4]byte{11, 9, 0, byte(1 + rng.IntN(3))}), Port: 80}
				}
				if rng.IntN(3) == 0 {
					r.Public, r.PublicPort = true, uint16(10000+rng.IntN(2))
				}
				ns.Backends = append(ns.Backends, r)
			}
			state = append(state, ns)
		}
		tab := vip.Build(vip.Config{}, state)
		public := []netip.Addr{netip.MustParseAddr("198.51.100.7")}
		conns := map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns{}
		count := func(k vip.ServiceKey, ap netip.AddrPort) {
			if conns[k] == nil {
				conns[k] = map[netip.AddrPort]ipvs.Conns{}
			}
			c := ipvs.Conns{Active: uint32(rng.IntN(5)), Inactive: uint32(rng.IntN(5)), Draining: rng.IntN(3) == 0}
			if rng.IntN(2) == 0 {
				c.Traffic = &ipvs.Traffic{Conns: uint64(rng.IntN(100)), InPkts: uint64(rng.IntN(100)), OutBytes: uint64(rng.IntN(1000)), CPS: uint64(rng.IntN(9))}
			}
			conns[k][ap] = c
		}
		for _, v := range tab.VIPs {
			keys := []vip.ServiceKey{v.ServiceKey}
			if v.PublicPort != 0 {
				keys = append(keys, vip.ServiceKey{Addr: public[0], Port: v.PublicPort, Protocol: v.Protocol})
			}
			for _, k := range keys {
				for _, bs := range [][]vip.Backend{v.Backends, v.Down} {
					for _, b := range bs {
						if rng.IntN(3) > 0 {
							count(k, b.Addr)
						}
					}
				}
				for range rng.IntN(3) { // no longer in the table
					count(k, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, 9, byte(1 + rng.IntN(200))}), 8080))
				}
			}
		}
		core := NewCore(CoreConfig{Node: "n1"}, n1.a.cluster)
		core.table.Store(tab)
		core.programmed.Store(tab)
		a := &localNode{core: core, cluster: n1.a.cluster, plane: connsPlane{conns: conns}, public: public}
		want := figuresFromView(a)
		var got []vipFigures
		a.vipFigures(func(f *vipFigures) { got = append(got, *f) })
		if len(got) != len(want) {
			t.Fatalf("seed %d: %d VIPs' figures, the view has %d", seed, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("seed %d, %s:\n figures %+v\n view    %+v", seed, want[i].label, got[i], want[i])
			}
			programmedSome = programmedSome || want[i].programmed > 0
		}
	}
	if !programmedSome {
		t.Error("no VIP was programmed on any node in any run: the programmed count went untested")
	}
}

// BenchmarkVIPMetricsScrape: one scrape of the per-VIP series at 10,000
// VIPs x 10 backends over 3 nodes, read straight from the tables (figures)
// and, for comparison, through the /v1/vips view the collector used before
// (view).
func BenchmarkVIPMetricsScrape(b *testing.B) {
	net := memnet.New()
	n1, _ := startProgressNode(b, net, "n1")
	state := vip.ClusterState{{Node: "n1"}, {Node: "n2"}, {Node: "n3"}}
	for i := range 10000 {
		for j := range 10 {
			k := i*10 + j
			state[k%3].Backends = append(state[k%3].Backends, vip.Registration{
				VIP:     vip.Spec{Protocol: vip.TCP, Name: fmt.Sprintf("/bench/app%d", i), Port: 80},
				Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)}), 8080),
				Weight:  1, Health: vip.Healthy,
			})
		}
	}
	tab := vip.Build(vip.Config{}, state)
	core := NewCore(CoreConfig{Node: "n1"}, n1.a.cluster)
	core.table.Store(tab)
	core.programmed.Store(tab)
	a := &localNode{core: core, cluster: n1.a.cluster}
	for _, c := range []struct {
		name string
		col  *vipCollector
	}{
		{"figures", newVIPCollector(a.vipFigures)},
		{"view", newVIPCollector(func(yield func(*vipFigures)) {
			for _, f := range figuresFromView(a) {
				yield(&f)
			}
		})},
	} {
		b.Run(c.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(c.col)
			b.ReportAllocs()
			for b.Loop() {
				mfs, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
