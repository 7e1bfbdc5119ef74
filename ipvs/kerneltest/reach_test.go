package kerneltest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
)

// TestReachableFromEveryNode runs a reconciler on each of three nodes of a
// bridged cluster, with one VIP whose backends run on node2 and node3:
//
//	node1 (10.200.0.1, no backend) --+
//	node2 (10.200.0.2, backend)    --+-- bridge
//	node3 (10.200.0.3, backend)    --+
//
// Every node holds 11.0.0.1 on its dummy interface, so a local client's
// connection leaves with the VIP as its source; the owned MASQUERADE rule
// rewrites it to the node's address so that replies from another node come
// back.
func TestReachableFromEveryNode(t *testing.T) {
	c := bed.NewCluster(t, 3)
	const vipAddr = "11.0.0.1:8080"
	v := vipOf("tcp "+vipAddr, "10.200.0.2:8080", "10.200.0.3:8080")
	v.Scheduler = "rr"
	tab := tableOf(v)
	lbs := map[int]*lb{}
	for i := 1; i <= 3; i++ {
		n := c.Node(i)
		lbs[i] = newLB(t, n.Netns, func(cfg *ipvs.Config) { cfg.Masquerade = ipvs.Masquerade{} })
		lbs[i].apply(tab, false)
	}
	serveNamed(t, c.Node(2).Netns, ":8080", "node2")
	serveNamed(t, c.Node(3).Netns, ":8080", "node3")

	checkSpread(t, c, vipAddr)
	t.Run("rules are owned and idempotent", func(t *testing.T) {
		n := c.Node(1)
		before := n.MustRun(t, "iptables-legacy", "-t", "nat", "-S")
		if !strings.Contains(before, "-A POSTROUTING -m comment --comment \"l4lb: masquerade VIP connections\" -j L4LB-POSTROUTING") ||
			!strings.Contains(before, "--vaddr 11.0.0.0/8") {
			t.Fatalf("iptables-legacy nat table lacks the owned rules:\n%s", before)
		}
		again := newLB(t, n.Netns, func(cfg *ipvs.Config) { cfg.Masquerade = ipvs.Masquerade{} })
		if after := n.MustRun(t, "iptables-legacy", "-t", "nat", "-S"); after != before {
			t.Errorf("a second reconciler changed the rules:\n%s\nwas\n%s", after, before)
		}
		v6 := n.MustRun(t, "ip6tables-legacy", "-t", "nat", "-S")
		if !strings.Contains(v6, "--vaddr fd01:c::/64") {
			t.Errorf("ip6tables-legacy lacks the IPv6 rule:\n%s", v6)
		}
		if err := again.r.Close(true); err != nil {
			t.Fatalf("clean close: %v", err)
		}
		for _, cmd := range []string{"iptables-legacy", "ip6tables-legacy"} {
			if out := n.MustRun(t, cmd, "-t", "nat", "-S"); strings.Contains(out, "L4LB") || strings.Contains(out, "l4lb") {
				t.Errorf("%s after a clean close still has l4lb's rules:\n%s", cmd, out)
			}
		}
		if got := table(t, n.Netns); len(got) != 1 {
			t.Errorf("a clean close must leave IPVS alone; ipvsadm -Ln: %q", got)
		}
	})
	t.Run("without the rule, replies from another node are lost", func(t *testing.T) {
		// The rules of node1 are gone (clean close above): its connections
		// leave with the VIP as source, and node2 and node3 answer the VIP
		// to themselves.
		cn, err := c.Node(1).Dial("tcp", vipAddr, 2*time.Second)
		if err == nil {
			cn.Close()
			t.Fatalf("a connection from node1 to the VIP worked without masquerading; the rule would be pointless")
		}
	})
}

// TestReachableFromEveryNodeIPv6 is the same cluster and VIP layout over
// IPv6: VIP fd01:c::1 on every node, backends on node2 and node3 at their
// fd00:200:: addresses, and the owned ip6tables MASQUERADE rule bringing the
// replies back.
func TestReachableFromEveryNodeIPv6(t *testing.T) {
	c := bed.NewCluster(t, 3)
	const vipAddr = "[fd01:c::1]:8080"
	v := vipOf("tcp "+vipAddr,
		netip.AddrPortFrom(c.Node(2).Addr6, 8080).String(),
		netip.AddrPortFrom(c.Node(3).Addr6, 8080).String())
	v.Scheduler = "rr"
	tab := tableOf(v)
	var lbs []*lb
	for i := 1; i <= 3; i++ {
		l := newLB(t, c.Node(i).Netns, func(cfg *ipvs.Config) { cfg.Masquerade = ipvs.Masquerade{} })
		l.apply(tab, false)
		lbs = append(lbs, l)
	}
	serveNamed(t, c.Node(2).Netns, ":8080", "node2")
	serveNamed(t, c.Node(3).Netns, ":8080", "node3")
	if got := table(t, c.Node(1).Netns); len(got) != 1 || !strings.Contains(got[0], "[fd01:c::1]:8080") {
		t.Fatalf("node1 ipvsadm -Ln: %q, want the IPv6 VIP", got)
	}
	checkSpread(t, c, vipAddr)
	t.Run("without the rule, replies from another node are lost", func(t *testing.T) {
		if err := lbs[0].r.Close(true); err != nil {
			t.Fatalf("clean close: %v", err)
		}
		if out := c.Node(1).MustRun(t, "ip6tables-legacy", "-t", "nat", "-S"); strings.Contains(out, "l4lb") {
			t.Fatalf("ip6tables rules still there after a clean close:\n%s", out)
		}
		cn, err := c.Node(1).Dial("tcp", vipAddr, 2*time.Second)
		if err == nil {
			cn.Close()
			t.Fatalf("a connection from node1 to the IPv6 VIP worked without masquerading; the rule would be pointless")
		}
	})
}

// checkSpread connects four times to vipAddr from node1 (which runs no
// backend) and from node2 (a backend reaching its own VIP, half the time
// itself and half the time node3, whose replies must come back), and
// expects the round-robin to have spread the connections evenly over
// node2 and node3.
func checkSpread(t *testing.T, c *bed.Cluster, vipAddr string) {
	t.Helper()
	seenFrom := func(n *bed.Netns) map[string]int {
		seen := map[string]int{}
		for range 4 {
			cn := dial(t, n, vipAddr)
			if err := cn.echo("ping"); err != nil {
				t.Errorf("from %s via %s: %v", n.Name, cn.Backend, err)
			}
			cn.Close()
			seen[cn.Backend]++
		}
		return seen
	}
	t.Run("client on a node without a backend", func(t *testing.T) {
		if seen := seenFrom(c.Node(1).Netns); seen["node2"] != 2 || seen["node3"] != 2 {
			t.Errorf("answers %v, want 2 from node2 and 2 from node3", seen)
		}
	})
	t.Run("hairpin: a backend reaches its own VIP", func(t *testing.T) {
		if seen := seenFrom(c.Node(2).Netns); seen["node2"] != 2 || seen["node3"] != 2 {
			t.Errorf("answers %v, want 2 from node2 (itself) and 2 from node3", seen)
		}
	})
}
