package ipvs

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/ipvs/ipvstest"
	"github.com/l4lb/l4lb/vip"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// Test tables, built by ipvstest.
var (
	vipOf    = ipvstest.VIP
	tableOf  = ipvstest.Table
	bigTable = ipvstest.BigTable
)

type fixture struct {
	t     *testing.T
	fake  *Fake
	clock *runner.FakeClock
	r     *Reconciler
}

func newFixture(t *testing.T, fake *Fake, mod func(*Config)) *fixture {
	t.Helper()
	if fake == nil {
		fake = NewFake()
	}
	clock := runner.NewFakeClock(t0)
	cfg := Config{Kernel: fake, Clock: clock, Logger: quietLogger(), DrainTimeout: time.Minute, DrainCheckInterval: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{t: t, fake: fake, clock: clock, r: r}
}

// apply hands over the table and syncs once; it returns the writes made.
func (f *fixture) apply(tab *vip.Table, full bool) map[OpKind]int {
	f.t.Helper()
	f.fake.ResetCounts()
	f.r.Update(tab)
	if err := f.r.SyncNow(full); err != nil {
		f.t.Fatalf("sync: %v", err)
	}
	return f.fake.Writes()
}

// state is the fake's tables as text: "TCP 11.0.0.1:80 wlc p0: 10.0.0.1:80 w1 masq, ...".
func (f *fixture) state() []string {
	f.t.Helper()
	svcs, _ := f.fake.Services()
	var out []string
	for _, s := range svcs {
		ds, _ := f.fake.Destinations(s)
		var parts []string
		for _, d := range ds {
			parts = append(parts, fmt.Sprintf("%s w%d %s", d.Addr, d.Weight, d.Forward))
		}
		out = append(out, fmt.Sprintf("%s %s p%d: %s", s, s.Scheduler, s.Persistence, strings.Join(parts, ", ")))
	}
	return out
}

// stateOf is what state() must show for a table with nothing draining.
func stateOf(tab *vip.Table) []string {
	var out []string
	for _, v := range tab.VIPs {
		s := serviceOf(&v)
		var parts []string
		for _, b := range v.Backends {
			parts = append(parts, fmt.Sprintf("%s w%d masq", b.Addr, b.Weight))
		}
		out = append(out, fmt.Sprintf("%s %s p%d: %s", s, s.Scheduler, s.Persistence, strings.Join(parts, ", ")))
	}
	return out
}

func (f *fixture) addrs() []netip.Addr {
	a, _ := f.fake.Addresses()
	return a
}

func TestNothingIsWrittenBeforeTheFirstTable(t *testing.T) {
	f := newFixture(t, nil, nil)
	if err := f.r.SyncNow(true); err != nil {
		t.Fatal(err)
	}
	if n := f.fake.TotalWrites() + f.fake.Reads(); n != 0 {
		t.Errorf("sync without a table touched the kernel %d times", n)
	}
	if f.r.Programmed() != nil {
		t.Error("Programmed before any sync must be nil")
	}
}

func TestProgramFromEmpty(t *testing.T) {
	dnsAddr := netip.MustParseAddr("198.51.100.1")
	f := newFixture(t, nil, func(c *Config) { c.LocalAddrs = []netip.Addr{dnsAddr} })
	v6 := vipOf("udp [fd01:c::1]:53", "[fd00::2]:53", "[fd00::3]:53=0")
	v6.Scheduler, v6.Persistence = "rr", 300
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:8080", "10.0.0.2:8080"), vipOf("tcp 11.0.0.1:443", "10.0.0.1:8443"), v6)
	got := f.apply(tab, false)
	want := map[OpKind]int{AddAddress: 3, AddService: 3, AddDestination: 5}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("writes %v, want %v", got, want)
	}
	if s := f.state(); !reflect.DeepEqual(s, stateOf(tab)) {
		t.Errorf("kernel holds\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(stateOf(tab), "\n"))
	}
	wantAddrs := []netip.Addr{netip.MustParseAddr("11.0.0.1"), dnsAddr, netip.MustParseAddr("fd01:c::1")}
	if a := f.addrs(); !reflect.DeepEqual(a, wantAddrs) {
		t.Errorf("dummy interface holds %v, want %v", a, wantAddrs)
	}
	if p := f.r.Programmed(); p == nil || len(p.VIPs) != 3 {
		t.Errorf("Programmed = %+v, want the 3 VIPs", p)
	}
	st := f.r.Stats()
	if st.Ops["add_destination"] != 5 || st.Syncs != 1 || st.FullSyncs != 1 || st.Services != 3 {
		t.Errorf("stats %+v", st)
	}
}

// withBackend returns a copy of tab where VIP i has one more backend.
func withBackend(tab *vip.Table, i int, b string) *vip.Table {
	out := &vip.Table{VIPs: append([]vip.VIP(nil), tab.VIPs...)}
	v := out.VIPs[i]
	v.Backends = append(append([]vip.Backend(nil), v.Backends...), vip.Backend{Addr: netip.MustParseAddrPort(b), Weight: 1})
	out.VIPs[i] = v
	return out
}

func TestIncrementalChangesMakeOnlyTheWritesTheyNeed(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	base := bigTable(n, 3)
	for _, tc := range []struct {
		name   string
		change func(*vip.Table) *vip.Table
		want   map[OpKind]int
	}{
		{"unchanged", func(t *vip.Table) *vip.Table { return t }, map[OpKind]int{}},
		{"add one backend", func(t *vip.Table) *vip.Table { return withBackend(t, n/2, "10.9.9.9:8080") }, map[OpKind]int{AddDestination: 1}},
		{"change one weight", func(t *vip.Table) *vip.Table {
			out := &vip.Table{VIPs: append([]vip.VIP(nil), t.VIPs...)}
			out.VIPs[7].Backends = append([]vip.Backend(nil), out.VIPs[7].Backends...)
			out.VIPs[7].Backends[1].Weight = 5
			return out
		}, map[OpKind]int{UpdateDestination: 1}},
		{"change one scheduler", func(t *vip.Table) *vip.Table {
			out := &vip.Table{VIPs: append([]vip.VIP(nil), t.VIPs...)}
			out.VIPs[3].Scheduler = "sh"
			return out
		}, map[OpKind]int{UpdateService: 1}},
		{"add one VIP", func(t *vip.Table) *vip.Table {
			out := &vip.Table{VIPs: append(append([]vip.VIP(nil), t.VIPs...), vipOf("tcp 11.200.0.1:80", "10.0.0.1:80", "10.0.0.2:80"))}
			return out
		}, map[OpKind]int{AddAddress: 1, AddService: 1, AddDestination: 2}},
		{"remove one UDP VIP", func(t *vip.Table) *vip.Table { return t }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, nil)
			f.apply(base, false)
			changed := tc.change(base)
			if tc.want == nil { // a UDP VIP, then without it
				withUDP := &vip.Table{VIPs: append(append([]vip.VIP(nil), base.VIPs...), vipOf("udp 11.201.0.1:53", "10.0.0.1:53"))}
				f.apply(withUDP, false)
				tc.want = map[OpKind]int{DeleteService: 1, DeleteAddress: 1}
			}
			f.fake.ResetCounts()
			got := f.apply(changed, false)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("writes %v, want %v", got, tc.want)
			}
			if r := f.fake.Reads(); r != 0 {
				t.Errorf("an incremental sync read the kernel %d times, want 0", r)
			}
			if s := f.state(); !reflect.DeepEqual(s, stateOf(changed)) {
				t.Errorf("kernel does not hold the changed table")
			}
		})
	}
}

