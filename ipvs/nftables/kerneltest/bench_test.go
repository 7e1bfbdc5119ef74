package kerneltest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/ipvs/ipvstest"
	"github.com/l4lb/l4lb/ipvs/nftables"
	"github.com/l4lb/l4lb/vip"
)

// benchSize reads L4LB_BENCH_SIZES ("10000x10", the default).
func benchSize(b *testing.B) (int, int) {
	s := os.Getenv("L4LB_BENCH_SIZES")
	if s == "" {
		s = "10000x10"
	}
	var n, k int
	if _, err := fmt.Sscanf(s, "%dx%d", &n, &k); err != nil {
		b.Fatalf("L4LB_BENCH_SIZES=%q: want NxK", s)
	}
	return n, k
}

// nftRuleset renders, as `nft -f` input, the same ruleset the reconciler
// programs for t (round robin, no persistence): the services maps, one
// slots map and one chain per VIP, the base chains.
func nftRuleset(t *vip.Table, mark uint32) string {
	var sb strings.Builder
	sb.WriteString("table inet l4lb {\n")
	sb.WriteString("\tmap services4 {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n")
	sb.WriteString("\tmap services6 {\n\t\ttype ipv6_addr . inet_proto . inet_service : verdict\n\t}\n")
	for _, c := range []struct{ name, hook, prio string }{{"prerouting", "prerouting", "dstnat"}, {"output", "output", "-100"}} {
		fmt.Fprintf(&sb, "\tchain %s {\n\t\ttype nat hook %s priority %s; policy accept;\n", c.name, c.hook, c.prio)
		sb.WriteString("\t\tip daddr . meta l4proto . th dport vmap @services4\n\t\tip6 daddr . meta l4proto . th dport vmap @services6\n\t}\n")
	}
	fmt.Fprintf(&sb, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tmeta mark & 0x%08x == 0x%08x meta mark set meta mark & 0x%08x masquerade\n\t}\n", mark, mark, ^mark)
	for i := range t.VIPs {
		v := &t.VIPs[i]
		id := string(v.Protocol) + "-" + strings.ReplaceAll(v.Addr.String(), ":", "_") + "-" + fmt.Sprint(v.Port)
		fam := "ip"
		if v.Addr.Is6() {
			fam = "ip6"
		}
		fmt.Fprintf(&sb, "\tmap slots-%s {\n\t\ttypeof numgen inc mod 1 : %s daddr . %s dport\n\t\telements = { ", id, fam, v.Protocol)
		for j, be := range v.Backends {
			if j > 0 {
				sb.WriteString(", ")
			}
			fmt.Fprintf(&sb, "%d : %s . %d", j, be.Addr.Addr(), be.Addr.Port())
		}
		sb.WriteString(" }\n\t}\n")
		fmt.Fprintf(&sb, "\tchain svc-%s {\n\t\tmeta l4proto %s meta mark set meta mark | 0x%08x dnat %s to numgen inc mod %d map @slots-%s\n\t}\n", id, v.Protocol, mark, fam, len(v.Backends), id)
	}
	sb.WriteString("}\n")
	for i := range t.VIPs {
		v := &t.VIPs[i]
		id := string(v.Protocol) + "-" + strings.ReplaceAll(v.Addr.String(), ":", "_") + "-" + fmt.Sprint(v.Port)
		set := "services4"
		if v.Addr.Is6() {
			set = "services6"
		}
		fmt.Fprintf(&sb, "add element inet l4lb %s { %s . %s . %d : goto svc-%s }\n", set, v.Addr, v.Protocol, v.Port, id)
	}
	return sb.String()
}

func countLines(s, prefix string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			n++
		}
	}
	return n
}

// BenchmarkProgramFromEmpty programs N VIPs x K backends into an empty
// namespace, with the reconciler (end to end: plan, one transaction,
// memory, publish) and with `nft -f` of the same ruleset, in the same
// iteration; each starts from a fresh namespace and is checked.
//
//	L4LB_BENCH_SIZES=10000x10 go test -run '^$' -bench ProgramFromEmpty -benchtime 3x ./ipvs/nftables/kerneltest/
func BenchmarkProgramFromEmpty(b *testing.B) {
	n, k := benchSize(b)
	table := ipvstest.BigTable(n, k)
	for i := range table.VIPs {
		table.VIPs[i].Scheduler = "rr"
	}
	text := nftRuleset(table, nftables.DefaultMasqueradeMark)
	file := filepath.Join(b.TempDir(), "ruleset.nft")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	var l4lb, nft time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns1 := newNS(b, "bench")
		r, err := nftables.New(nftables.Config{Namespace: ns1.path(), ResyncPeriod: time.Hour, KeepSysctls: true})
		if err != nil {
			b.Fatal(err)
		}
		r.Update(table)
		b.StartTimer()
		start := time.Now()
		if err := r.SyncNow(false); err != nil {
			b.Fatal(err)
		}
		l4lb += time.Since(start)
		b.StopTimer()
		ns2 := newNS(b, "benchnft")
		start = time.Now()
		if out, err := ns2.run("nft", "-f", file); err != nil {
			b.Fatalf("nft -f: %v %s", err, out)
		}
		nft += time.Since(start)
		got1 := ns1.mustRun(b, "nft", "list", "table", "inet", "l4lb")
		got2 := ns2.mustRun(b, "nft", "list", "table", "inet", "l4lb")
		for _, w := range []struct {
			prefix string
			want   int
		}{{"chain svc-", n}, {"map slots-", n}} {
			if a, c := countLines(got1, w.prefix), countLines(got2, w.prefix); a != w.want || c != w.want {
				b.Fatalf("%q: reconciler %d, nft -f %d, want %d", w.prefix, a, c, w.want)
			}
		}
		_ = r.Close(false)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(l4lb.Seconds()/float64(b.N), "l4lb-s")
	b.ReportMetric(nft.Seconds()/float64(b.N), "nft-f-s")
	b.ReportMetric(l4lb.Seconds()/nft.Seconds(), "ratio")
}

