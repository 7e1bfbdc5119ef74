// Command demo is `make demo`: it boots the real-kernel test bed (a User-Mode
// Linux guest), builds a three-node cluster in it, and runs l4lb's seed
// scenario with readable output: the members, the VIP table, requests
// landing on both instances, a client outside the cluster through the
// public node and sticky sessions, scaling back, a dead node, a failing instance,
// an agent restart; the stats page in headless Chromium (summarised, with
// a screenshot written), a zero-downtime replacement of an instance; then a
// short summary.
//
// With DATAPLANE=nftables (`DATAPLANE=nftables make demo`) the agents
// program nf_tables instead, and the cluster is built from namespaces of
// the host kernel, without the guest.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
)

var binaries = []string{"github.com/l4lb/l4lb/cmd/l4lb", "github.com/l4lb/l4lb/cmd/l4lb-demoapp"}

func main() {
	switch p := scenario.Plane(os.Getenv("DATAPLANE")); p {
	case "", scenario.IPVS:
		bed.RunProgram(func() int { return run(scenario.IPVS) }, bed.Build(binaries...))
	case scenario.NFTables:
		os.Exit(onHost(p))
	default:
		fmt.Printf("DATAPLANE=%q: want ipvs (the default, in the UML guest) or nftables (on the host kernel)\n", p)
		os.Exit(2)
	}
}

// onHost runs the demo on the host kernel, in namespaces it creates.
func onHost(p scenario.Plane) int {
	dir, err := bed.BuildBinaries(binaries...)
	if err != nil {
		fmt.Printf("DEMO FAILED: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Setenv(bed.EnvBinDir, dir)
	os.Setenv(bed.EnvKernel, "host")
	fmt.Printf("=== l4lb demo on the %s data plane, on the host kernel (namespaces, no guest)\n", p)
	return run(p)
}

func run(p scenario.Plane) int {
	d := &demo{}
	defer d.cleanup()
	code := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatal); !ok {
					panic(r)
				}
				code = 1
			}
		}()
		start := time.Now()
		e := scenario.NewPlane(d, p, 3, bed.Binary(d, "l4lb"), bed.Binary(d, "l4lb-demoapp"), d.Logf)
		res := scenario.Run(e)
		var st *scenario.StatsResult
		var dr *scenario.DeployResult
		if p == scenario.IPVS {
			a := e.C.Node(2).Addr.String() + ":8080"
			b := e.C.Node(3).Addr.String() + ":8080"
			e.Say("\n== 8. The stats page of node1 (--stats-listen %s:%d; also at /haproxy?stats and as CSV at /haproxy?stats;csv), in headless Chromium", e.C.Node(1).Addr, scenario.StatsPort)
			shot := os.Getenv("L4LB_STATS_SCREENSHOT")
			if shot == "" {
				shot = filepath.Join(os.TempDir(), "l4lb-stats.png")
			}
			r := scenario.StatsPage(e, 1, map[string]string{"app2-a": a, "app2-b": b}, 24, "app2-b", 3, shot)
			st = &r
			e.Say("\n== 9. Zero-downtime replacement: app2-a on node2 replaced by app2-c on node1, under a request loop from node3")
			x := scenario.Deploy(e, 3, 2, "app2-a", a, 1, "app2-c")
			dr = &x
		} else {
			e.Say("\n(the stats page's browser check and the zero-downtime replacement run on the IPVS plane: make demo)")
		}
		fmt.Printf("\n== Summary (%s)\n", time.Since(start).Round(time.Second))
		fmt.Printf("app2's named VIP %s answered from all three nodes, over both instances;\n", res.VIP)
		fmt.Printf("a client outside the cluster reached app2 through the public node at http://%s:10000 (%s); %d of %d (client address, path) pairs kept one instance through the sticky VIP and its public port;\n",
			scenario.PublicAddr, scenario.FormatSpread(res.Public), res.Sticky, res.StickyPairs)
		fmt.Printf("scaling back drained the removed instance without cutting its open connection;\n")
		fmt.Printf("node3's death reached the other kernels in %s;\n", join(res.KillToGone))
		fmt.Printf("a failing health check took the instance out in %s and back in %s;\n", join(res.UnhealthyToOut), join(res.HealthyToIn))
		fmt.Printf("an agent restart kept the %s table (%s) and an open connection;\n", p, strings.Join(p.ListCommand(), " "))
		where := "in the UML guest, which is slow per system call: compare, do not quote"
		if p == scenario.NFTables {
			where = "on the host kernel, on a machine shared with other work"
		}
		fmt.Printf("l4lb register -> kernel of the other nodes: p50 %s, p99 %s; through the API: p50 %s, p99 %s\n(%s).\n",
			ms(scenario.Percentile(res.RegisterToKernel, 50)), ms(scenario.Percentile(res.RegisterToKernel, 99)),
			ms(scenario.Percentile(res.APIToKernel, 50)), ms(scenario.Percentile(res.APIToKernel, 99)), where)
		if st != nil {
			fmt.Printf("the stats page (Chromium) showed app2 %s, its connections up by the %d requests sent (%s -> %s), a drained instance with its open connection; screenshot %s;\n",
				st.Before.Summary, st.Sent, st.Before.TotalConns, st.After.TotalConns, st.Shot)
		}
		if dr != nil {
			fmt.Printf("a zero-downtime replacement (register --wait %s, deregister --wait %s) lost %d of %d requests.\n",
				ms(dr.Registered), ms(dr.Drained), len(dr.Failed), dr.Requests())
		}
	}()
	if code != 0 || d.failed {
		fmt.Println("\nDEMO FAILED: see the messages above")
		return 1
	}
	return 0
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func join(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(parts, ", ")
}

// demo is a bed.T that prints instead of testing.
type demo struct {
	cleanups []func()
	failed   bool
	temps    []string
}

type fatal struct{}

func (d *demo) Helper() {}
func (d *demo) Logf(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
}
func (d *demo) Errorf(format string, args ...any) {
	d.failed = true
	fmt.Printf("ERROR: "+format+"\n", args...)
}
func (d *demo) Fatalf(format string, args ...any) {
	d.failed = true
	_, file, line, _ := runtime.Caller(1)
	fmt.Printf("FATAL (%s:%d): "+format+"\n", append([]any{file, line}, args...)...)
	panic(fatal{})
}
func (d *demo) Fatal(args ...any) { d.Fatalf("%s", fmt.Sprint(args...)) }
func (d *demo) Cleanup(f func())  { d.cleanups = append(d.cleanups, f) }
func (d *demo) Failed() bool      { return d.failed }
func (d *demo) TempDir() string {
	dir, err := os.MkdirTemp("", "l4lb-demo-")
	if err != nil {
		d.Fatalf("temp dir: %v", err)
	}
	d.temps = append(d.temps, dir)
	return dir
}

func (d *demo) cleanup() {
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
	for _, dir := range d.temps {
		os.RemoveAll(dir)
	}
}
