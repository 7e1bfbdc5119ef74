package nftables

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func newFakeReconciler(t *testing.T, publicAddrs ...netip.Addr) (*Reconciler, *Fake) {
	t.Helper()
	f := NewFake()
	r, err := New(Config{Kernel: f, Logger: quietLog(), PublicAddrs: publicAddrs})
	if err != nil {
		t.Fatal(err)
	}
	return r, f
}

// randomTable builds a table over a small key space, so that successive
// tables share, change and drop VIPs.
func randomTable(rng *rand.Rand) []vip.VIP {
	scheds := []string{"", "rr", "wrr", "wlc", "sh", "random", "mh", "dh"}
	var vs []vip.VIP
	for i := range 8 {
		if rng.Intn(3) == 0 {
			continue
		}
		addr := netip.AddrFrom4([4]byte{11, 0, 0, byte(i / 2)})
		fam := 4
		if i%4 == 3 {
			addr = netip.MustParseAddr(fmt.Sprintf("fd01:c::%d", i))
			fam = 6
		}
		proto := vip.TCP
		if i%2 == 1 {
			proto = vip.UDP
		}
		v := vip.VIP{ServiceKey: vip.ServiceKey{Addr: addr, Port: 80, Protocol: proto}, Scheduler: scheds[rng.Intn(len(scheds))]}
		if rng.Intn(3) == 0 {
			v.Persistence = uint32(30 * (1 + rng.Intn(2)))
		}
		v.PublicPort = []uint16{0, 0, 10000, 80}[rng.Intn(4)]
		for j := range 5 {
			if rng.Intn(2) == 0 {
				continue
			}
			ba := netip.AddrFrom4([4]byte{10, 0, 0, byte(j + 1)})
			if fam == 6 {
				ba = netip.MustParseAddr(fmt.Sprintf("fd00::%d", j+1))
			}
			v.Backends = append(v.Backends, vip.Backend{Addr: netip.AddrPortFrom(ba, 8080), Weight: uint32(rng.Intn(4))})
		}
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(a, b vip.VIP) int { return vip.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return vs
}

// TestIncrementalEqualsRebuild: after any sequence of tables (derived with
// a lineage, or built by hand), with drift now and then repaired by a full
// resync, the table equals what a fresh reconciler programs from empty for
// the same desired table; a further sync writes nothing. Every other run is
// a public node (public services of VIPs with a public port).
func TestIncrementalEqualsRebuild(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for seq := range 40 {
		t.Run(fmt.Sprint(seq), func(t *testing.T) {
			var pub []netip.Addr
			if seq%2 == 1 {
				pub = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
			}
			r, f := newFakeReconciler(t, pub...)
			var cur *vip.Table
			for step := range 15 {
				vs := randomTable(rng)
				if cur != nil && rng.Intn(2) == 0 {
					var changed []vip.ServiceKey
					for _, v := range vs {
						changed = append(changed, v.ServiceKey)
					}
					for _, v := range cur.VIPs {
						changed = append(changed, v.ServiceKey)
					}
					cur = vip.Derive(cur, vs, nil, changed)
				} else {
					cur = &vip.Table{VIPs: vs}
				}
				full := false
				switch rng.Intn(6) {
				case 0:
					f.FlushTable()
					full = true
				case 1:
					f.Tamper(Op{Kind: DeleteTable})
					full = true
				}
				r.Update(cur)
				if err := r.SyncNow(full); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				fresh, ff := newFakeReconciler(t, pub...)
				fresh.Update(cur)
				if err := fresh.SyncNow(false); err != nil {
					t.Fatalf("step %d: fresh: %v", step, err)
				}
				if got, want := f.Canonical(), ff.Canonical(); got != want {
					t.Fatalf("step %d: incremental table differs from a rebuild\ngot:\n%s\nwant:\n%s", step, got, want)
				}
				tx, _, _ := f.Counts()
				if err := r.SyncNow(false); err != nil {
					t.Fatal(err)
				}
				if tx2, _, _ := f.Counts(); tx2 != tx {
					t.Fatalf("step %d: an unchanged sync wrote", step)
				}
				// Programmed holds exactly the VIPs with a supported scheduler.
				p := r.Programmed()
				n := 0
				for _, v := range cur.VIPs {
					if _, _, err := modeOf(v.Scheduler); err == nil {
						n++
					}
				}
				if len(p.VIPs) != n {
					t.Fatalf("step %d: Programmed has %d VIPs, want %d", step, len(p.VIPs), n)
				}
			}
		})
	}
}

// TestFailedTransactionIsolated: a write the kernel refuses fails its own
// service only; the others are programmed, the failure names the service,
// and the next sync (a full resync) converges.
func TestFailedTransactionIsolated(t *testing.T) {
	r, f := newFakeReconciler(t)
	good := vip.VIP{ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP},
		Backends: []vip.Backend{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1}}}
	bad := good
	bad.ServiceKey.Addr = netip.MustParseAddr("11.0.0.2")
	// The kernel refuses the bad service's chain (out of memory, say).
	f.Fail(func(op Op) bool { return op.Kind == AddChain && op.Service == bad.ServiceKey }, unix.ENOMEM)
	r.Update(&vip.Table{VIPs: []vip.VIP{good, bad}})
	err := r.SyncNow(false)
	if err == nil || !strings.Contains(err.Error(), "TCP 11.0.0.2:80") || !strings.Contains(err.Error(), "cannot allocate memory") {
		t.Fatalf("sync error %v, want one naming TCP 11.0.0.2:80 and ENOMEM", err)
	}
	p := r.Programmed()
	if len(p.VIPs) != 1 || p.VIPs[0].ServiceKey != good.ServiceKey {
		t.Fatalf("Programmed() = %v, want only the good VIP", p.VIPs)
	}
	if s := r.Stats(); s.FailedSyncs != 1 || s.FailedOps != 1 {
		t.Errorf("Stats %+v, want 1 failed sync, 1 failed op", s)
	}
	// The retry (a full resync) repairs once the kernel accepts.
	f.Fail(nil, 0)
	if err := r.SyncNow(false); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if p := r.Programmed(); len(p.VIPs) != 2 {
		t.Errorf("after the retry Programmed() has %d VIPs, want 2", len(p.VIPs))
	}
}