// BenchmarkAddOneService adds one VIP (2 backends) beside N VIPs x K
// backends, incrementally (a derived table): one small transaction.
//
//	go test -run '^$' -bench AddOneService -benchtime 200x ./ipvs/nftables/kerneltest/
func BenchmarkAddOneService(b *testing.B) {
	n, k := benchSize(b)
	ns := newNS(b, "benchadd")
	r, err := nftables.New(nftables.Config{Namespace: ns.path(), ResyncPeriod: time.Hour, KeepSysctls: true})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(false)
	cur := vip.Derive(nil, ipvstest.BigTable(n, k).VIPs, nil, nil)
	r.Update(cur)
	if err := r.SyncNow(false); err != nil {
		b.Fatal(err)
	}
	before := r.KernelCounters()
	tables := make([]*vip.Table, b.N)
	for i := range tables {
		key := vip.ServiceKey{Addr: netip.AddrFrom4([4]byte{12, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 80, Protocol: vip.TCP}
		cur = derive(cur, key, func(v *vip.VIP) {
			v.Backends = []vip.Backend{{Addr: netip.MustParseAddrPort("10.2.0.1:8080"), Weight: 1}, {Addr: netip.MustParseAddrPort("10.2.0.2:8080"), Weight: 1}}
		})
		tables[i] = cur
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Update(tables[i])
		if err := r.SyncNow(false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after := r.KernelCounters()
	b.ReportMetric(float64(after.Transactions-before.Transactions)/float64(b.N), "tx/op")
	b.ReportMetric(float64(after.Elements-before.Elements)/float64(b.N), "elements/op")
}

// BenchmarkConnectRate opens TCP connections one after the other from the
// client, through the VIP (round robin over two backends) and straight to
// a backend, in the same run.
//
//	go test -run '^$' -bench ConnectRate -benchtime 2000x ./ipvs/nftables/kerneltest/
func BenchmarkConnectRate(b *testing.B) {
	bd := newBed(b)
	bd.serve(b, 8080)
	r := bd.reconciler(b, nftables.Config{})
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 0, "10.90.2.2:8080", "10.90.3.2:8080"))
	if err := r.SyncNow(false); err != nil {
		b.Fatal(err)
	}
	rate := func(addr string) float64 {
		var elapsed time.Duration
		err := bd.client.do(func() error {
			start := time.Now()
			for i := 0; i < b.N; i++ {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					return err
				}
				buf := make([]byte, 3)
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(buf); err != nil {
					return err
				}
				c.Close()
			}
			elapsed = time.Since(start)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return float64(b.N) / elapsed.Seconds()
	}
	b.ResetTimer()
	direct := rate("10.90.2.2:8080")
	viaVIP := rate("11.0.0.1:80")
	b.StopTimer()
	b.ReportMetric(direct, "direct-conn/s")
	b.ReportMetric(viaVIP, "vip-conn/s")
	b.ReportMetric(viaVIP/direct, "ratio")
}

// BenchmarkReplaceOneBackend replaces one backend of one VIP by another
// beside N VIPs x K backends: the slot count stays, so the transaction is
// element writes only (no rule), which the kernel commits without
// validating the table's chains. Set against BenchmarkAddOneService, it
// shows where the time of a new service goes.
//
//	go test -run '^$' -bench ReplaceOneBackend -benchtime 200x ./ipvs/nftables/kerneltest/
func BenchmarkReplaceOneBackend(b *testing.B) {
	n, k := benchSize(b)
	ns := newNS(b, "benchrep")
	r, err := nftables.New(nftables.Config{Namespace: ns.path(), ResyncPeriod: time.Hour, KeepSysctls: true})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(false)
	cur := vip.Derive(nil, ipvstest.BigTable(n, k).VIPs, nil, nil)
	r.Update(cur)
	if err := r.SyncNow(false); err != nil {
		b.Fatal(err)
	}
	key := cur.VIPs[n/2].ServiceKey
	tables := make([]*vip.Table, b.N)
	for i := range tables {
		cur = derive(cur, key, func(v *vip.VIP) {
			v.Backends[0].Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)}), 8080)
		})
		tables[i] = cur
	}
	before := r.KernelCounters()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Update(tables[i])
		if err := r.SyncNow(false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after := r.KernelCounters()
	b.ReportMetric(float64(after.Messages-before.Messages)/float64(b.N), "msgs/op")
	b.ReportMetric(float64(after.Elements-before.Elements)/float64(b.N), "elements/op")
}