func TestFullResyncOfUnchangedTableWritesNothing(t *testing.T) {
	f := newFixture(t, nil, nil)
	tab := bigTable(500, 4)
	f.apply(tab, false)
	f.fake.ResetCounts()
	if got := f.apply(tab, true); len(got) != 0 {
		t.Errorf("full resync of an unchanged table wrote %v", got)
	}
	// One read of addresses, one of services, one per owned service.
	if r := f.fake.Reads(); r != 2+500 {
		t.Errorf("full resync made %d reads, want %d", r, 502)
	}
}

func TestResyncIsPeriodic(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.ResyncPeriod = 30 * time.Second })
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80"))
	f.apply(tab, false)
	f.fake.Flush()
	f.clock.Step(29 * time.Second)
	if got := f.apply(tab, false); len(got) != 0 {
		t.Fatalf("incremental sync before the period wrote %v; it must trust its memory", got)
	}
	f.clock.Step(time.Second)
	if got := f.apply(tab, false); !reflect.DeepEqual(got, map[OpKind]int{AddService: 1, AddDestination: 1}) {
		t.Errorf("sync after the resync period wrote %v, want the flushed service back", got)
	}
}

func TestDriftIsRepaired(t *testing.T) {
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"), vipOf("udp 11.0.0.2:53", "10.0.0.1:53"))
	svc := serviceOf(&tab.VIPs[0])
	for _, tc := range []struct {
		name   string
		tamper func(*Fake)
		want   map[OpKind]int
	}{
		{"service deleted (ipvsadm -D)", func(f *Fake) { f.Tamper(Op{Kind: DeleteService, Service: svc}) }, map[OpKind]int{AddService: 1, AddDestination: 2}},
		{"table flushed (ipvsadm -C)", func(f *Fake) { f.Flush() }, map[OpKind]int{AddService: 2, AddDestination: 3}},
		{"weight edited (ipvsadm -e)", func(f *Fake) {
			f.Tamper(Op{Kind: UpdateDestination, Service: svc, Destination: Destination{Addr: netip.MustParseAddrPort("10.0.0.2:80"), Weight: 7}})
		}, map[OpKind]int{UpdateDestination: 1}},
		{"scheduler edited (ipvsadm -E)", func(f *Fake) {
			s := svc
			s.Scheduler = "rr"
			f.Tamper(Op{Kind: UpdateService, Service: s})
		}, map[OpKind]int{UpdateService: 1}},
		{"real server added by hand", func(f *Fake) {
			f.Tamper(Op{Kind: AddDestination, Service: svc, Destination: Destination{Addr: netip.MustParseAddrPort("10.0.0.9:80"), Weight: 1}})
		}, map[OpKind]int{UpdateDestination: 1}}, // drained, not cut
		{"address removed from the dummy interface", func(f *Fake) {
			f.Tamper(Op{Kind: DeleteAddress, Addr: netip.MustParseAddr("11.0.0.2")})
		}, map[OpKind]int{AddAddress: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, nil)
			f.apply(tab, false)
			tc.tamper(f.fake)
			if got := f.apply(tab, true); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("repair wrote %v, want %v", got, tc.want)
			}
			if tc.name != "real server added by hand" {
				if s := f.state(); !reflect.DeepEqual(s, stateOf(tab)) {
					t.Errorf("kernel after repair:\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(stateOf(tab), "\n"))
				}
			}
			if tc.name == "real server added by hand" {
				// Drained first; a later count shows it idle, so it goes.
				if got := f.apply(tab, true); !reflect.DeepEqual(got, map[OpKind]int{DeleteDestination: 1}) {
					t.Errorf("the idle foreign real server: writes %v, want its deletion", got)
				}
				if s := f.state(); !reflect.DeepEqual(s, stateOf(tab)) {
					t.Errorf("kernel after repair:\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(stateOf(tab), "\n"))
				}
			}
			if got := f.apply(tab, true); len(got) != 0 {
				t.Errorf("a further resync wrote %v", got)
			}
		})
	}
}

