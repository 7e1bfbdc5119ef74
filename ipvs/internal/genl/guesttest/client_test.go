package guesttest

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs/internal/genl"
)

func open(t *testing.T, ns *bed.Netns) *genl.Client {
	t.Helper()
	c, err := genl.Open(ns.Path())
	if err != nil {
		t.Fatalf("open client in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustDo(t *testing.T, c *genl.Client, ops ...genl.Op) {
	t.Helper()
	for i, err := range c.Do(ops) {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func tcp(a string, port uint16) genl.Service {
	return genl.Service{Protocol: unix.IPPROTO_TCP, Addr: addr(a), Port: port, Sched: "wlc"}
}

func masq(a string, port uint16, weight uint32) genl.Dest {
	return genl.Dest{Addr: addr(a), Port: port, Weight: weight}
}

func normService(t *testing.T, s genl.Service) genl.Service {
	t.Helper()
	n, err := s.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func normDest(t *testing.T, d genl.Dest) genl.Dest {
	t.Helper()
	n, err := d.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sortServices(s []genl.Service) {
	slices.SortFunc(s, func(a, b genl.Service) int {
		return cmp.Or(cmp.Compare(a.FWMark, b.FWMark), a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
}

func sortDests(d []genl.Dest) {
	slices.SortFunc(d, func(a, b genl.Dest) int { return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port)) })
}

// ipvsadmKey is how `ipvsadm -Ln` names a service.
func ipvsadmKey(s genl.Service) string {
	if s.FWMark != 0 {
		return fmt.Sprintf("FWM %d", s.FWMark)
	}
	p := map[uint16]string{unix.IPPROTO_TCP: "TCP", unix.IPPROTO_UDP: "UDP"}[s.Protocol]
	return p + " " + netip.AddrPortFrom(s.Addr, s.Port).String()
}

type service struct {
	name      string
	svc       genl.Service
	dests     []genl.Dest
	sched     string // as ipvsadm -Ln shows it
	flags     string // as ipvsadm -Ln shows it
	forwarded string // the real servers' forwarding, as ipvsadm -Ln shows it
}

// TestRoundTrip adds services of both families with persistence and every
// scheduler flag, real servers with each forwarding method, reads them back
// through the client and through ipvsadm, edits and deletes them.
func TestRoundTrip(t *testing.T) {
	ns := bed.NewNetns(t, "genl")
	c := open(t, ns)
	persistent := tcp("11.0.0.1", 80)
	persistent.Flags, persistent.Timeout, persistent.Netmask = genl.FlagPersistent, 300, genl.IPv4Netmask(24)
	v6 := genl.Service{Protocol: unix.IPPROTO_UDP, Addr: addr("fd01:c::1"), Port: 53, Sched: "rr", Flags: genl.FlagPersistent, Timeout: 60, Netmask: 64}
	sh := tcp("11.0.0.2", 443)
	sh.Sched, sh.Flags = "sh", genl.FlagSched1|genl.FlagSched2
	mh := tcp("11.0.0.3", 443)
	mh.Sched, mh.Flags = "mh", genl.FlagSched1
	ops := genl.Service{Protocol: unix.IPPROTO_UDP, Addr: addr("11.0.0.4"), Port: 5353, Sched: "wrr", Flags: genl.FlagOnePacket}
	fwm := genl.Service{Family: unix.AF_INET, FWMark: 42, Sched: "lc"}
	table := []service{
		{"ipv4 persistent with mask", persistent, []genl.Dest{masq("10.1.1.2", 8080, 1), masq("10.1.2.2", 8080, 70000)}, "wlc", "persistent 300 mask 255.255.255.0", "Masq"},
		{"ipv6 persistent with prefix", v6, []genl.Dest{masq("fd02::2", 53, 5), masq("fd02::3", 5353, 0)}, "rr", "persistent 60 mask 64", "Masq"},
		{"sh fallback and port", sh, []genl.Dest{{Addr: addr("10.1.1.2"), Port: 443, Weight: 1, FwdMethod: genl.FwdRoute}}, "sh", "(sh-fallback,sh-port)", "Route"},
		{"mh fallback", mh, []genl.Dest{{Addr: addr("10.1.1.3"), Port: 443, Weight: 2, FwdMethod: genl.FwdTunnel}}, "mh", "(mh-fallback)", "Tunnel"},
		{"one-packet scheduling", ops, []genl.Dest{masq("10.1.1.4", 5353, 3)}, "wrr", "ops", "Masq"},
		{"firewall mark", fwm, []genl.Dest{masq("10.1.1.5", 0, 4)}, "lc", "", "Masq"},
	}
	var batch []genl.Op
	for _, s := range table {
		batch = append(batch, genl.Op{Cmd: genl.NewService, Service: s.svc})
		for _, d := range s.dests {
			batch = append(batch, genl.Op{Cmd: genl.NewDest, Service: s.svc, Dest: d})
		}
	}
	mustDo(t, c, batch...)
	checkTable(t, c, ns, table)

	t.Run("edit", func(t *testing.T) {
		table[0].svc.Sched, table[0].svc.Flags, table[0].svc.Timeout = "rr", 0, 0
		table[0].sched, table[0].flags = "rr", ""
		table[1].dests[1].Weight = 9
		table[2].dests[0].UThresh, table[2].dests[0].LThresh = 100, 10
		mustDo(t, c,
			genl.Op{Cmd: genl.SetService, Service: table[0].svc},
			genl.Op{Cmd: genl.SetDest, Service: table[1].svc, Dest: table[1].dests[1]},
			genl.Op{Cmd: genl.SetDest, Service: table[2].svc, Dest: table[2].dests[0]})
		checkTable(t, c, ns, table)
	})
	t.Run("delete", func(t *testing.T) {
		mustDo(t, c,
			genl.Op{Cmd: genl.DelDest, Service: table[0].svc, Dest: table[0].dests[0]},
			genl.Op{Cmd: genl.DelService, Service: table[5].svc},
			genl.Op{Cmd: genl.DelService, Service: table[1].svc})
		table[0].dests = table[0].dests[1:]
		table = slices.Delete(table, 5, 6)
		table = slices.Delete(table, 1, 2)
		checkTable(t, c, ns, table)
	})
}

// checkTable compares the kernel's table, read by the client and by the real
// ipvsadm, with want.
func checkTable(t *testing.T, c *genl.Client, ns *bed.Netns, want []service) {
	t.Helper()
	got, err := c.Services()
	if err != nil {
		t.Fatalf("Services: %v", err)
	}
	var wantSvcs []genl.Service
	for _, s := range want {
		wantSvcs = append(wantSvcs, normService(t, s.svc))
	}
	sortServices(got)
	sortServices(wantSvcs)
	if !slices.Equal(got, wantSvcs) {
		t.Fatalf("Services:\n got %+v\nwant %+v", got, wantSvcs)
	}
	adm := map[string]bed.IPVSService{}
	for _, s := range ns.IPVSTable(t) {
		adm[s.Protocol+" "+s.Address] = s
	}
	if len(adm) != len(want) {
		t.Errorf("ipvsadm shows %d services, want %d: %+v", len(adm), len(want), adm)
	}
	for _, s := range want {
		dests, err := c.Dests(s.svc)
		if err != nil {
			t.Fatalf("Dests(%s): %v", s.svc, err)
		}
		var wantDests []genl.Dest
		for _, d := range s.dests {
			wantDests = append(wantDests, normDest(t, d))
		}
		sortDests(dests)
		sortDests(wantDests)
		if !slices.Equal(dests, wantDests) {
			t.Errorf("%s: Dests:\n got %+v\nwant %+v", s.name, dests, wantDests)
		}
		a, ok := adm[ipvsadmKey(s.svc)]
		if !ok {
			t.Errorf("%s: ipvsadm has no %q", s.name, ipvsadmKey(s.svc))
			continue
		}
		if a.Scheduler != s.sched || a.Flags != s.flags {
			t.Errorf("%s: ipvsadm shows scheduler %q flags %q, want %q %q", s.name, a.Scheduler, a.Flags, s.sched, s.flags)
		}
		if len(a.Real) != len(s.dests) {
			t.Errorf("%s: ipvsadm shows %d real servers, want %d", s.name, len(a.Real), len(s.dests))
			continue
		}
		for _, d := range s.dests {
			i := slices.IndexFunc(a.Real, func(r bed.IPVSReal) bool { return r.Address == netip.AddrPortFrom(d.Addr, d.Port).String() })
			if i < 0 {
				t.Errorf("%s: ipvsadm lacks real server %s: %+v", s.name, d, a.Real)
				continue
			}
			if r := a.Real[i]; r.Forward != s.forwarded || r.Weight != int(d.Weight) {
				t.Errorf("%s: ipvsadm shows %s as %s weight %d, want %s weight %d", s.name, d, r.Forward, r.Weight, s.forwarded, d.Weight)
			}
		}
	}
}

// TestErrorAttribution: in one Do, the commands that fail get their own
// errno and nothing else fails; the commands after a failure are applied,
// whether the failures share a datagram or not and whether every command is
// acknowledged or only failures and the last.
func TestErrorAttribution(t *testing.T) {
	for _, tc := range []struct {
		name   string
		batch  int
		ackAll bool
	}{
		{"one datagram", genl.DefaultBatchSize, false},
		{"one datagram, every command acknowledged", genl.DefaultBatchSize, true},
		{"two commands per datagram", 2, false},
		{"one command per datagram", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := bed.NewNetns(t, "attr")
			c := open(t, ns)
			c.SetBatchSize(tc.batch)
			c.SetAckAll(tc.ackAll)
			a, b := tcp("11.0.0.1", 80), tcp("11.0.0.2", 80)
			bad := genl.Service{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, Addr: addr("fd01:c::9"), Port: 1}
			ops := []genl.Op{
				{Cmd: genl.NewService, Service: a},
				{Cmd: genl.NewDest, Service: a, Dest: masq("10.0.0.1", 80, 1)},
				{Cmd: genl.NewService, Service: a},                             // duplicate
				{Cmd: genl.NewDest, Service: b, Dest: masq("10.0.0.2", 80, 1)}, // no such service
				{Cmd: genl.DelDest, Service: a, Dest: masq("10.0.0.3", 80, 1)}, // no such real server
				{Cmd: genl.NewService, Service: bad},                           // cannot be encoded
				{Cmd: genl.NewService, Service: genl.Service{Family: unix.AF_INET, FWMark: 7, Sched: "nosuchsched"}},
				{Cmd: genl.NewService, Service: genl.Service{Family: unix.AF_INET, FWMark: 8, Sched: "a-name-too-long-for-ipvs"}},
				{Cmd: genl.NewDest, Service: a, Dest: masq("10.0.0.4", 80, 2)},
				{Cmd: genl.NewService, Service: b},
			}
			want := []error{nil, nil, unix.EEXIST, unix.ESRCH, unix.ENOENT, genl.ErrInvalid, unix.ENOENT, unix.EINVAL, nil, nil}
			errs := c.Do(ops)
			for i, err := range errs {
				if want[i] == nil && err != nil || want[i] != nil && !errors.Is(err, want[i]) {
					t.Errorf("op %d (%s): %v, want %v", i, ops[i].Cmd, err, want[i])
				}
			}
			if t.Failed() {
				return
			}
			dests, err := c.Dests(a)
			if err != nil {
				t.Fatal(err)
			}
			sortDests(dests)
			if wantDests := []genl.Dest{normDest(t, masq("10.0.0.1", 80, 1)), normDest(t, masq("10.0.0.4", 80, 2))}; !slices.Equal(dests, wantDests) {
				t.Errorf("real servers after the batch: %+v, want %+v", dests, wantDests)
			}
			if svcs, err := c.Services(); err != nil || len(svcs) != 2 {
				t.Errorf("services after the batch: %+v, %v; want a and b", svcs, err)
			}
		})
	}
}

// TestEveryFailureReported: a datagram in which every command fails still
// brings back one error per command, also for datagrams far larger than the
// default, so the socket's receive buffer holds a full batch of failures.
func TestEveryFailureReported(t *testing.T) {
	ns := bed.NewNetns(t, "fail")
	c := open(t, ns)
	const n = 3000
	c.SetBatchSize(n)
	var ops []genl.Op
	for i := range n {
		// Real servers of services that do not exist.
		svc := tcp(netip.AddrFrom4([4]byte{11, 1, byte(i >> 8), byte(i)}).String(), 80)
		ops = append(ops, genl.Op{Cmd: genl.NewDest, Service: svc, Dest: masq("10.0.0.1", 80, 1)})
	}
	before := c.Counters()
	for i, err := range c.Do(ops) {
		if !errors.Is(err, unix.ESRCH) {
			t.Fatalf("op %d: %v, want ESRCH", i, err)
		}
	}
	if got := c.Counters(); got.DatagramsSent-before.DatagramsSent != 1 || got.Reopens != 0 {
		t.Errorf("counters %+v after %+v: want one datagram and no reopen", got, before)
	}
}

// TestBatchedPathIsLean pins the cost model: a batch of successful commands
// is one datagram out and one answer back.
func TestBatchedPathIsLean(t *testing.T) {
	ns := bed.NewNetns(t, "lean")
	c := open(t, ns)
	var ops []genl.Op
	for i := range 100 {
		svc := tcp(netip.AddrFrom4([4]byte{11, 2, 0, byte(i)}).String(), 80)
		ops = append(ops, genl.Op{Cmd: genl.NewService, Service: svc})
		for j := range 4 {
			ops = append(ops, genl.Op{Cmd: genl.NewDest, Service: svc, Dest: masq(netip.AddrFrom4([4]byte{10, 2, byte(j), byte(i)}).String(), 80, 1)})
		}
	}
	before := c.Counters()
	mustDo(t, c, ops...)
	got := c.Counters()
	batches := uint64((len(ops) + genl.DefaultBatchSize - 1) / genl.DefaultBatchSize)
	if sent, recv := got.DatagramsSent-before.DatagramsSent, got.DatagramsRecv-before.DatagramsRecv; sent != batches || recv != batches {
		t.Errorf("%d commands took %d datagrams out and %d back, want %d each", len(ops), sent, recv, batches)
	}
	if svcs := ns.IPVSTable(t); len(svcs) != 100 || len(svcs[0].Real) != 4 {
		t.Errorf("ipvsadm shows %d services", len(svcs))
	}
}

// TestNamespaces: a client programs only its own namespace, and opening it
// leaves the caller's namespace alone.
func TestNamespaces(t *testing.T) {
	a, b := bed.NewNetns(t, "nsa"), bed.NewNetns(t, "nsb")
	ca, cb := open(t, a), open(t, b)
	mustDo(t, ca, genl.Op{Cmd: genl.NewService, Service: tcp("11.0.0.1", 80)})
	if got := len(a.IPVSTable(t)); got != 1 {
		t.Errorf("namespace a has %d services, want 1", got)
	}
	if got := b.IPVSTable(t); len(got) != 0 {
		t.Errorf("namespace b shows a's service: %+v", got)
	}
	if svcs, err := cb.Services(); err != nil || len(svcs) != 0 {
		t.Errorf("client of b lists %+v, %v", svcs, err)
	}
	root, err := genl.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if svcs, err := root.Services(); err != nil || len(svcs) != 0 {
		t.Errorf("client of the caller's namespace lists %+v, %v", svcs, err)
	}
}

func TestFlush(t *testing.T) {
	ns := bed.NewNetns(t, "flush")
	c := open(t, ns)
	s := tcp("11.0.0.1", 80)
	mustDo(t, c, genl.Op{Cmd: genl.NewService, Service: s}, genl.Op{Cmd: genl.NewDest, Service: s, Dest: masq("10.0.0.1", 80, 1)},
		genl.Op{Cmd: genl.NewService, Service: genl.Service{Protocol: unix.IPPROTO_UDP, Addr: addr("fd01:c::1"), Port: 53, Sched: "rr"}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if svcs, err := c.Services(); err != nil || len(svcs) != 0 {
		t.Errorf("after Flush: %+v, %v", svcs, err)
	}
	if got := ns.IPVSTable(t); len(got) != 0 {
		t.Errorf("ipvsadm after Flush: %+v", got)
	}
}

// The kernel answers a dump of a missing service's real servers with an
// empty list; Dests passes that on.
func TestDestsOfMissingService(t *testing.T) {
	c := open(t, bed.NewNetns(t, "missing"))
	dests, err := c.Dests(tcp("11.9.9.9", 1))
	if err != nil || len(dests) != 0 {
		t.Errorf("Dests of a missing service: %+v, %v", dests, err)
	}
}
