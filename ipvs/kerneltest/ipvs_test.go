package kerneltest

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/vip"
)

func TestProgramsServicesAndAddresses(t *testing.T) {
	ns := bed.NewNetns(t, "lb")
	dnsAddr := netip.MustParseAddr("198.51.100.1")
	l := newLB(t, ns, func(c *ipvs.Config) { c.LocalAddrs = []netip.Addr{dnsAddr} })

	web := vipOf("tcp 11.0.0.1:80", "10.0.0.1:8080", "10.0.0.2:8080=0")
	dns := vipOf("udp 11.0.0.2:53", "10.0.0.3:53")
	dns.Scheduler, dns.Persistence = "rr", 300
	v6 := vipOf("tcp [fd01:c::1]:443", "[fd00::1]:8443", "[fd00::2]:8443=3")
	v6.Scheduler = "sh"
	vs := []vip.VIP{web, dns, v6}
	want := []string{
		"TCP 11.0.0.1:80 wlc: 10.0.0.1:8080 Masq 1, 10.0.0.2:8080 Masq 0",
		"UDP 11.0.0.2:53 rr persistent 300: 10.0.0.3:53 Masq 1",
		"TCP [fd01:c::1]:443 sh: [fd00::1]:8443 Masq 1, [fd00::2]:8443 Masq 3",
	}
	// Every scheduler the kernel has.
	for i, s := range []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"} {
		v := vipOf("tcp 11.0.1."+itoa(i+1)+":80", "10.0.0.1:80")
		v.Scheduler = s
		vs = append(vs, v)
		want = append(want, "TCP 11.0.1."+itoa(i+1)+":80 "+s+": 10.0.0.1:80 Masq 1")
	}
	tab := tableOf(vs...)
	ops := l.apply(tab, false)
	wantOps := map[string]uint64{"add_address": 3 + 1 + 11, "add_service": 14, "add_destination": 16}
	if !reflect.DeepEqual(ops, wantOps) {
		t.Errorf("writes %v, want %v", ops, wantOps)
	}
	if got := table(t, ns); !reflect.DeepEqual(got, sorted(want)) {
		t.Errorf("ipvsadm -Ln:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(sorted(want), "\n"))
	}
	addrs := ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "minuteman")
	for _, a := range []string{"11.0.0.1/32", "11.0.0.2/32", "198.51.100.1/32", "fd01:c::1/128", "11.0.1.11/32"} {
		if !strings.Contains(addrs, " "+a+" ") {
			t.Errorf("minuteman lacks %s:\n%s", a, addrs)
		}
	}
	if link := ns.MustRun(t, "ip", "-o", "link", "show", "minuteman"); !strings.Contains(link, "UP") || !strings.Contains(ns.MustRun(t, "ip", "-d", "-o", "link", "show", "minuteman"), "dummy") {
		t.Errorf("minuteman is not an up dummy interface: %s", link)
	}
	if ops := l.apply(tab, false); len(ops) != 0 {
		t.Errorf("second sync wrote %v", ops)
	}
	if ops := l.apply(tab, true); len(ops) != 0 {
		t.Errorf("full resync of an unchanged table wrote %v", ops)
	}
	if p := l.r.Programmed(); p == nil || len(p.VIPs) != len(vs) {
		t.Errorf("Programmed has %v VIPs, want %d", p, len(vs))
	}
	// Remove everything: services and addresses go (nothing has
	// connections), the local address stays.
	l.apply(&vip.Table{}, false)
	l.clock.Step(time.Second)
	l.apply(&vip.Table{}, false)
	if got := table(t, ns); len(got) != 0 {
		t.Errorf("after the empty table, ipvsadm -Ln shows %q", got)
	}
	addrs = ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "minuteman")
	if strings.Contains(addrs, "11.0.") || strings.Contains(addrs, "fd01:c::1") || !strings.Contains(addrs, "198.51.100.1/32") {
		t.Errorf("minuteman after the empty table:\n%s", addrs)
	}
}

func TestIncrementalApplyOnTheKernel(t *testing.T) {
	ns := bed.NewNetns(t, "lb")
	l := newLB(t, ns, nil)
	base := bigTable(500, 3)
	if ops := l.apply(base, false); total(ops) != 500+500+1500 {
		t.Fatalf("programming 500x3 from empty wrote %v", ops)
	}
	changed := &vip.Table{VIPs: append([]vip.VIP(nil), base.VIPs...)}
	v := changed.VIPs[250]
	v.Backends = append(append([]vip.Backend(nil), v.Backends...), vip.Backend{Addr: netip.MustParseAddrPort("10.9.9.9:8080"), Weight: 2})
	changed.VIPs[250] = v
	if ops := l.apply(changed, false); !reflect.DeepEqual(ops, map[string]uint64{"add_destination": 1}) {
		t.Errorf("adding one backend to a 500-VIP table wrote %v, want exactly one add_destination", ops)
	}
	out := ns.MustRun(t, "ipvsadm", "-Ln", "-t", netip.AddrPortFrom(v.Addr, 80).String())
	if !strings.Contains(out, "10.9.9.9:8080") {
		t.Errorf("the new backend is not in the kernel:\n%s", out)
	}
	if ops := l.apply(changed, true); len(ops) != 0 {
		t.Errorf("full resync after the change wrote %v", ops)
	}
}