func TestForeignServicesAreNeverTouched(t *testing.T) {
	fake := NewFake()
	foreign := Service{ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr("192.0.2.10"), Port: 80, Protocol: vip.TCP}, Scheduler: "rr"}
	fake.Tamper(Op{Kind: AddService, Service: foreign}, Op{Kind: AddDestination, Service: foreign, Destination: Destination{Addr: netip.MustParseAddrPort("192.0.2.20:80"), Weight: 3}})
	f := newFixture(t, fake, nil)
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80"))
	f.apply(tab, true)
	f.apply(&vip.Table{}, true)
	f.clock.Step(time.Hour)
	f.apply(&vip.Table{}, true)
	want := []string{"TCP 192.0.2.10:80 rr p0: 192.0.2.20:80 w3 masq"}
	if s := f.state(); !reflect.DeepEqual(s, want) {
		t.Errorf("kernel holds %q, want only the foreign service, untouched: %q", s, want)
	}
}

func TestDraining(t *testing.T) {
	key := "tcp 11.0.0.1:80"
	both := tableOf(vipOf(key, "10.0.0.1:80", "10.0.0.2:80"))
	one := tableOf(vipOf(key, "10.0.0.1:80"))
	leaving := netip.MustParseAddrPort("10.0.0.2:80")
	k := both.VIPs[0].ServiceKey

	t.Run("weight 0 first, deleted when idle", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		f.apply(both, false)
		f.fake.SetConns(k, leaving, 3, 0)
		if got := f.apply(one, false); !reflect.DeepEqual(got, map[OpKind]int{UpdateDestination: 1}) {
			t.Fatalf("leaving backend: writes %v, want one weight update", got)
		}
		if s := f.state(); s[0] != "TCP 11.0.0.1:80 wlc p0: 10.0.0.1:80 w1 masq, 10.0.0.2:80 w0 masq" {
			t.Fatalf("kernel %q: the leaving backend must stay at weight 0", s)
		}
		if st := f.r.Stats(); st.Draining != 1 {
			t.Errorf("stats say %d draining, want 1", st.Draining)
		}
		conns := f.r.Connections()
		if !conns[k][leaving].Draining || conns[k][leaving].Active != 3 {
			t.Errorf("Connections = %+v; want the leaving backend draining with 3 active", conns)
		}
		// Still busy at the next check: kept.
		f.clock.Step(time.Second)
		if got := f.apply(one, false); len(got) != 0 {
			t.Fatalf("busy draining backend: writes %v, want none", got)
		}
		f.fake.SetConns(k, leaving, 0, 2)
		f.clock.Step(time.Second)
		if got := f.apply(one, false); !reflect.DeepEqual(got, map[OpKind]int{DeleteDestination: 1}) {
			t.Fatalf("idle draining backend: writes %v, want its deletion", got)
		}
		if s := f.state(); !reflect.DeepEqual(s, stateOf(one)) {
			t.Errorf("kernel %q", s)
		}
	})
	t.Run("deleted at the deadline", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		f.apply(both, false)
		f.fake.SetConns(k, leaving, 3, 0)
		f.apply(one, false)
		f.clock.Step(59 * time.Second)
		if got := f.apply(one, false); len(got) != 0 {
			t.Fatalf("before the deadline: writes %v", got)
		}
		f.clock.Step(time.Second)
		if got := f.apply(one, false); !reflect.DeepEqual(got, map[OpKind]int{DeleteDestination: 1}) {
			t.Fatalf("at the deadline: writes %v, want the deletion", got)
		}
	})
	t.Run("a stale count of zero does not delete", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		f.apply(both, false) // counts read then: 0
		f.fake.SetConns(k, leaving, 3, 0)
		f.apply(one, false)
		// No drain check is due yet: the zero read before the drain is stale.
		if got := f.apply(one, false); len(got) != 0 {
			t.Fatalf("writes %v before any count was read after the drain", got)
		}
	})
	t.Run("a backend that comes back is restored", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		f.apply(both, false)
		f.fake.SetConns(k, leaving, 3, 0)
		f.apply(one, false)
		if got := f.apply(both, false); !reflect.DeepEqual(got, map[OpKind]int{UpdateDestination: 1}) {
			t.Fatalf("returning backend: writes %v, want its weight back", got)
		}
		f.clock.Step(2 * time.Minute)
		if got := f.apply(both, true); len(got) != 0 {
			t.Errorf("returned backend was touched again: %v", got)
		}
	})
	t.Run("UDP backends are removed at once", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		f.apply(tableOf(vipOf("udp 11.0.0.1:53", "10.0.0.1:53", "10.0.0.2:53")), false)
		if got := f.apply(tableOf(vipOf("udp 11.0.0.1:53", "10.0.0.1:53")), false); !reflect.DeepEqual(got, map[OpKind]int{DeleteDestination: 1}) {
			t.Errorf("writes %v, want one deletion", got)
		}
	})
	t.Run("a VIP that leaves drains, then goes with its address", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		f.apply(both, false)
		f.fake.SetConns(k, leaving, 1, 0)
		if got := f.apply(&vip.Table{}, false); !reflect.DeepEqual(got, map[OpKind]int{UpdateDestination: 2}) {
			t.Fatalf("leaving VIP: writes %v, want both backends to weight 0", got)
		}
		if p := f.r.Programmed(); len(p.VIPs) != 0 {
			t.Errorf("a leaving VIP must not be programmed (DNS would answer it): %+v", p)
		}
		f.clock.Step(time.Second)
		if got := f.apply(&vip.Table{}, false); !reflect.DeepEqual(got, map[OpKind]int{DeleteDestination: 1}) {
			t.Fatalf("idle backend of a leaving VIP: writes %v", got)
		}
		f.fake.SetConns(k, leaving, 0, 0)
		f.clock.Step(time.Second)
		if got := f.apply(&vip.Table{}, false); !reflect.DeepEqual(got, map[OpKind]int{DeleteDestination: 1, DeleteService: 1, DeleteAddress: 1}) {
			t.Fatalf("last backend idle: writes %v, want the service and address gone", got)
		}
		if s, a := f.state(), f.addrs(); len(s) != 0 || len(a) != 0 {
			t.Errorf("kernel keeps %q, addresses %v", s, a)
		}
	})
}

