package kerneltest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
)

// natWorks says whether cmd (iptables-nft, ip6tables-legacy, ...) can
// create and delete a chain in the nat table of ns, and what it said.
func natWorks(t *testing.T, ns *bed.Netns, cmd string) (bool, string) {
	t.Helper()
	out, err := ns.Run(cmd, "-w", "-t", "nat", "-N", "PREMISE")
	if err != nil {
		return false, strings.TrimSpace(out + " " + err.Error())
	}
	ns.MustRun(t, cmd, "-w", "-t", "nat", "-X", "PREMISE")
	return true, ""
}

// TestIPTablesBackendIsProvenByWriting: with nf_tables loaded but unable
// to make a nat table (this guest's kernel, the case a nat listing let
// through), the reconciler starts all the same: the nft backend fails to
// create its probe chain and the legacy backend, which can, is chosen and
// holds the masquerade rules of both families.
func TestIPTablesBackendIsProvenByWriting(t *testing.T) {
	if err := bed.LoadModules("nf_tables"); err != nil {
		t.Fatalf("the premise needs nf_tables loaded: %v", err)
	}
	ns := bed.NewNetns(t, "nat")
	if _, err := ns.Run("iptables-nft", "-w", "-t", "nat", "-S", "POSTROUTING"); err != nil {
		t.Logf("note: iptables-nft cannot even list the nat table here (%v); the listing would have refused nft too", err)
	}
	if ok, _ := natWorks(t, ns, "iptables-nft"); ok {
		t.Fatal("premise: this kernel's nf_tables can make a nat table, so the fallback to legacy is not exercised")
	}
	l := newLB(t, ns, func(cfg *ipvs.Config) { cfg.Masquerade = ipvs.Masquerade{} })
	if why := l.r.IPv6Disabled(); why != "" {
		t.Errorf("IPv6 disabled although ip6tables-legacy has NAT: %s", why)
	}
	v4 := ns.MustRun(t, "iptables-legacy", "-w", "-t", "nat", "-S")
	if !strings.Contains(v4, "-j L4LB-POSTROUTING") || !strings.Contains(v4, "--vaddr 11.0.0.0/8") {
		t.Errorf("iptables-legacy lacks the masquerade rules:\n%s", v4)
	}
	if v6 := ns.MustRun(t, "ip6tables-legacy", "-w", "-t", "nat", "-S"); !strings.Contains(v6, "--vaddr fd01:c::/64") {
		t.Errorf("ip6tables-legacy lacks the IPv6 masquerade rule:\n%s", v6)
	}
	for _, cmd := range []string{"iptables-legacy", "iptables-nft"} {
		if out, _ := ns.Run(cmd, "-w", "-t", "nat", "-S"); strings.Contains(out, "L4LB-PROBE") {
			t.Errorf("%s still holds the probe chain:\n%s", cmd, out)
		}
	}
}

// TestMissingIPv6NATDisablesIPv6VIPs: without IPv6 NAT in the kernel
// (ip6table_nat unloaded), the reconciler starts, says why IPv6 VIPs are
// disabled (IPv6Disabled, the l4lb_ipvs_ipv6_disabled gauge), programs the
// IPv4 VIPs with their masquerade rule and leaves the IPv6 ones out of the
// kernel and of what it reports programmed (so DNS does not answer them).
func TestMissingIPv6NATDisablesIPv6VIPs(t *testing.T) {
	if mods, _ := os.ReadFile("/proc/modules"); strings.Contains(string(mods), "ip6table_nat ") {
		// Namespaces of earlier tests may hold the module for a moment
		// after they are deleted (the kernel frees them asynchronously).
		var out []byte
		var err error
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(200 * time.Millisecond) {
			if out, err = exec.Command("rmmod", "ip6table_nat").CombinedOutput(); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("premise: cannot unload ip6table_nat: %v: %s", err, out)
		}
	}
	t.Cleanup(func() {
		if err := bed.LoadModules("ip6table_nat"); err != nil {
			t.Errorf("reload ip6table_nat: %v", err)
		}
	})
	ns := bed.NewNetns(t, "nat6")
	if ok, _ := natWorks(t, ns, "ip6tables-legacy"); ok {
		t.Fatal("premise: ip6tables-legacy still has a nat table after ip6table_nat was unloaded")
	}
	l := newLB(t, ns, func(cfg *ipvs.Config) { cfg.Masquerade = ipvs.Masquerade{} })
	why := l.r.IPv6Disabled()
	if !strings.Contains(why, "IPv6 VIPs disabled") {
		t.Fatalf("IPv6Disabled() = %q, want the reason", why)
	}
	t.Logf("reason: %s", why)
	if got, ok := gauge(t, l.r.Collector(), "l4lb_ipvs_ipv6_disabled"); !ok || got != 1 {
		t.Errorf("l4lb_ipvs_ipv6_disabled = %v (found: %v), want 1", got, ok)
	}
	tab := tableOf(
		vipOf("tcp 11.0.0.1:80", "10.0.0.1:8080"),
		vipOf("tcp [fd01:c::1]:443", "[fd00::1]:8443"),
	)
	l.apply(tab, false)
	if got := table(t, ns); len(got) != 1 || !strings.HasPrefix(got[0], "TCP 11.0.0.1:80 ") {
		t.Errorf("ipvsadm -Ln: %q, want the IPv4 VIP alone", got)
	}
	prog := l.r.Programmed()
	if prog == nil || len(prog.VIPs) != 1 || prog.VIPs[0].Addr.Is6() {
		t.Errorf("programmed table: %+v, want the IPv4 VIP alone", prog)
	} else if len(prog.Errors) != 1 || !strings.Contains(prog.Errors[0], "1 IPv6 VIPs left out") {
		t.Errorf("programmed table errors: %q, want the IPv6 VIP's", prog.Errors)
	}
	if v4 := ns.MustRun(t, "iptables-legacy", "-w", "-t", "nat", "-S"); !strings.Contains(v4, "--vaddr 11.0.0.0/8") {
		t.Errorf("the IPv4 masquerade rule is missing:\n%s", v4)
	}
	if err := l.r.Close(true); err != nil {
		t.Errorf("clean close with IPv6 disabled: %v", err)
	}
}

// gauge gathers c and returns the value of the gauge name.
func gauge(t *testing.T, c prometheus.Collector, name string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}
