package agent

import (
	"net/netip"
	"testing"

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
