package public

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/l4lb/l4lb/vip"
)

var testAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}

func randomRegistration(rng *rand.Rand) vip.Registration {
	specs := []string{"/a:80", "/b:80", "/c:10000", "udp:///a:80", "192.0.2.1:80", "11.9.9.9:10000"}
	spec, err := vip.ParseSpec(specs[rng.IntN(len(specs))])
	if err != nil {
		panic(err)
	}
	backend := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + rng.IntN(3))}), 8080)
	if rng.IntN(4) == 0 && spec.Named() {
		backend = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(1 + rng.IntN(3))}), 8080)
	}
	return vip.Registration{
		VIP: spec, Backend: backend, Weight: uint32(rng.IntN(3)),
		Health:      []vip.Health{vip.Healthy, vip.Draining, vip.Unhealthy}[rng.IntN(3)],
		Persistence: uint32(rng.IntN(2) * 60),
		Public:      rng.IntN(2) == 0,
		PublicPort:  []uint16{0, 0, 10000, 80}[rng.IntN(4)],
	}
}

// TestExpandEqualsBuild: after any sequence of tables of one lineage (and,
// now and then, a table of a fresh lineage), the expansion equals Build's,
// it descends from the previous expansion, and ChangedSince lists every
// key at which the two differ.
func TestExpandEqualsBuild(t *testing.T) {
	for run := 0; run < 150; run++ {
		rng := rand.New(rand.NewPCG(uint64(run), 7))
		addrs := testAddrs[:1+rng.IntN(len(testAddrs))]
		m := vip.NewModel(vip.Config{})
		e := NewExpander(addrs)
		var prev *vip.Table
		held := map[string]map[vip.RegKey]bool{}
		for step := 0; step < 40; step++ {
			node := []string{"n1", "n2", "n3"}[rng.IntN(3)]
			d := vip.NodeDelta{Node: node}
			for i := rng.IntN(4); i >= 0; i-- {
				if rng.IntN(3) == 0 && len(held[node]) > 0 {
					for k := range held[node] {
						d.Removed = append(d.Removed, k)
						delete(held[node], k)
						break
					}
					continue
				}
				r := randomRegistration(rng)
				d.Set = append(d.Set, r)
				if held[node] == nil {
					held[node] = map[vip.RegKey]bool{}
				}
				held[node][r.Key()] = true
			}
			m.Apply([]vip.NodeDelta{d})
			in := m.Table()
			if rng.IntN(10) == 0 {
				in = vip.Build(vip.Config{}, m.State()) // a fresh lineage: rebuilt
			}
			got := e.Expand(in)
			if again := e.Expand(in); again != got {
				t.Fatalf("run %d step %d: a second Expand of one table is another table", run, step)
			}
			wantVIPs, wantErrs := Build(in, addrs)
			if !reflect.DeepEqual(got.VIPs, wantVIPs) || !slices.Equal(got.Errors, wantErrs) {
				t.Fatalf("run %d step %d: incremental\n%+v\n%q\nfrom scratch\n%+v\n%q", run, step, got.VIPs, got.Errors, wantVIPs, wantErrs)
			}
			if prev != nil {
				keys, ok := got.ChangedSince(prev)
				if !ok {
					t.Fatalf("run %d step %d: the expansion does not descend from the previous one", run, step)
				}
				for _, k := range differing(prev, got) {
					if !slices.Contains(keys, k) {
						t.Fatalf("run %d step %d: %v differs but ChangedSince gave %v", run, step, k, keys)
					}
				}
			}
			published := Published(in, addrs)
			n := 0
			for _, aps := range published {
				n += len(aps)
			}
			if n != len(got.VIPs)-len(in.VIPs) {
				t.Fatalf("run %d step %d: Published lists %d public services, the expansion has %d", run, step, n, len(got.VIPs)-len(in.VIPs))
			}
			for i := range got.VIPs {
				v := &got.VIPs[i]
				if origin, ok := e.Origin(v.ServiceKey); ok {
					o, found := in.Find(origin)
					if !found || o.PublicPort != v.Port || !slices.Equal(o.Backends, v.Backends) || len(v.Names) != 0 {
						t.Fatalf("run %d step %d: public service %+v has origin %+v", run, step, v, o)
					}
				}
			}
			prev = got
		}
	}
}

func differing(a, b *vip.Table) []vip.ServiceKey {
	var out []vip.ServiceKey
	for i := range a.VIPs {
		if w, ok := b.Find(a.VIPs[i].ServiceKey); !ok || !reflect.DeepEqual(w, a.VIPs[i]) {
			out = append(out, a.VIPs[i].ServiceKey)
		}
	}
	for i := range b.VIPs {
		if _, ok := a.Find(b.VIPs[i].ServiceKey); !ok {
			out = append(out, b.VIPs[i].ServiceKey)
		}
	}
	return out
}

func TestBuildRules(t *testing.T) {
	tab := vip.Build(vip.Config{}, vip.ClusterState{{Node: "n", Backends: []vip.Registration{
		{VIP: vip.Spec{Protocol: vip.TCP, Name: "/app2", Port: 10000}, Backend: netip.MustParseAddrPort("10.0.0.2:8080"), Public: true},
		{VIP: vip.Spec{Protocol: vip.TCP, Name: "/other", Port: 80}, Backend: netip.MustParseAddrPort("10.0.0.3:8080"), Public: true, PublicPort: 10000},
		{VIP: vip.Spec{Protocol: vip.TCP, Name: "/private", Port: 80}, Backend: netip.MustParseAddrPort("10.0.0.4:8080")},
	}}})
	vips, errs := Build(tab, testAddrs)
	var pub []vip.VIP
	for _, v := range vips {
		if v.Addr == testAddrs[0] || v.Addr == testAddrs[1] {
			pub = append(pub, v)
		}
	}
	app2, _ := findLabel(tab, "/app2:10000")
	other, _ := findLabel(tab, "/other:80")
	holder, loser := app2, other
	if vip.CompareServiceKeys(other.ServiceKey, app2.ServiceKey) < 0 {
		holder, loser = other, app2
	}
	if len(pub) != 2 || pub[0].Label != holder.Label || pub[1].Label != holder.Label || pub[0].Port != 10000 || len(pub[0].Names) != 0 {
		t.Fatalf("public services %+v, want %s at both IPv4 addresses", pub, holder.Label)
	}
	want := leftOutLine(&loser, &holder)
	if !slices.Contains(errs, want) {
		t.Fatalf("errors %q, want %q", errs, want)
	}
	if len(vips) != len(tab.VIPs)+2 {
		t.Fatalf("%d VIPs, want the table's %d + 2 (no IPv6 public service for IPv4 VIPs)", len(vips), len(tab.VIPs))
	}
}

func findLabel(t *vip.Table, label string) (vip.VIP, bool) {
	for _, v := range t.VIPs {
		if v.Label == label {
			return v, true
		}
	}
	return vip.VIP{}, false
}

func TestNoAddressesIsTheTableItself(t *testing.T) {
	tab := vip.Build(vip.Config{}, nil)
	if got := NewExpander(nil).Expand(tab); got != tab {
		t.Fatal("without public addresses the expansion is not the table itself")
	}
}
