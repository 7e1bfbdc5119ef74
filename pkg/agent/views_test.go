package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/l4lb/l4lb/vip"
)

// TestVIPsViewShowsWherePublished: a public VIP shows its public port and,
// on a public node, the addresses of its family it is served at; a VIP
// that loses its public port to another shows the port and no address.
func TestVIPsViewShowsWherePublished(t *testing.T) {
	reg := func(name, backend string, port uint16) vip.Registration {
		return vip.Registration{VIP: vip.Spec{Protocol: vip.TCP, Name: name, Port: 80}, Backend: netip.MustParseAddrPort(backend), Weight: 1, Public: true, PublicPort: port}
	}
	tab := vip.Build(vip.Config{}, vip.ClusterState{{Node: "n", Backends: []vip.Registration{
		reg("/a", "10.0.0.1:80", 10000), reg("/b", "10.0.0.2:80", 10000), reg("/c", "10.0.0.3:80", 0),
	}}})
	public := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	v := vipsView(tab, tab, nil, public)
	got := map[string][]string{}
	for _, x := range v.VIPs {
		if x.PublicPort == 0 {
			t.Errorf("%s: public port 0", x.Label)
		}
		got[x.Label] = x.PublishedAt
	}
	if !slices.Equal(got["/c:80"], []string{"192.0.2.10:80"}) {
		t.Errorf("/c:80 published at %q, want 192.0.2.10:80 (its own port, IPv4 only)", got["/c:80"])
	}
	a, b := got["/a:80"], got["/b:80"]
	if len(a)+len(b) != 1 || !slices.Contains(append(a, b...), "192.0.2.10:10000") {
		t.Errorf("/a:80 at %q, /b:80 at %q: want exactly one of them at 192.0.2.10:10000", a, b)
	}
	if v := vipsView(tab, tab, nil, nil); v.VIPs[0].PublishedAt != nil {
		t.Errorf("not a public node, yet published at %q", v.VIPs[0].PublishedAt)
	}
}

// TestVIPsViewShowsUnhealthyBackends: a backend its node reports unhealthy
// is not in the kernel, but the view lists it, down, with why.
func TestVIPsViewShowsUnhealthyBackends(t *testing.T) {
	reg := func(backend string, h vip.Health) vip.Registration {
		return vip.Registration{VIP: vip.Spec{Protocol: vip.TCP, Name: "/app", Port: 80}, Backend: netip.MustParseAddrPort(backend), Weight: 1, Health: h}
	}
	tab := vip.Build(vip.Config{}, vip.ClusterState{
		{Node: "n1", Backends: []vip.Registration{reg("10.0.0.1:80", vip.Healthy)}},
		{Node: "n2", Backends: []vip.Registration{reg("10.0.0.2:80", vip.Unhealthy)}},
	})
	if v := tab.VIPs[0]; len(v.Backends) != 1 || len(v.Down) != 1 || v.Down[0].Node != "n2" {
		t.Fatalf("table: backends %v, down %v", v.Backends, v.Down)
	}
	v := vipsView(tab, tab, nil, nil)
	var down []string
	for _, b := range v.VIPs[0].Backends {
		if b.State == "down" {
			down = append(down, b.Address+" "+b.Reason)
		}
	}
	if !slices.Equal(down, []string{"10.0.0.2:80 failing its health check on n2"}) {
		t.Errorf("down backends shown: %q", down)
	}
}
