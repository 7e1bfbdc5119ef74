package scenario

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Case is one end-to-end case that every data plane must pass; Cases is
// the table TestSharedCases runs on IPVS (in the guest) and on nftables
// (on the host), beside the seed scenario's steps.
type Case struct {
	Name string
	Run  func(e *Env)
}

// Cases: a UDP VIP, a client that is also the backend (hairpin), the
// kernel's state removed behind the agent's back (drift), repaired by the
// resync, a named VIP over IPv6, and IP VIPs (registered by address, IPv4
// and IPv6). The agents run with CasesResync.
var Cases = []Case{
	{"udp", caseUDP},
	{"hairpin", caseHairpin},
	{"drift", caseDrift},
	{"ipv6", caseIPv6},
	{"ipvip", caseIPVIP},
}

// CasesResync is the --resync-period the agents of the shared cases run
// with, so that the drift case is repaired within seconds.
const CasesResync = 2 * time.Second

// RunCases starts two agents with CasesResync and runs every case.
func RunCases(e *Env) {
	e.T.Helper()
	e.AgentFlags = map[int][]string{}
	for _, i := range []int{1, 2} {
		e.AgentFlags[i] = []string{"--resync-period", CasesResync.String()}
		e.StartAgent(i)
	}
	for _, i := range []int{1, 2} {
		e.WaitReady(i, 30*time.Second)
	}
	for _, c := range Cases {
		e.Say("== shared case %s on %s", c.Name, e.plane())
		start := time.Now()
		c.Run(e)
		e.Say("shared case %s on %s: passed in %v", c.Name, e.plane(), time.Since(start).Round(time.Millisecond))
	}
}

// caseUDP: a UDP VIP reaches a UDP backend on another node and the answer
// comes back.
func caseUDP(e *Env) {
	n := e.C.Node(2)
	udp := net.JoinHostPort(n.Addr.String(), "5300")
	tcp := net.JoinHostPort(n.Addr.String(), "18080")
	e.Apps["udp-a"] = n.Start(e.T, "app-udp-a", e.DemoApp, "--listen", tcp, "--name", "udp-a", "--udp", udp)
	e.L4LB(2, "register", "udp:///udpapp:5300", udp)
	vip := net.JoinHostPort(e.WaitDig(1, "udpapp.marathon.l4lb.thisdcos.directory", 10*time.Second), "5300")
	start := time.Now()
	var last error
	for time.Since(start) < 10*time.Second {
		who, err := udpAsk(e, 1, vip)
		if err == nil && who == "udp-a" {
			e.Say("udp %s from node1 -> %s (%v after the name answered)", vip, who, time.Since(start).Round(time.Millisecond))
			return
		}
		last = fmt.Errorf("%q, %v", who, err)
		time.Sleep(200 * time.Millisecond)
	}
	e.T.Fatalf("udp %s from node1: no answer from udp-a within 10s: %v", vip, last)
}

// udpAsk sends one datagram from node i to addr and returns the answer.
func udpAsk(e *Env, i int, addr string) (string, error) {
	c, err := e.C.Node(i).Dial("udp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("who?\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	k, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:k])), nil
}

// caseHairpin: node2 asks a VIP whose one backend is node2 itself.
func caseHairpin(e *Env) {
	a := e.StartApp(2, "hairpin-a", 18081)
	e.L4LB(2, "register", "/hairpin:10010", a)
	vip := net.JoinHostPort(e.WaitDig(2, "hairpin.marathon.l4lb.thisdcos.directory", 10*time.Second), "10010")
	e.WaitRealServers(2, vip, 10*time.Second, "hairpin-a in node2's kernel", hasWeight(a, present))
	url := "http://" + vip + "/"
	for k := 0; k < 5; k++ {
		if who, err := e.Get(2, url); err != nil || who != "hairpin-a" {
			e.T.Fatalf("node2 -> %s -> node2: %q, %v; want hairpin-a", url, who, err)
		}
	}
	e.Say("node2 -> %s -> its own backend hairpin-a: 5 of 5", url)
}

