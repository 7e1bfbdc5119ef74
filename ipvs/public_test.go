package ipvs

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/vip"
)

var testPublicAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}

// publicVIP is a VIP of the test tables with a public port.
func publicVIP(key string, port uint16, backends ...string) vip.VIP {
	v := vipOf(key, backends...)
	v.PublicPort = port
	return v
}

func TestPublicServices(t *testing.T) {
	record := filepath.Join(t.TempDir(), "public.json")
	public := func(c *Config) { c.PublicAddrs = testPublicAddrs; c.PublicRecord = record }
	f := newFixture(t, nil, public)
	tab := tableOf(publicVIP("tcp 11.0.0.1:80", 10000, "10.0.0.1:80", "10.0.0.2:80"), vipOf("tcp 11.0.0.2:80", "10.0.0.3:80"))
	got := f.apply(tab, false)
	want := map[OpKind]int{AddAddress: 2, AddService: 4, AddDestination: 7}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("first table wrote %v, want %v (2 VIPs + 2 public services, no public address on the dummy interface)", got, want)
	}
	wantState := []string{
		"TCP 11.0.0.1:80 wlc p0: 10.0.0.1:80 w1 masq, 10.0.0.2:80 w1 masq",
		"TCP 11.0.0.2:80 wlc p0: 10.0.0.3:80 w1 masq",
		"TCP 192.0.2.1:10000 wlc p0: 10.0.0.1:80 w1 masq, 10.0.0.2:80 w1 masq",
		"TCP 192.0.2.2:10000 wlc p0: 10.0.0.1:80 w1 masq, 10.0.0.2:80 w1 masq",
	}
	if s := f.state(); !reflect.DeepEqual(s, wantState) {
		t.Fatalf("kernel %q\nwant %q", s, wantState)
	}
	if a := f.addrs(); slices.Contains(a, testPublicAddrs[0]) || len(a) != 2 {
		t.Fatalf("dummy interface holds %v, want the two VIPs only", a)
	}
	if b, _ := os.ReadFile(record); !strings.Contains(string(b), `"192.0.2.1"`) || !strings.Contains(string(b), `"192.0.2.2"`) {
		t.Fatalf("record %s does not list the public services", b)
	}
	if prog := f.r.Programmed(); prog != tab {
		t.Fatal("Programmed is not the table handed over")
	}

	// One backend more: one write on the VIP, one per public address.
	next := tableOf(publicVIP("tcp 11.0.0.1:80", 10000, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"), vipOf("tcp 11.0.0.2:80", "10.0.0.3:80"))
	if got := f.apply(next, false); !reflect.DeepEqual(got, map[OpKind]int{AddDestination: 3}) {
		t.Fatalf("one more backend wrote %v, want 3 add_destination", got)
	}
	// Persistence and scheduler follow the VIP.
	v := publicVIP("tcp 11.0.0.1:80", 10000, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80")
	v.Persistence, v.Scheduler = 60, "rr"
	if got := f.apply(tableOf(v, vipOf("tcp 11.0.0.2:80", "10.0.0.3:80")), false); !reflect.DeepEqual(got, map[OpKind]int{UpdateService: 3}) {
		t.Fatalf("persistence changed wrote %v, want 3 update_service", got)
	}
	// Not public any more: the public services drain, then go, and leave
	// the record.
	plain := tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80"), vipOf("tcp 11.0.0.2:80", "10.0.0.3:80"))
	f.apply(plain, false)
	f.clock.Step(2 * time.Minute)
	f.apply(plain, false)
	f.apply(plain, false)
	if s := f.state(); len(s) != 2 || strings.Contains(strings.Join(s, "|"), "192.0.2.") {
		t.Fatalf("kernel after the VIP stopped being public: %q", s)
	}
	if b, _ := os.ReadFile(record); strings.Contains(string(b), "192.0.2.") {
		t.Fatalf("record still lists %s", b)
	}
}

func TestPublicServiceOfAnOperatorIsNeverTouched(t *testing.T) {
	fake := NewFake()
	theirs := Service{ServiceKey: vip.ServiceKey{Addr: testPublicAddrs[0], Port: 10000, Protocol: vip.TCP}, Scheduler: "rr"}
	other := Service{ServiceKey: vip.ServiceKey{Addr: testPublicAddrs[0], Port: 22, Protocol: vip.TCP}, Scheduler: "rr"}
	dest := Destination{Addr: netip.MustParseAddrPort("192.0.2.20:80"), Weight: 3}
	fake.Tamper(Op{Kind: AddService, Service: theirs}, Op{Kind: AddDestination, Service: theirs, Destination: dest},
		Op{Kind: AddService, Service: other}, Op{Kind: AddDestination, Service: other, Destination: dest})
	f := newFixture(t, fake, func(c *Config) { c.PublicAddrs = testPublicAddrs })
	tab := tableOf(publicVIP("tcp 11.0.0.1:80", 10000, "10.0.0.1:80"))
	f.apply(tab, true)
	f.apply(tab, true)
	want := []string{
		"TCP 11.0.0.1:80 wlc p0: 10.0.0.1:80 w1 masq",
		"TCP 192.0.2.1:22 rr p0: 192.0.2.20:80 w3 masq",
		"TCP 192.0.2.1:10000 rr p0: 192.0.2.20:80 w3 masq",
		"TCP 192.0.2.2:10000 wlc p0: 10.0.0.1:80 w1 masq",
	}
	if s := f.state(); !reflect.DeepEqual(s, want) {
		t.Fatalf("kernel %q\nwant %q (the operator's services untouched, the free public address served)", s, want)
	}
	f.apply(&vip.Table{}, true)
	f.clock.Step(time.Hour)
	f.apply(&vip.Table{}, true)
	want = []string{"TCP 192.0.2.1:22 rr p0: 192.0.2.20:80 w3 masq", "TCP 192.0.2.1:10000 rr p0: 192.0.2.20:80 w3 masq"}
	if s := f.state(); !reflect.DeepEqual(s, want) {
		t.Fatalf("kernel after an empty table %q\nwant only the operator's %q", s, want)
	}
}

func TestPublicRecordAcrossRestartAndCleanup(t *testing.T) {
	fake := NewFake()
	record := filepath.Join(t.TempDir(), "public.json")
	public := func(c *Config) { c.PublicAddrs = testPublicAddrs[:1]; c.PublicRecord = record }
	tab := tableOf(publicVIP("udp 11.0.0.1:53", 53, "10.0.0.1:53"), publicVIP("tcp 11.0.0.2:80", 10000, "10.0.0.2:80"))
	first := newFixture(t, fake, public)
	first.apply(tab, false)
	if err := first.r.Close(false); err != nil {
		t.Fatal(err)
	}
	second := newFixture(t, fake, public)
	if got := second.apply(tab, false); len(got) != 0 {
		t.Fatalf("restart with an unchanged table wrote %v, want nothing (public services adopted)", got)
	}
	// Restarted without --public-address: the recorded services are still
	// l4lb's, and go (UDP at once).
	third := newFixture(t, fake, func(c *Config) { c.PublicRecord = record })
	plain := tableOf(vipOf("udp 11.0.0.1:53", "10.0.0.1:53"), vipOf("tcp 11.0.0.2:80", "10.0.0.2:80"))
	third.apply(plain, false)
	if s := strings.Join(third.state(), "|"); strings.Contains(s, "UDP 192.0.2.1") || !strings.Contains(s, "TCP 192.0.2.1:10000") {
		t.Fatalf("kernel %s: want the UDP public service gone, the TCP one draining", s)
	}
	if a := third.addrs(); slices.Contains(a, testPublicAddrs[0]) {
		t.Fatalf("the public address went onto the dummy interface while its service drains: %v", a)
	}
	// Cleanup removes what the record lists, and leaves an operator's
	// service at the same address.
	theirs := Service{ServiceKey: vip.ServiceKey{Addr: testPublicAddrs[0], Port: 22, Protocol: vip.TCP}, Scheduler: "rr"}
	fake.Tamper(Op{Kind: AddService, Service: theirs})
	if err := Cleanup(Config{Kernel: fake, Logger: quietLogger(), PublicRecord: record}); err != nil {
		t.Fatal(err)
	}
	svcs, _ := fake.Services()
	if len(svcs) != 1 || svcs[0].ServiceKey != theirs.ServiceKey {
		t.Fatalf("after Cleanup the kernel holds %v, want only the operator's %v", svcs, theirs)
	}
}
