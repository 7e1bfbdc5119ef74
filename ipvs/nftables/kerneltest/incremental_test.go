package kerneltest

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/l4lb/l4lb/ipvs/ipvstest"
	"github.com/l4lb/l4lb/ipvs/nftables"
	"github.com/l4lb/l4lb/vip"
)

// derive makes the next table of a lineage from t by applying change to a
// copy of the VIP with key k (or appending v when k is absent).
func derive(t *vip.Table, k vip.ServiceKey, change func(v *vip.VIP)) *vip.Table {
	vs := slices.Clone(t.VIPs)
	for i := range vs {
		if vs[i].ServiceKey == k {
			vs[i].Backends = slices.Clone(vs[i].Backends)
			change(&vs[i])
			return vip.Derive(t, vs, nil, []vip.ServiceKey{k})
		}
	}
	v := vip.VIP{ServiceKey: k}
	change(&v)
	vs = append(vs, v)
	slices.SortFunc(vs, func(a, b vip.VIP) int { return vip.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return vip.Derive(t, vs, nil, []vip.ServiceKey{k})
}

// delta is what one sync sent to the kernel.
type delta struct {
	tx, msgs, elems, dumps uint64
}

func syncDelta(t *testing.T, r *nftables.Reconciler, full bool) delta {
	t.Helper()
	before := r.KernelCounters()
	if err := r.SyncNow(full); err != nil {
		t.Fatalf("sync: %v", err)
	}
	after := r.KernelCounters()
	return delta{after.Transactions - before.Transactions, after.Messages - before.Messages, after.Elements - before.Elements, after.Dumps - before.Dumps}
}

// TestIncrementalWrites: on a 500-VIP table, each change is one
// transaction of a few messages and elements, whatever the table size; an
// unchanged sync, incremental or full, writes nothing.
func TestIncrementalWrites(t *testing.T) {
	b := newBed(t)
	r := b.reconciler(t, nftables.Config{})
	big := ipvstest.BigTable(500, 3)
	base := vip.Derive(nil, big.VIPs, nil, nil)
	r.Update(base)
	d := syncDelta(t, r, false)
	if d.tx != 1 {
		t.Errorf("programming 500 VIPs from empty took %d transactions, want 1", d.tx)
	}
	if d.elems != 500*3+500 {
		t.Errorf("programming 500 x 3 from empty wrote %d elements, want %d (slots + services map)", d.elems, 500*3+500)
	}
	k := base.VIPs[250].ServiceKey
	newBackend := netip.MustParseAddrPort("10.1.9.1:8080")
	cases := []struct {
		name        string
		change      func(v *vip.VIP)
		maxMsgs     uint64
		maxElements uint64
	}{
		{"one backend added", func(v *vip.VIP) {
			v.Backends = append(v.Backends, vip.Backend{Addr: newBackend, Weight: 1})
		}, 4, 1},
		{"one weight to 0", func(v *vip.VIP) { v.Backends[0].Weight = 0 }, 4, 3},
		{"weight back to 1", func(v *vip.VIP) { v.Backends[0].Weight = 1 }, 4, 1},
		{"one backend removed", func(v *vip.VIP) { v.Backends = v.Backends[1:] }, 4, 3},
		{"persistence on", func(v *vip.VIP) { v.Persistence = 60 }, 8, 3},
		{"persistence off", func(v *vip.VIP) { v.Persistence = 0 }, 6, 0},
		{"scheduler sh", func(v *vip.VIP) { v.Scheduler = "sh" }, 3, 0},
	}
	cur := base
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cur = derive(cur, k, c.change)
			r.Update(cur)
			d := syncDelta(t, r, false)
			if d.tx != 1 || d.msgs > c.maxMsgs || d.elems > c.maxElements || d.dumps != 0 {
				t.Errorf("%+v, want 1 transaction of at most %d messages and %d elements, no read", d, c.maxMsgs, c.maxElements)
			}
			if d := syncDelta(t, r, false); d != (delta{}) {
				t.Errorf("unchanged incremental sync: %+v, want nothing", d)
			}
		})
	}
	t.Run("new VIP beside 500", func(t *testing.T) {
		nk := vip.ServiceKey{Addr: netip.MustParseAddr("11.9.9.9"), Port: 80, Protocol: vip.TCP}
		cur = derive(cur, nk, func(v *vip.VIP) {
			v.Backends = []vip.Backend{{Addr: newBackend, Weight: 1}}
		})
		r.Update(cur)
		if d := syncDelta(t, r, false); d.tx != 1 || d.msgs != 5 || d.elems != 2 {
			t.Errorf("%+v, want 1 transaction: chain, slots map, its element, rule, services map element (5 messages, 2 elements)", d)
		}
	})
	t.Run("full resync of an unchanged table", func(t *testing.T) {
		d := syncDelta(t, r, true)
		if d.tx != 0 || d.msgs != 0 {
			t.Errorf("%+v, want no write", d)
		}
		if d.dumps == 0 {
			t.Errorf("a full resync read nothing")
		}
	})
	t.Run("table without lineage", func(t *testing.T) {
		// A table built by hand: diffed in full in memory, still one
		// small transaction.
		vs := slices.Clone(cur.VIPs)
		for i := range vs {
			if vs[i].ServiceKey == k {
				vs[i].Backends = append(slices.Clone(vs[i].Backends), vip.Backend{Addr: netip.MustParseAddrPort("10.1.8.1:8080"), Weight: 1})
			}
		}
		r.Update(&vip.Table{VIPs: vs})
		if d := syncDelta(t, r, false); d.tx != 1 || d.elems != 1 {
			t.Errorf("%+v, want 1 transaction of 1 element", d)
		}
	})
	if got := r.Stats().Services; got != 501 {
		t.Errorf("Stats().Services = %d, want 501", got)
	}
}