func TestRestartAdoptsTheKernel(t *testing.T) {
	fake := NewFake()
	tab := bigTable(300, 3)
	first := newFixture(t, fake, nil)
	first.apply(tab, false)
	if err := first.r.Close(false); err != nil {
		t.Fatal(err)
	}
	second := newFixture(t, fake, nil)
	if got := second.apply(tab, false); len(got) != 0 {
		t.Errorf("restart with an unchanged table wrote %v, want nothing", got)
	}
	changed := withBackend(tab, 10, "10.7.7.7:8080")
	third := newFixture(t, fake, nil)
	if got := third.apply(changed, false); !reflect.DeepEqual(got, map[OpKind]int{AddDestination: 1}) {
		t.Errorf("restart with one more backend wrote %v, want exactly that backend", got)
	}
}

func TestFailedWritesAreNamedAndRetried(t *testing.T) {
	f := newFixture(t, nil, nil)
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"))
	svc := serviceOf(&tab.VIPs[0])
	failing := Op{Kind: AddDestination, Service: svc, Destination: Destination{Addr: netip.MustParseAddrPort("10.0.0.2:80"), Weight: 1}}
	f.fake.FailOnce(failing, unix.ENOMEM)
	f.r.Update(tab)
	err := f.r.SyncNow(false)
	if err == nil || !strings.Contains(err.Error(), "add real server 10.0.0.2:80 (weight 1) to TCP 11.0.0.1:80") || !errors.Is(err, unix.ENOMEM) {
		t.Fatalf("sync error %v: want it to name the backend and VIP and wrap ENOMEM", err)
	}
	if st := f.r.Stats(); st.FailedOps != 1 || st.FailedSyncs != 1 {
		t.Errorf("stats %+v", st)
	}
	f.fake.ResetCounts()
	if err := f.r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if got := f.fake.Writes(); !reflect.DeepEqual(got, map[OpKind]int{AddDestination: 1}) {
		t.Errorf("retry wrote %v, want only the failed op", got)
	}
}

