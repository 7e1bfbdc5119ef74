package scenario

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// The app of the seed scenario.
const (
	AppVIP  = "/dcos-101/app2:10000"
	AppName = "app2.dcos-101.marathon.l4lb.thisdcos.directory"
	AppPort = 8080
)

// Result is what the scenario measured.
type Result struct {
	VIP string // address:port of app2's VIP
	// RegisterToKernel are the times from `l4lb register` on one node to the
	// backend being in the kernel of each other node (step 7).
	RegisterToKernel []time.Duration
	// APIToKernel are the same times from a registration through the HTTP
	// API, without the cost of starting the l4lb command.
	APIToKernel []time.Duration
	// KillToGone is, per other node, the time from SIGKILL of node 3's agent
	// to its backend leaving that node's kernel.
	KillToGone []time.Duration
	// UnhealthyToOut and HealthyToIn are, per node, the times from an
	// instance failing (passing again) its health check to it leaving
	// (rejoining) the node's kernel with weight > 0.
	UnhealthyToOut, HealthyToIn []time.Duration
	// Public is who answered the outside client's requests to
	// http://PublicAddr:10000 (step 2b); Sticky how many of StickyPairs
	// (client address, path: the VIP or the public port) kept one instance
	// (step 2c).
	Public              map[string]int
	Sticky, StickyPairs int
}

func hasWeight(addr string, pred func(w int, ok bool) bool) func(map[string]int) bool {
	return func(rs map[string]int) bool { w, ok := rs[addr]; return pred(w, ok) }
}

var (
	present = func(w int, ok bool) bool { return ok && w > 0 }
	gone    = func(w int, ok bool) bool { return !ok || w == 0 }
	absent  = func(w int, ok bool) bool { return !ok }
)