// TestNothingBeforeFirstUpdate: a sync without a table touches nothing.
func TestNothingBeforeFirstUpdate(t *testing.T) {
	r, f := newFakeReconciler(t)
	if err := r.SyncNow(true); err != nil {
		t.Fatal(err)
	}
	if tx, _, reads := f.Counts(); tx != 0 || reads != 0 {
		t.Errorf("%d transactions, %d reads before the first Update", tx, reads)
	}
	if r.Programmed() != nil {
		t.Errorf("Programmed() before the first sync is not nil")
	}
}

func TestSchedulerMapping(t *testing.T) {
	for _, c := range []struct {
		sched    string
		mode     Mode
		weighted bool
		refused  bool
	}{
		{"", RoundRobin, true, false}, {"wlc", RoundRobin, true, false}, {"lc", RoundRobin, true, false},
		{"wrr", RoundRobin, true, false}, {"rr", RoundRobin, false, false}, {"sed", RoundRobin, true, false},
		{"nq", RoundRobin, true, false}, {"sh", SourceHash, true, false}, {"mh", SourceHash, true, false},
		{"random", Random, true, false}, {"dh", "", false, true}, {"lblc", "", false, true}, {"lblcr", "", false, true},
		{"fo", "", false, true}, {"ovf", "", false, true},
	} {
		m, w, err := modeOf(c.sched)
		if (err != nil) != c.refused || m != c.mode || w != c.weighted {
			t.Errorf("modeOf(%q) = %v %v %v, want %v %v refused=%v", c.sched, m, w, err, c.mode, c.weighted, c.refused)
		}
	}
}

// TestCollectorAndRun: the Run loop applies an Update, and the collector
// reports the writes.
func TestCollectorAndRun(t *testing.T) {
	r, f := newFakeReconciler(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	r.Update(&vip.Table{VIPs: []vip.VIP{{ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP},
		Backends: []vip.Backend{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1}}}}})
	deadline := time.Now().Add(5 * time.Second)
	for r.Programmed() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.Programmed() == nil {
		t.Fatal("Run did not apply the Update")
	}
	if tx, _, _ := f.Counts(); tx != 1 {
		t.Errorf("%d transactions, want 1", tx)
	}
	mfs, err := prometheusRegistry(t, r.Collector()).Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "l4lb_nftables_transactions_total" {
			found = mf.GetMetric()[0].GetCounter().GetValue() == 1
		}
	}
	if !found {
		t.Errorf("collector does not report 1 transaction")
	}
}

func prometheusRegistry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestPublicServices: a public node serves a public VIP at each public
// address of its family, at its public port, with the VIP's backends; the
// element goes when the VIP stops being public.
func TestPublicServices(t *testing.T) {
	pub := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}
	r, f := newFakeReconciler(t, pub...)
	v := vip.VIP{ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP}, Persistence: 60, PublicPort: 10000,
		Backends: []vip.Backend{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1}, {Addr: netip.MustParseAddrPort("10.0.0.2:80"), Weight: 1}}}
	tab := &vip.Table{VIPs: []vip.VIP{v}}
	r.Update(tab)
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	c := f.Canonical()
	for _, want := range []string{"svc-tcp-192.0.2.1-10000", "svc-tcp-192.0.2.2-10000", "aff-tcp-192.0.2.1-10000", "svc-tcp-11.0.0.1-80"} {
		if !strings.Contains(c, want) {
			t.Errorf("table lacks %s:\n%s", want, c)
		}
	}
	if strings.Contains(c, "2001:db8") || strings.Contains(c, "2001_db8") {
		t.Errorf("an IPv4 VIP is served at the IPv6 public address:\n%s", c)
	}
	if r.Programmed() != tab {
		t.Error("Programmed is not the table handed over")
	}
	v.PublicPort = 0
	r.Update(&vip.Table{VIPs: []vip.VIP{v}})
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if c := f.Canonical(); strings.Contains(c, "192.0.2.") {
		t.Errorf("public services left after the VIP stopped being public:\n%s", c)
	}
}
