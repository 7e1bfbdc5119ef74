package integration

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
)

// TestClusterNodesReachEachOther proves the cluster helper: every node
// reaches every other node over the bridge at its documented addresses,
// IPv4 and IPv6.
func TestClusterNodesReachEachOther(t *testing.T) {
	c := bed.NewCluster(t, 3)
	for _, n := range c.Nodes {
		if !bed.NodeNet.Contains(n.Addr) || !bed.NodeNet6.Contains(n.Addr6) {
			t.Fatalf("%s has addresses %s and %s, outside %s and %s", n.Name, n.Addr, n.Addr6, bed.NodeNet, bed.NodeNet6)
		}
		for _, a := range []netip.Addr{n.Addr, n.Addr6} {
			ln, err := n.Listen("tcp", netip.AddrPortFrom(a, 9000).String())
			if err != nil {
				t.Fatalf("listen on %s in %s: %v", a, n.Name, err)
			}
			t.Cleanup(func() { ln.Close() })
			go serveName(ln, n.Name)
		}
	}
	for _, from := range c.Nodes {
		for _, to := range c.Nodes {
			for _, a := range []netip.Addr{to.Addr, to.Addr6} {
				conn, err := from.Dial("tcp", netip.AddrPortFrom(a, 9000).String(), 5*time.Second)
				if err != nil {
					t.Fatalf("%s -> %s (%s): %v", from.Name, to.Name, a, err)
				}
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(conn).ReadString('\n')
				conn.Close()
				if err != nil || strings.TrimSpace(line) != to.Name {
					t.Errorf("%s -> %s (%s) answered %q (%v), want %q", from.Name, to.Name, a, line, err, to.Name)
				}
			}
		}
	}
	// A command runs inside a node and sees only that node's address.
	out := c.Node(2).MustRun(t, "ip", "-4", "-o", "addr", "show")
	if !strings.Contains(out, "10.200.0.2/24") || strings.Contains(out, "10.200.0.1/24") {
		t.Errorf("ip addr in node2 shows:\n%s", out)
	}
}
