package kerneltest

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
)

// TestCleanupRemovesOnlyL4LBsState programs services (one with a held
// real server of weight 0), addresses and masquerade rules, adds a service
// l4lb does not own, and checks that Cleanup removes exactly l4lb's.
func TestCleanupRemovesOnlyL4LBsState(t *testing.T) {
	ns := bed.NewNetns(t, "lb")
	dnsAddr := netip.MustParseAddr("198.51.100.1")
	withMasq := func(c *ipvs.Config) {
		c.Masquerade = ipvs.Masquerade{}
		c.LocalAddrs = []netip.Addr{dnsAddr}
	}
	l := newLB(t, ns, withMasq)
	tab := tableOf(
		vipOf("tcp 11.0.0.1:80", "10.0.0.1:8080", "10.0.0.2:8080=0"),
		vipOf("udp 11.0.0.2:53", "10.0.0.3:53"),
		vipOf("tcp [fd01:c::1]:443", "[fd00::1]:8443"),
	)
	l.apply(tab, false)
	ns.MustRun(t, "ip", "addr", "add", "10.9.9.9/32", "dev", "lo")
	ns.MustRun(t, "ipvsadm", "-A", "-t", "10.9.9.9:80", "-s", "rr")
	ns.MustRun(t, "ipvsadm", "-a", "-t", "10.9.9.9:80", "-r", "10.0.0.9:80", "-m")
	if got := table(t, ns); len(got) != 4 {
		t.Fatalf("before cleanup: want 4 services, ipvsadm -Ln:\n%s", strings.Join(got, "\n"))
	}
	if err := l.r.Close(false); err != nil {
		t.Fatal(err)
	}
	if err := ipvs.Cleanup(ipvs.Config{Namespace: ns.Path(), Logger: testLogger(t)}); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	got := table(t, ns)
	if want := "TCP 10.9.9.9:80 rr: 10.0.0.9:80 Masq 1"; len(got) != 1 || got[0] != want {
		t.Errorf("after cleanup ipvsadm -Ln:\n%s\nwant only\n%s", strings.Join(got, "\n"), want)
	}
	if addrs := ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "minuteman", "scope", "global"); strings.TrimSpace(addrs) != "" {
		t.Errorf("minuteman still holds addresses after cleanup:\n%s", addrs)
	}
	for _, cmd := range []string{"iptables-legacy", "ip6tables-legacy"} {
		if out := ns.MustRun(t, cmd, "-t", "nat", "-S"); strings.Contains(out, "L4LB") || strings.Contains(out, "l4lb") {
			t.Errorf("%s after cleanup still has l4lb's rules:\n%s", cmd, out)
		}
	}
	// Cleaning a clean node is not an error.
	if err := ipvs.Cleanup(ipvs.Config{Namespace: ns.Path(), Logger: testLogger(t)}); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}