func TestMixedFamiliesAreLeftOut(t *testing.T) {
	f := newFixture(t, nil, nil)
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80", "[fd00::1]:80"))
	if got := f.apply(tab, false); !reflect.DeepEqual(got, map[OpKind]int{AddAddress: 1, AddService: 1, AddDestination: 1}) {
		t.Errorf("writes %v", got)
	}
}

func TestOnProgrammedIsCalledOnChange(t *testing.T) {
	var calls []*vip.Table
	f := newFixture(t, nil, func(c *Config) { c.OnProgrammed = func(t *vip.Table) { calls = append(calls, t) } })
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80"))
	f.apply(tab, false)
	f.apply(tab, false)
	if len(calls) != 1 || len(calls[0].VIPs) != 1 {
		t.Fatalf("OnProgrammed calls %d (%+v), want 1 with the VIP", len(calls), calls)
	}
	f.apply(&vip.Table{}, false)
	if len(calls) != 2 || len(calls[1].VIPs) != 0 {
		t.Errorf("after the VIP left: %d calls, last %+v", len(calls), calls[len(calls)-1])
	}
}

// TestConvergesForAnySequenceOfTables is a property test: whatever tables
// come, in any order, after a sync the kernel holds the table plus only
// draining backends at weight 0; a second sync writes nothing; and once
// drains end the kernel equals the table.
// A second sync may only finish drains: delete what the table lacks.
func TestConvergesForAnySequenceOfTables(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	protos := []vip.Protocol{vip.TCP, vip.UDP}
	randomTable := func() *vip.Table {
		seen := map[vip.ServiceKey]bool{}
		var vs []vip.VIP
		for i := rng.Intn(8); i > 0; i-- {
			k := vip.ServiceKey{Addr: netip.AddrFrom4([4]byte{11, 0, 0, byte(1 + rng.Intn(4))}), Port: uint16(80 + rng.Intn(2)), Protocol: protos[rng.Intn(2)]}
			if seen[k] {
				continue
			}
			seen[k] = true
			v := vip.VIP{ServiceKey: k, Scheduler: []string{"", "rr", "sh"}[rng.Intn(3)], Persistence: uint32(rng.Intn(2) * 60)}
			for j := 0; j < 4; j++ {
				if rng.Intn(2) == 0 {
					v.Backends = append(v.Backends, vip.Backend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(j + 1)}), 8080), Weight: uint32(rng.Intn(3))})
				}
			}
			vs = append(vs, v)
		}
		return tableOf(vs...)
	}
	for round := 0; round < 200; round++ {
		f := newFixture(t, nil, nil)
		var tab *vip.Table
		for step := 0; step < 6; step++ {
			tab = randomTable()
			full := rng.Intn(3) == 0
			if rng.Intn(4) == 0 {
				f.fake.Flush()
				full = true
			}
			f.apply(tab, full)
			for k := range f.apply(tab, false) {
				if k != DeleteDestination && k != DeleteService && k != DeleteAddress {
					t.Fatalf("round %d step %d: second sync made %v writes", round, step, k)
				}
			}
			if got := f.apply(tab, false); len(got) != 0 {
				t.Fatalf("round %d step %d: third sync wrote %v", round, step, got)
			}
			f.clock.Step(time.Second)
		}
		// Let drains finish (no connections: deleted at the next check).
		f.clock.Step(time.Second)
		f.apply(tab, false)
		f.clock.Step(time.Second)
		f.apply(tab, false)
		if s := f.state(); !reflect.DeepEqual(s, stateOf(tab)) && !(len(s) == 0 && len(tab.VIPs) == 0) {
			t.Fatalf("round %d: kernel\n%s\nwant\n%s", round, strings.Join(s, "\n"), strings.Join(stateOf(tab), "\n"))
		}
		wantAddrs := map[netip.Addr]bool{}
		for _, v := range tab.VIPs {
			wantAddrs[v.Addr] = true
		}
		if a := f.addrs(); len(a) != len(wantAddrs) {
			t.Fatalf("round %d: addresses %v, want those of %d VIP addresses", round, a, len(wantAddrs))
		}
	}
}