// caseDrift: the VIP's state is removed from node1's kernel by hand; the
// agent's resync puts it back within a few periods and traffic flows again.
func caseDrift(e *Env) {
	a := e.StartApp(2, "drift-a", 18082)
	e.L4LB(2, "register", "/drift:10020", a)
	vip := net.JoinHostPort(e.WaitDig(1, "drift.marathon.l4lb.thisdcos.directory", 10*time.Second), "10020")
	e.WaitRealServers(1, vip, 10*time.Second, "drift-a in node1's kernel", hasWeight(a, present))
	// IPVS: the virtual service deleted. nftables: every rule of the table
	// flushed (maps and sets are not) and the service's slots map emptied.
	var undo []string
	if e.plane() == NFTables {
		e.C.Node(1).MustRun(e.T, "nft", "flush", "table", "inet", "l4lb")
		undo = []string{"nft", "flush", "map", "inet", "l4lb", slotsMap(netip.MustParseAddrPort(vip))}
	} else {
		undo = []string{"ipvsadm", "-D", "-t", vip}
	}
	e.C.Node(1).MustRun(e.T, undo...)
	if rs := e.RealServers(1, vip); len(rs) != 0 {
		e.T.Fatalf("node1: %s did not remove %s: %v", strings.Join(undo, " "), vip, rs)
	}
	took := e.WaitRealServers(1, vip, 5*CasesResync+5*time.Second, "drift repaired in node1's kernel", hasWeight(a, present))
	url := "http://" + vip + "/"
	if who, err := e.Get(1, url); err != nil || who != "drift-a" {
		e.T.Fatalf("node1 -> %s after the repair: %q, %v; want drift-a", url, who, err)
	}
	e.Say("`%s` on node1: repaired in %v (resync period %v); %s answers again", strings.Join(undo, " "), took.Round(time.Millisecond), CasesResync, url)
}

// caseIPv6: a named VIP whose backend is an IPv6 address gets an address of
// the IPv6 range, DNS answers it (AAAA), and node1 reaches the backend on
// node2 through it.
func caseIPv6(e *Env) {
	n := e.C.Node(2)
	addr := net.JoinHostPort(n.Addr6.String(), "18083")
	e.Apps["v6-a"] = n.Start(e.T, "app-v6-a", e.DemoApp, "--listen", addr, "--name", "v6-a")
	e.L4LB(2, "register", "/app6:10030", addr)
	const name = "app6.marathon.l4lb.thisdcos.directory"
	var vip6 string
	for start := time.Now(); vip6 == "" && time.Since(start) < 10*time.Second; time.Sleep(100 * time.Millisecond) {
		if a := e.Dig(1, name, "AAAA"); len(a) > 0 {
			vip6 = a[0]
		}
	}
	if vip6 == "" {
		e.T.Fatalf("node1: dig AAAA %s: no answer within 10s", name)
	}
	url := "http://" + net.JoinHostPort(vip6, "10030") + "/"
	var who string
	var err error
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(200 * time.Millisecond) {
		if who, err = e.Get(1, url); err == nil && who == "v6-a" {
			e.Say("node1 -> %s (AAAA of %s) -> v6-a on node2", url, name)
			return
		}
	}
	e.T.Fatalf("node1 -> %s: %q, %v; want v6-a", url, who, err)
}

// The IP VIPs of caseIPVIP: given by address, not by name.
const (
	ipVIP4 = "11.22.33.44:80"
	ipVIP6 = "[fd01:c::2a:2a]:80"
)