func TestDriftIsRepaired(t *testing.T) {
	tab := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"), vipOf("udp 11.0.0.2:53", "10.0.0.1:53"))
	want := []string{
		"TCP 11.0.0.1:80 wlc: 10.0.0.1:80 Masq 1, 10.0.0.2:80 Masq 1",
		"UDP 11.0.0.2:53 wlc: 10.0.0.1:53 Masq 1",
	}
	foreign := "TCP 192.0.2.10:80 rr: 192.0.2.20:80 Masq 3"
	for _, tc := range []struct {
		name   string
		tamper [][]string
		ops    map[string]uint64
	}{
		{"ipvsadm -D", [][]string{{"ipvsadm", "-D", "-t", "11.0.0.1:80"}}, map[string]uint64{"add_service": 1, "add_destination": 2}},
		{"ipvsadm -C", [][]string{{"ipvsadm", "-C"}}, map[string]uint64{"add_service": 2, "add_destination": 3}},
		{"ipvsadm -e", [][]string{{"ipvsadm", "-e", "-t", "11.0.0.1:80", "-r", "10.0.0.2:80", "-m", "-w", "7"}}, map[string]uint64{"update_destination": 1}},
		{"ipvsadm -E", [][]string{{"ipvsadm", "-E", "-t", "11.0.0.1:80", "-s", "rr", "-p", "60"}}, map[string]uint64{"update_service": 1}},
		{"ip addr del", [][]string{{"ip", "addr", "del", "11.0.0.2/32", "dev", "minuteman"}}, map[string]uint64{"add_address": 1}},
		{"ip link del", [][]string{{"ip", "link", "del", "minuteman"}}, map[string]uint64{"add_address": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := bed.NewNetns(t, "lb")
			ns.MustRun(t, "ipvsadm", "-A", "-t", "192.0.2.10:80", "-s", "rr")
			ns.MustRun(t, "ipvsadm", "-a", "-t", "192.0.2.10:80", "-r", "192.0.2.20:80", "-m", "-w", "3")
			l := newLB(t, ns, nil)
			l.apply(tab, false)
			for _, cmd := range tc.tamper {
				ns.MustRun(t, cmd...)
			}
			if ops := l.apply(tab, false); len(ops) != 0 {
				t.Fatalf("an incremental sync wrote %v: it must trust its memory until a resync", ops)
			}
			if ops := l.apply(tab, true); !reflect.DeepEqual(ops, tc.ops) {
				t.Errorf("resync wrote %v, want %v", ops, tc.ops)
			}
			wantNow := sorted(append([]string{foreign}, want...))
			if tc.name == "ipvsadm -C" {
				wantNow = sorted(want) // the operator flushed their own service too
			}
			if got := table(t, ns); !reflect.DeepEqual(got, wantNow) {
				t.Errorf("ipvsadm -Ln after the resync:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNow, "\n"))
			}
			if ops := l.apply(tab, true); len(ops) != 0 {
				t.Errorf("a second resync wrote %v", ops)
			}
		})
	}
}

func TestForeignServicesAreNeverTouched(t *testing.T) {
	ns := bed.NewNetns(t, "lb")
	ns.MustRun(t, "ipvsadm", "-A", "-u", "192.0.2.10:53", "-s", "sh")
	ns.MustRun(t, "ipvsadm", "-a", "-u", "192.0.2.10:53", "-r", "192.0.2.20:53", "-m", "-w", "0")
	ns.MustRun(t, "ipvsadm", "-A", "-f", "7", "-s", "rr")
	before := table(t, ns)
	l := newLB(t, ns, nil)
	l.apply(tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80")), true)
	l.apply(&vip.Table{}, true)
	l.clock.Step(time.Hour)
	l.apply(&vip.Table{}, true)
	if got := table(t, ns); !reflect.DeepEqual(got, before) {
		t.Errorf("ipvsadm -Ln after l4lb came and went:\n%s\nwant the operator's services untouched:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
}

func TestSysctlsAreSetInTheNamespace(t *testing.T) {
	ns := bed.NewNetns(t, "lb")
	hostBefore, err := ipvs.ReadSysctl("", "net.ipv4.vs.expire_quiescent_template")
	if err != nil {
		t.Fatal(err)
	}
	newLB(t, ns, nil)
	for _, s := range ipvs.Sysctls {
		got, err := ipvs.ReadSysctl(ns.Path(), s.Key)
		if err != nil || got != s.Value {
			t.Errorf("%s in %s = %q (%v), want %q", s.Key, ns.Name, got, err, s.Value)
		}
	}
	if hostAfter, _ := ipvs.ReadSysctl("", "net.ipv4.vs.expire_quiescent_template"); hostAfter != hostBefore {
		t.Errorf("the guest's own namespace changed: expire_quiescent_template %s -> %s", hostBefore, hostAfter)
	}
}

func TestDrainingKeepsEstablishedConnections(t *testing.T) {
	tp := newLBTopology(t)
	l := newLB(t, tp.lb, nil)
	const vipAddr = "11.0.0.1:8080"
	backends := map[string]string{"b1": "10.1.1.2:8080", "b2": "10.1.2.2:8080"}
	both := func() *vip.Table {
		v := vipOf("tcp "+vipAddr, backends["b1"], backends["b2"])
		v.Scheduler = "rr"
		return tableOf(v)
	}
	only := func(name string) *vip.Table {
		v := vipOf("tcp "+vipAddr, backends[name])
		v.Scheduler = "rr"
		return tableOf(v)
	}
	other := map[string]string{"b1": "b2", "b2": "b1"}

	t.Run("weight 0 first, deleted when idle", func(t *testing.T) {
		l.apply(both(), false)
		c := dial(t, tp.client, vipAddr)
		defer c.Close()
		leaving, staying := c.Backend, other[c.Backend]
		if ops := l.apply(only(staying), false); !reflect.DeepEqual(ops, map[string]uint64{"update_destination": 1}) {
			t.Fatalf("backend leaving: writes %v, want one weight update", ops)
		}
		wantDraining := "TCP 11.0.0.1:8080 rr: " + map[bool]string{true: "10.1.1.2:8080 Masq 0, 10.1.2.2:8080 Masq 1", false: "10.1.1.2:8080 Masq 1, 10.1.2.2:8080 Masq 0"}[leaving == "b1"]
		if got := table(t, tp.lb); !reflect.DeepEqual(got, []string{wantDraining}) {
			t.Fatalf("ipvsadm -Ln while draining: %q, want %q", got, wantDraining)
		}
		if err := c.echo("still there"); err != nil {
			t.Fatalf("established connection through the draining backend %s broke: %v", leaving, err)
		}
		for i := 0; i < 3; i++ {
			if b := backendOf(t, tp.client, vipAddr); b != staying {
				t.Errorf("new connection %d went to %s, want %s (the draining backend takes none)", i, b, staying)
			}
		}
		l.clock.Step(time.Second)
		if ops := l.apply(only(staying), false); len(ops) != 0 {
			t.Fatalf("draining backend with an active connection: writes %v, want none", ops)
		}
		if err := c.echo("after a drain check"); err != nil {
			t.Fatalf("connection broke after a drain check: %v", err)
		}
		c.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			l.clock.Step(time.Second)
			ops := l.apply(only(staying), false)
			if reflect.DeepEqual(ops, map[string]uint64{"delete_destination": 1}) {
				break
			}
			if len(ops) != 0 || time.Now().After(deadline) {
				t.Fatalf("after the connection closed: writes %v; want the backend deleted once idle", ops)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := table(t, tp.lb); len(got) != 1 || strings.Contains(got[0], backends[leaving]) {
			t.Errorf("ipvsadm -Ln after the drain: %q", got)
		}
	})

	t.Run("deleted at the drain deadline", func(t *testing.T) {
		l.apply(both(), false)
		var c *conn
		for i := 0; i < 4 && (c == nil || c.Backend != "b1"); i++ {
			if c != nil {
				c.Close()
			}
			c = dial(t, tp.client, vipAddr)
		}
		defer c.Close()
		if c.Backend != "b1" {
			t.Fatalf("round robin never chose b1")
		}
		l.apply(only("b2"), false)
		l.clock.Step(59 * time.Second)
		if ops := l.apply(only("b2"), false); len(ops) != 0 {
			t.Fatalf("before the deadline: writes %v", ops)
		}
		l.clock.Step(time.Second)
		if ops := l.apply(only("b2"), false); !reflect.DeepEqual(ops, map[string]uint64{"delete_destination": 1}) {
			t.Fatalf("at the deadline: writes %v, want the deletion", ops)
		}
		// expire_nodest_conn: the connection to a deleted real server ends.
		if err := c.echo("after the deadline"); err == nil {
			t.Errorf("a connection to a real server deleted at the deadline still works; expire_nodest_conn should end it")
		}
	})

	t.Run("UDP backends are removed at once", func(t *testing.T) {
		serveNamedUDP(t, tp.b1, ":5353", "b1")
		serveNamedUDP(t, tp.b2, ":5353", "b2")
		u := vipOf("udp 11.0.0.2:5353", "10.1.1.2:5353", "10.1.2.2:5353")
		l.apply(tableOf(u), false)
		if ops := l.apply(tableOf(vipOf("udp 11.0.0.2:5353", "10.1.2.2:5353")), false); !reflect.DeepEqual(ops, map[string]uint64{"delete_destination": 1}) {
			t.Fatalf("UDP backend leaving: writes %v, want its deletion at once", ops)
		}
		got := table(t, tp.lb)
		udp := got[len(got)-1]
		if udp != "UDP 11.0.0.2:5353 wlc: 10.1.2.2:5353 Masq 1" {
			t.Errorf("ipvsadm -Ln: %q", got)
		}
		c, err := tp.client.Dial("udp", "11.0.0.2:5353", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("hi"))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || strings.TrimSpace(string(buf[:n])) != "b2" {
			t.Errorf("UDP through the VIP: %q, %v; want b2", buf[:n], err)
		}
	})
}

func TestRestartKeepsConnectionsAndWritesNothing(t *testing.T) {
	tp := newLBTopology(t)
	v := vipOf("tcp 11.0.0.1:8080", "10.1.1.2:8080", "10.1.2.2:8080")
	v.Persistence = 60
	tab := tableOf(v, vipOf("udp 11.0.0.1:53", "10.1.1.2:53"))
	first := newLB(t, tp.lb, nil)
	first.apply(tab, false)
	c := dial(t, tp.client, "11.0.0.1:8080")
	defer c.Close()
	if err := first.r.Close(false); err != nil {
		t.Fatal(err)
	}
	second := newLB(t, tp.lb, nil)
	if ops := second.apply(tab, false); len(ops) != 0 {
		t.Errorf("restart with an unchanged table wrote %v, want nothing", ops)
	}
	if err := c.echo("across the restart"); err != nil {
		t.Errorf("established connection broke across the agent restart: %v", err)
	}
	v2 := vipOf("tcp 11.0.0.1:8080", "10.1.1.2:8080", "10.1.2.2:8080", "10.1.2.2:9090")
	v2.Persistence = 60
	changed := tableOf(v2, vipOf("udp 11.0.0.1:53", "10.1.1.2:53"))
	third := newLB(t, tp.lb, nil)
	if ops := third.apply(changed, false); !reflect.DeepEqual(ops, map[string]uint64{"add_destination": 1}) {
		t.Errorf("restart with one more backend wrote %v, want exactly that", ops)
	}
	if err := c.echo("after two restarts"); err != nil {
		t.Errorf("established connection broke: %v", err)
	}
}

func TestConnectionsReportsCounts(t *testing.T) {
	tp := newLBTopology(t)
	l := newLB(t, tp.lb, nil)
	v := vipOf("tcp 11.0.0.1:8080", "10.1.1.2:8080")
	l.apply(tableOf(v), false)
	c := dial(t, tp.client, "11.0.0.1:8080")
	defer c.Close()
	got := l.r.Connections()
	if n := got[v.ServiceKey][netip.MustParseAddrPort("10.1.1.2:8080")]; n.Active != 1 || n.Weight != 1 {
		t.Errorf("Connections = %+v, want one active connection at weight 1", got)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestKernelAddressBatchIsIdempotent sends address writes in one batch,
// with a duplicate and a delete of a missing address: all succeed, and the
// interface holds what was added.
func TestKernelAddressBatchIsIdempotent(t *testing.T) {
	ns := bed.NewNetns(t, "lb")
	k, err := ipvs.OpenKernel(ipvs.KernelConfig{Namespace: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.EnsureInterface(); err != nil {
		t.Fatal(err)
	}
	a, b, c := netip.MustParseAddr("11.0.0.1"), netip.MustParseAddr("11.0.0.2"), netip.MustParseAddr("fd01:c::7")
	ops := []ipvs.Op{{Kind: ipvs.AddAddress, Addr: a}, {Kind: ipvs.AddAddress, Addr: a}, {Kind: ipvs.DeleteAddress, Addr: b}, {Kind: ipvs.AddAddress, Addr: c}}
	for i, err := range k.Apply(ops) {
		if err != nil {
			t.Errorf("op %d (%s): %v", i, ops[i], err)
		}
	}
	got, err := k.Addresses()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []netip.Addr{a, c}) {
		t.Errorf("addresses %v, want %v", got, []netip.Addr{a, c})
	}
}
