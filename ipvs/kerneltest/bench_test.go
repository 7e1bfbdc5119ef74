package kerneltest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/vip"
)

// benchSizes are the tables the benchmarks program: "VIPSxBACKENDS,...",
// from L4LB_BENCH_SIZES; default 2000x5 and 10000x10.
func benchSizes(b *testing.B) [][2]int {
	spec := os.Getenv("L4LB_BENCH_SIZES")
	if spec == "" {
		spec = "2000x5,10000x10"
	}
	var out [][2]int
	for _, s := range strings.Split(spec, ",") {
		n, k, ok := strings.Cut(s, "x")
		nv, err1 := strconv.Atoi(n)
		kv, err2 := strconv.Atoi(k)
		if !ok || err1 != nil || err2 != nil {
			b.Fatalf("L4LB_BENCH_SIZES: bad size %q", s)
		}
		out = append(out, [2]int{nv, kv})
	}
	return out
}

// restoreFile writes tab as ipvsadm-restore input.
func restoreFile(b *testing.B, tab *vip.Table) string {
	var sb strings.Builder
	for _, v := range tab.VIPs {
		vaddr := netip.AddrPortFrom(v.Addr, v.Port)
		fmt.Fprintf(&sb, "-A -t %s -s wlc\n", vaddr)
		for _, be := range v.Backends {
			fmt.Fprintf(&sb, "-a -t %s -r %s -m -w %d\n", vaddr, be.Addr, be.Weight)
		}
	}
	path := filepath.Join(b.TempDir(), "rules")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkProgramFromEmpty programs a table of N VIPs x K backends into an
// empty namespace: ipvsadm-restore (IPVS only), and the reconciler end to
// end (IPVS services and real servers plus one address per VIP on the dummy
// interface) through each netlink client. Compare ns/op within one run.
func BenchmarkProgramFromEmpty(b *testing.B) {
	for _, size := range benchSizes(b) {
		tab := bigTable(size[0], size[1])
		cmds := size[0] * (1 + size[1])
		name := fmt.Sprintf("%dx%d", size[0], size[1])
		b.Run(name+"/ipvsadm-restore", func(b *testing.B) {
			file := restoreFile(b, tab)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := bed.NewNetns(b, "bench")
				b.StartTimer()
				if out, err := ns.Run("sh", "-c", "ipvsadm-restore < "+file); err != nil {
					b.Fatalf("ipvsadm-restore: %v: %s", err, out)
				}
				b.StopTimer()
				if got := strings.Count(ns.MustRun(b, "ipvsadm", "-Ln"), "\n"); got != cmds+3 {
					b.Fatalf("ipvsadm -Ln has %d lines, want %d", got, cmds+3)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(cmds), "commands")
		})
		for _, client := range []string{"genl", "moby"} {
			b.Run(name+"/reconciler-"+client, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					ns := bed.NewNetns(b, "bench")
					l := newLB(b, ns, func(c *ipvs.Config) { c.Netlink = client })
					b.StartTimer()
					ops := l.apply(tab, false)
					b.StopTimer()
					if want := uint64(cmds + size[0]); total(ops) != want {
						b.Fatalf("writes %v, want %d", ops, want)
					}
					if got := strings.Count(ns.MustRun(b, "ipvsadm", "-Ln"), "\n"); got != cmds+3 {
						b.Fatalf("ipvsadm -Ln has %d lines, want %d", got, cmds+3)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(cmds+size[0]), "writes")
			})
		}
	}
}

// BenchmarkProgrammedTable starts from the largest table programmed in the
// kernel and measures, within it, a one-backend change (writes/op must be
// exactly 1) and a full resync of the unchanged table (writes/op must be 0).
func BenchmarkProgrammedTable(b *testing.B) {
	sizes := benchSizes(b)
	size := sizes[len(sizes)-1]
	ns := bed.NewNetns(b, "benchbig")
	l := newLB(b, ns, nil)
	tab := bigTable(size[0], size[1])
	start := time.Now()
	l.apply(tab, false)
	b.Logf("programmed %dx%d in %s", size[0], size[1], time.Since(start))
	name := fmt.Sprintf("%dx%d", size[0], size[1])

	b.Run(name+"/one-backend-change", func(b *testing.B) {
		l.t = b
		with := &vip.Table{VIPs: append([]vip.VIP(nil), tab.VIPs...)}
		i := len(tab.VIPs) / 2
		v := with.VIPs[i]
		v.Backends = append(append([]vip.Backend(nil), v.Backends...), vip.Backend{Addr: netip.MustParseAddrPort("10.9.9.9:8080"), Weight: 1})
		with.VIPs[i] = v
		var writes uint64
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			next := with
			if n%2 == 1 {
				next = tab
			}
			ops := l.apply(next, false)
			writes += total(ops)
			if total(ops) != 1 {
				b.Fatalf("one-backend change wrote %v, want exactly 1", ops)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
		// Back to tab, with the drained backend gone.
		l.apply(tab, false)
		l.clock.Step(2 * time.Minute)
		l.apply(tab, false)
	})
	b.Run(name+"/full-resync-unchanged", func(b *testing.B) {
		l.t = b
		var writes uint64
		for n := 0; n < b.N; n++ {
			writes += total(l.apply(tab, true))
		}
		b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
	})
	l.t = b
}

// BenchmarkKernelApply splits the reconciler's programming cost: the
// dummy interface's addresses (rtnetlink, one round trip each) and the IPVS
// commands (generic netlink, batched), on the first benchmark size.
func BenchmarkKernelApply(b *testing.B) {
	size := benchSizes(b)[0]
	tab := bigTable(size[0], size[1])
	var addrOps, ipvsOps []ipvs.Op
	for _, v := range tab.VIPs {
		addrOps = append(addrOps, ipvs.Op{Kind: ipvs.AddAddress, Addr: v.Addr})
		svc := ipvs.Service{ServiceKey: v.ServiceKey, Scheduler: "wlc"}
		ipvsOps = append(ipvsOps, ipvs.Op{Kind: ipvs.AddService, Service: svc})
		for _, be := range v.Backends {
			ipvsOps = append(ipvsOps, ipvs.Op{Kind: ipvs.AddDestination, Service: svc, Destination: ipvs.Destination{Addr: be.Addr, Weight: be.Weight}})
		}
	}
	for _, tc := range []struct {
		name string
		ops  []ipvs.Op
	}{{"addresses", addrOps}, {"ipvs", ipvsOps}} {
		b.Run(fmt.Sprintf("%dx%d/%s", size[0], size[1], tc.name), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := bed.NewNetns(b, "bench")
				k, err := ipvs.OpenKernel(ipvs.KernelConfig{Namespace: ns.Path()})
				if err != nil {
					b.Fatal(err)
				}
				if err := k.EnsureInterface(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for j, err := range k.Apply(tc.ops) {
					if err != nil {
						b.Fatalf("op %d: %v", j, err)
					}
				}
				b.StopTimer()
				k.Close()
			}
			b.ReportMetric(float64(len(tc.ops)), "writes")
		})
	}
}