// Run runs the seed scenario on a three-node Env whose agents are not yet
// started, narrating through e.Say and failing through e.T.
func Run(e *Env) Result {
	t := e.T
	t.Helper()
	var res Result
	nodes := []int{1, 2, 3}

	e.Say("== 0. Three nodes, one agent each, gossip encrypted with a shared key")
	for _, i := range nodes {
		e.StartAgent(i)
	}
	for _, i := range nodes {
		e.WaitReady(i, 30*time.Second)
	}
	e.Say("l4lb members (node1):\n%s", e.L4LB(1, "members"))

	e.Say("== 1. app2 with one instance on node2, registered as %s", AppVIP)
	a := e.StartApp(2, "app2-a", AppPort)
	e.Say("$ l4lb register %s %s --check http:///healthz --public   (on node2)\n%s", AppVIP, a, e.L4LB(2, "register", AppVIP, a, "--check", "http:///healthz", "--public"))
	vipAddr := e.WaitDig(1, AppName, 10*time.Second)
	res.VIP = net.JoinHostPort(vipAddr, "10000")
	e.Say("$ dig @%s %s +short   (on node1)\n%s", e.DNS(1), AppName, vipAddr)
	for _, i := range []int{1, 3} {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "app2-a in the kernel", hasWeight(a, present))
	}
	url := "http://" + res.VIP + "/"
	who, err := e.Get(1, url)
	if err != nil || who != "app2-a" {
		t.Fatalf("curl %s from node1: %q, %v; want app2-a", url, who, err)
	}
	e.Say("$ curl %s   (on node1)\n%s", url, who)

	e.Say("== 2. Scale app2 to two instances: a second on node3")
	b := e.StartApp(3, "app2-b", AppPort)
	e.L4LB(3, "register", AppVIP, b, "--check", "http:///healthz", "--public")
	for _, i := range nodes {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "both instances in the kernel", func(rs map[string]int) bool {
			return hasWeight(a, present)(rs) && hasWeight(b, present)(rs)
		})
	}
	for _, i := range nodes {
		seen := e.Spread(i, url, 12)
		e.Say("12 requests from node%d: %s", i, FormatSpread(seen))
		if seen["app2-a"] == 0 || seen["app2-b"] == 0 || seen["app2-a"]+seen["app2-b"] != 12 {
			t.Errorf("node%d: requests not spread over both instances: %s", i, FormatSpread(seen))
		}
	}
	for _, i := range nodes {
		rs := e.RealServers(i, res.VIP)
		if len(rs) != 2 || rs[a] != 1 || rs[b] != 1 {
			t.Errorf("node%d: %s shows backends %v for %s, want %s and %s with weight 1", i, strings.Join(e.plane().ListCommand(), " "), rs, res.VIP, a, b)
		}
	}
	e.Say("$ %s   (on node1)\n%s", strings.Join(e.plane().ListCommand(), " "), e.C.Node(1).MustRun(t, e.plane().ListCommand()...))

	res.Public, res.Sticky, res.StickyPairs = e.RunPublic(a, b)

	e.Say("== 3. Scale back to one instance; a connection in flight to the removed one finishes")
	held := e.holdOn(1, res.VIP, "app2-b")
	e.L4LB(3, "deregister", AppVIP, b)
	for _, i := range nodes {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "app2-b drained", hasWeight(b, gone))
	}
	seen := e.Spread(1, url, 10)
	e.Say("10 new requests from node1 after scaling back: %s", FormatSpread(seen))
	if seen["app2-a"] != 10 {
		t.Errorf("after scaling back, new requests reached %s; want only app2-a", FormatSpread(seen))
	}
	if who, err := held.Request(); err != nil || who != "app2-b" {
		t.Errorf("the connection held to app2-b through the VIP broke when it drained: %q, %v", who, err)
	} else {
		e.Say("the connection held open to app2-b still answers: %s", who)
	}
	held.Close()

	e.Say("== 4. node3's agent is killed with SIGKILL: its backends leave every other node")
	e.L4LB(3, "register", AppVIP, b, "--check", "http:///healthz", "--public")
	for _, i := range nodes {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "app2-b back", hasWeight(b, present))
	}
	e.KillAgent(3, syscall.SIGKILL)
	killed := time.Now()
	for _, i := range []int{1, 2} {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "node3's backend out after node3 died", hasWeight(b, gone))
		res.KillToGone = append(res.KillToGone, time.Since(killed))
	}
	e.Say("node3's backend left node1 and node2 after %s", roundAll(res.KillToGone))
	for _, d := range res.KillToGone {
		if d > 3*time.Second {
			t.Errorf("node3's backend took %v to leave, want under 3s", d)
		}
	}
	e.Say("node3's agent starts again (its state directory holds its registration)")
	restarted := time.Now()
	e.StartAgent(3)
	e.WaitReady(3, 30*time.Second)
	e.Say("node3's agent is ready again after %v", time.Since(restarted).Round(time.Millisecond))

	e.Say("== 5. app2-a fails its health check, then recovers")
	if err := writeFile(FailFile("app2-a")); err != nil {
		t.Fatalf("make app2-a fail: %v", err)
	}
	failed := time.Now()
	for _, i := range nodes {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "unhealthy app2-a out", hasWeight(a, gone))
		res.UnhealthyToOut = append(res.UnhealthyToOut, time.Since(failed))
	}
	e.Say("app2-a stopped taking new connections on nodes 1-3 after %v", roundAll(res.UnhealthyToOut))
	removeFile(FailFile("app2-a"))
	healed := time.Now()
	for _, i := range nodes {
		e.WaitRealServers(i, res.VIP, 10*time.Second, "healthy app2-a back", hasWeight(a, present))
		res.HealthyToIn = append(res.HealthyToIn, time.Since(healed))
	}
	e.Say("app2-a was back on nodes 1-3 after %v", roundAll(res.HealthyToIn))
	for _, d := range append(append([]time.Duration{}, res.UnhealthyToOut...), res.HealthyToIn...) {
		if d > 3*time.Second {
			t.Errorf("health change took %v to reach a node's kernel, want under 3s", d)
		}
	}

	e.Say("== 6. node1's agent restarts; an established connection survives, the table is unchanged")
	held, who2, err := e.Hold(1, res.VIP)
	if err != nil {
		t.Fatalf("hold a connection from node1: %v", err)
	}
	before := e.plane().Listing(t, e.C.Node(1))
	e.KillAgent(1, syscall.SIGTERM)
	e.StartAgent(1)
	e.WaitReady(1, 30*time.Second)
	after := e.plane().Listing(t, e.C.Node(1))
	if before != after {
		t.Errorf("node1's %s table changed across the agent restart:\nbefore:\n%s\nafter:\n%s", e.plane(), before, after)
	}
	if again, err := held.Request(); err != nil || again != who2 {
		t.Errorf("connection through the VIP did not survive the restart: %q, %v (first answer %q)", again, err, who2)
	} else {
		e.Say("the connection opened before the restart still answers: %s", again)
	}
	held.Close()

	e.Say("== 7. Time from l4lb register on node2 to the backend in the kernel of node1 and node3")
	// The VIP exists first, so that each sample is one new backend.
	first := net.JoinHostPort(e.C.Node(2).Addr.String(), "9100")
	e.L4LB(2, "register", "/bench/latency:80", first)
	lsvc := net.JoinHostPort(e.WaitDig(2, "latency.bench.marathon.l4lb.thisdcos.directory", 10*time.Second), "80")
	var cli []time.Duration
	apiClient := api.NewClient(APIAddr)
	apiClient.HTTP = e.C.Node(2).HTTPClient(5 * time.Second)
	for k := 1; k <= 20; k++ {
		backend := net.JoinHostPort(e.C.Node(2).Addr.String(), fmt.Sprint(9100+k))
		viaCLI := k <= 10
		start := time.Now()
		if viaCLI {
			e.L4LB(2, "register", "/bench/latency:80", backend)
			cli = append(cli, time.Since(start))
		} else if _, err := apiClient.Register(context.Background(), source.Entry{VIP: "/bench/latency:80", Backend: backend}); err != nil {
			t.Fatalf("register %s through the API: %v", backend, err)
		}
		pending := map[int]bool{1: true, 3: true}
		for len(pending) > 0 && time.Since(start) < 10*time.Second {
			for i := range pending {
				if e.InKernel(i, lsvc, backend) {
					if viaCLI {
						res.RegisterToKernel = append(res.RegisterToKernel, time.Since(start))
					} else {
						res.APIToKernel = append(res.APIToKernel, time.Since(start))
					}
					delete(pending, i)
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		if len(pending) > 0 {
			t.Fatalf("backend %s not in the kernel of nodes %v within 10s of its registration", backend, pending)
		}
	}
	e.Say("`l4lb register` on node2 -> backend in the kernel of node1 and node3: p50 %v, p99 %v over %d samples (the command alone, a process started in the node: p50 %v)",
		Percentile(res.RegisterToKernel, 50).Round(time.Millisecond), Percentile(res.RegisterToKernel, 99).Round(time.Millisecond), len(res.RegisterToKernel), Percentile(cli, 50).Round(time.Millisecond))
	e.Say("PUT /v1/backends on node2 -> backend in the kernel of node1 and node3: p50 %v, p99 %v over %d samples",
		Percentile(res.APIToKernel, 50).Round(time.Millisecond), Percentile(res.APIToKernel, 99).Round(time.Millisecond), len(res.APIToKernel))
	e.Say("$ l4lb vips   (on node1)\n%s", e.L4LB(1, "vips"))
	return res
}

// holdOn opens connections from node i through vip until one lands on want,
// and keeps that one.
func (e *Env) holdOn(i int, vip, want string) *HeldConn {
	e.T.Helper()
	for k := 0; k < 40; k++ {
		h, who, err := e.Hold(i, vip)
		if err != nil {
			e.T.Fatalf("hold a connection to %s: %v", vip, err)
		}
		if who == want {
			return h
		}
		h.Close()
	}
	e.T.Fatalf("no connection to %s landed on %s in 40 tries", vip, want)
	return nil
}

// roundAll is ds rounded to the millisecond, for people.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