// caseIPVIP: an IP VIP with a backend on each node is served by every
// node's kernel at the address it was registered with, and requests from
// every node reach both backends; once one backend is deregistered, new
// requests from every node reach only the other; once both are, the VIP is
// gone from every node's kernel and table. An IPv6 IP VIP with one backend
// is reached from both nodes and goes at the same time.
func caseIPVIP(e *Env) {
	nodes := []int{1, 2}
	a := e.StartApp(1, "ipvip-a", 18084)
	b := e.StartApp(2, "ipvip-b", 18084)
	n := e.C.Node(2)
	c := net.JoinHostPort(n.Addr6.String(), "18085")
	e.Apps["ipvip6-c"] = n.Start(e.T, "app-ipvip6-c", e.DemoApp, "--listen", c, "--name", "ipvip6-c")
	e.L4LB(1, "register", ipVIP4, a)
	e.L4LB(2, "register", ipVIP4, b)
	e.L4LB(2, "register", ipVIP6, c)
	both := func(rs map[string]int) bool { return hasWeight(a, present)(rs) && hasWeight(b, present)(rs) }
	url, url6 := "http://"+ipVIP4+"/", "http://"+ipVIP6+"/"
	for _, i := range nodes {
		e.WaitRealServers(i, ipVIP4, 10*time.Second, "both IP VIP backends in the kernel", both)
		e.WaitRealServers(i, ipVIP6, 10*time.Second, "the IPv6 IP VIP's backend in the kernel", hasWeight(c, present))
	}
	for _, i := range nodes {
		seen := e.Spread(i, url, 8)
		if seen["ipvip-a"] == 0 || seen["ipvip-b"] == 0 || seen["ipvip-a"]+seen["ipvip-b"] != 8 {
			e.T.Fatalf("node%d -> %s: %s; want 8 answers from both ipvip-a and ipvip-b", i, url, FormatSpread(seen))
		}
		if who, err := e.Get(i, url6); err != nil || who != "ipvip6-c" {
			e.T.Fatalf("node%d -> %s: %q, %v; want ipvip6-c", i, url6, who, err)
		}
		e.requireVIPHeld(i, ipVIP4)
		e.requireVIPHeld(i, ipVIP6)
		e.Say("node%d -> %s: %s; -> %s: ipvip6-c", i, url, FormatSpread(seen), url6)
	}

	e.L4LB(2, "deregister", ipVIP4, b)
	for _, i := range nodes {
		e.WaitRealServers(i, ipVIP4, 10*time.Second, "ipvip-b out, ipvip-a in", func(rs map[string]int) bool {
			return hasWeight(b, gone)(rs) && hasWeight(a, present)(rs)
		})
	}
	for _, i := range nodes {
		if seen := e.Spread(i, url, 6); seen["ipvip-a"] != 6 {
			e.T.Fatalf("node%d -> %s after ipvip-b was deregistered: %s; want only ipvip-a", i, url, FormatSpread(seen))
		}
	}
	e.Say("ipvip-b deregistered (its app still runs): 6 of 6 requests from each node reach ipvip-a")

	e.L4LB(1, "deregister", ipVIP4, a)
	e.L4LB(2, "deregister", ipVIP6, c)
	took := e.waitVIPsGone(nodes, 20*time.Second, ipVIP4, ipVIP6)
	e.Say("all deregistered: %s and %s gone from every node's kernel and table in %v", ipVIP4, ipVIP6, took.Round(time.Millisecond))
}

// waitVIPsGone waits until no node of nodes holds any of the IP VIPs svcs
// anywhere vipHeldBy looks, and returns how long that took.
func (e *Env) waitVIPsGone(nodes []int, within time.Duration, svcs ...string) time.Duration {
	e.T.Helper()
	start := time.Now()
	for _, i := range nodes {
		for _, svc := range svcs {
			ap := netip.MustParseAddrPort(svc)
			var where []string
			for time.Since(start) < within {
				if where = e.vipHeldBy(i, ap); len(where) == 0 {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if len(where) != 0 {
				e.T.Fatalf("node%d still holds %s %v after it was deregistered, in:\n%s", i, svc, within, strings.Join(where, "\n"))
			}
		}
	}
	return time.Since(start)
}

// requireVIPHeld fails the test unless node i holds the IP VIP svc
// everywhere vipHeldBy looks: what shows that waitVIPGone looks at the
// right places.
func (e *Env) requireVIPHeld(i int, svc string) {
	e.T.Helper()
	want := 2
	if e.plane() == IPVS {
		want = 3
	}
	if where := e.vipHeldBy(i, netip.MustParseAddrPort(svc)); len(where) != want {
		e.T.Fatalf("node%d holds %s in %d of the %d places looked at:\n%s", i, svc, len(where), want, strings.Join(where, "\n"))
	}
}

// vipHeldBy lists where node i holds the IP VIP ap: its `l4lb vips`, what
// its kernel serves (the plane's ListCommand mentions the address) and,
// with IPVS, its dummy interface.
func (e *Env) vipHeldBy(i int, ap netip.AddrPort) []string {
	e.T.Helper()
	var where []string
	for _, v := range e.VIPs(i).VIPs {
		if a, err := netip.ParseAddr(v.Address); err == nil && a == ap.Addr() && v.Port == ap.Port() {
			where = append(where, fmt.Sprintf("l4lb vips: %s with %d backends", v.Label, len(v.Backends)))
			break
		}
	}
	addr := ap.Addr().String()
	if l := e.plane().Listing(e.T, e.C.Node(i)); strings.Contains(l, addr) {
		where = append(where, fmt.Sprintf("%s:\n%s", strings.Join(e.plane().ListCommand(), " "), l))
	}
	if e.plane() == IPVS {
		out := e.C.Node(i).MustRun(e.T, "ip", "-o", "addr", "show", "dev", "minuteman")
		if strings.Contains(out, " "+addr+"/") {
			where = append(where, "ip -o addr show dev minuteman:\n"+out)
		}
	}
	return where
}