// TestDriftRepaired: `nft flush table inet l4lb` and a deleted element are
// not seen by an incremental sync (memory is trusted) and are repaired by a
// full resync; traffic flows again.
func TestDriftRepaired(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	r := b.reconciler(t, nftables.Config{})
	table := ipvstest.Table(ipvstest.VIP("tcp 11.0.0.1:80", "10.90.2.2:8080", "10.90.3.2:8080"))
	r.Update(table)
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	hitsTCP(t, b.client, "11.0.0.1:80", 2)

	b.nft(t, "flush", "table", "inet", "l4lb")
	if _, err := dialTCP(b.client, "11.0.0.1:80"); err == nil {
		t.Fatalf("the VIP still answers after nft flush table: the test does not tamper")
	}
	if d := syncDelta(t, r, false); d.tx != 0 {
		t.Errorf("incremental sync after drift wrote %+v; it should trust its memory", d)
	}
	if d := syncDelta(t, r, true); d.tx != 1 {
		t.Errorf("full resync after nft flush table: %+v, want 1 transaction", d)
	}
	if got := hitsTCP(t, b.client, "11.0.0.1:80", 4); got["b1"] != 2 || got["b2"] != 2 {
		t.Errorf("after repair: %v, want 2 and 2", got)
	}
	if d := syncDelta(t, r, true); d.tx != 0 {
		t.Errorf("second full resync wrote %+v, want nothing", d)
	}

	// One slot deleted by hand: only it comes back.
	b.nft(t, "delete", "element", "inet", "l4lb", "slots-tcp-11.0.0.1-80", "{ 1 }")
	if d := syncDelta(t, r, true); d.tx != 1 || d.elems != 1 {
		t.Errorf("full resync after a deleted slot: %+v, want 1 transaction of 1 element", d)
	}
	// The service's map element deleted by hand.
	b.nft(t, "delete", "element", "inet", "l4lb", "services4", "{ 11.0.0.1 . tcp . 80 }")
	if d := syncDelta(t, r, true); d.tx != 1 || d.elems != 1 {
		t.Errorf("full resync after a deleted services element: %+v, want 1 transaction of 1 element", d)
	}
	// The whole table deleted.
	b.nft(t, "delete", "table", "inet", "l4lb")
	if d := syncDelta(t, r, true); d.tx != 1 {
		t.Errorf("full resync after nft delete table: %+v, want 1 transaction", d)
	}
	if got := hitsTCP(t, b.client, "11.0.0.1:80", 4); got["b1"] != 2 || got["b2"] != 2 {
		t.Errorf("after repair: %v, want 2 and 2", got)
	}
}

// TestOtherTablesUntouched: l4lb's syncs and clean close leave another
// table alone.
func TestOtherTablesUntouched(t *testing.T) {
	b := newBed(t)
	b.nft(t, "add", "table", "inet", "operator")
	b.nft(t, "add", "chain", "inet", "operator", "c")
	b.nft(t, "add", "rule", "inet", "operator", "c", "counter")
	before := b.nft(t, "list", "table", "inet", "operator")
	r := b.reconciler(t, nftables.Config{})
	r.Update(ipvstest.Table(ipvstest.VIP("tcp 11.0.0.1:80", "10.90.2.2:8080")))
	if err := r.SyncNow(true); err != nil {
		t.Fatal(err)
	}
	r.Update(ipvstest.Table())
	if err := r.SyncNow(true); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(true); err != nil {
		t.Fatal(err)
	}
	if after := b.nft(t, "list", "table", "inet", "operator"); after != before {
		t.Errorf("table inet operator changed:\n%s\nwas:\n%s", after, before)
	}
	if out, err := b.lb.run("nft", "list", "table", "inet", "l4lb"); err == nil {
		t.Errorf("Close(true) left table inet l4lb:\n%s", out)
	}
}
