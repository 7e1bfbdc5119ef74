package agent

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/vip"
)

// A backend's counts are those of the VIP and of its public ports here.
func TestMergeConnsSumsPublicPorts(t *testing.T) {
	v := vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP}
	p := vip.ServiceKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 10000, Protocol: vip.TCP}
	b := netip.MustParseAddrPort("10.0.0.2:8080")
	conns := map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns{
		v: {b: {Active: 1, Inactive: 2, Weight: 1, Traffic: &ipvs.Traffic{Conns: 5, InBytes: 100, CPS: 1}}},
		p: {b: {Active: 3, Weight: 1, Draining: true, Traffic: &ipvs.Traffic{Conns: 7, InBytes: 50, OutBPS: 9}}},
	}
	if got := mergeConns(conns, []vip.ServiceKey{v}); got[b].Active != 1 {
		t.Fatalf("one key: %+v", got[b])
	}
	got := mergeConns(conns, []vip.ServiceKey{v, p})[b]
	want := ipvs.Traffic{Conns: 12, InBytes: 150, CPS: 1, OutBPS: 9}
	if got.Active != 4 || got.Inactive != 2 || !got.Draining || got.Traffic == nil || *got.Traffic != want {
		t.Fatalf("merged %+v (traffic %+v)", got, got.Traffic)
	}
	if *conns[v][b].Traffic != (ipvs.Traffic{Conns: 5, InBytes: 100, CPS: 1}) {
		t.Fatal("merging changed the plane's counts")
	}
}

// /metrics has, per VIP, what /v1/vips shows.
func TestVIPCollector(t *testing.T) {
	c := newVIPCollector(func(yield func(*vipFigures)) {
		yield(&vipFigures{label: "/app:80", programmed: 2, live: 3, active: 4, inactive: 2, counted: true,
			traffic: ipvs.Traffic{Conns: 12, InBytes: 100, OutBytes: 200, InPkts: 3, OutPkts: 4, CPS: 2}})
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" {
					name += "/" + l.GetValue()
				}
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"l4lb_vip_programmed_nodes": 2, "l4lb_vip_live_nodes": 3, "l4lb_vip_active_connections": 4,
		"l4lb_vip_inactive_connections": 2, "l4lb_vip_connections_total": 12, "l4lb_vip_bytes_total/in": 100,
		"l4lb_vip_bytes_total/out": 200, "l4lb_vip_packets_total/in": 3, "l4lb_vip_packets_total/out": 4, "l4lb_vip_connections_per_second": 2}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