func TestNoIPVSIsAClearError(t *testing.T) {
	saved := lookupIPVSFamily
	defer func() { lookupIPVSFamily = saved }()
	lookupIPVSFamily = func() error { return ErrNoIPVS }
	_, err := New(Config{Logger: quietLogger()})
	if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "IPVS is not available in this kernel: load the ip_vs module (modprobe ip_vs)") {
		t.Errorf("New on a kernel without IPVS: %v", err)
	}
}

func TestOpErrorsNameVIPAndBackend(t *testing.T) {
	svc := Service{ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr("fd01:c::1"), Port: 80, Protocol: vip.UDP}}
	d := Destination{Addr: netip.MustParseAddrPort("[fd00::2]:80"), Weight: 2}
	for _, tc := range []struct {
		op   Op
		want string
	}{
		{Op{Kind: AddDestination, Service: svc, Destination: d}, "add real server [fd00::2]:80 (weight 2) to UDP [fd01:c::1]:80"},
		{Op{Kind: UpdateDestination, Service: svc, Destination: d}, "set real server [fd00::2]:80 of UDP [fd01:c::1]:80 to weight 2"},
		{Op{Kind: DeleteDestination, Service: svc, Destination: d}, "delete real server [fd00::2]:80 from UDP [fd01:c::1]:80"},
		{Op{Kind: DeleteService, Service: svc}, "delete virtual service UDP [fd01:c::1]:80"},
		{Op{Kind: AddAddress, Addr: svc.Addr}, "add address fd01:c::1 to the dummy interface"},
	} {
		t.Run(tc.op.Kind.String(), func(t *testing.T) {
			if got := tc.op.String(); got != tc.want {
				t.Errorf("%q, want %q", got, tc.want)
			}
		})
	}
}
