package integration

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
)

// TestClusterNodesReachEachOther proves the cluster helper: every node
// reaches every other node over the bridge at its documented address.
func TestClusterNodesReachEachOther(t *testing.T) {
	c := bed.NewCluster(t, 3)
	for _, n := range c.Nodes {
		if !bed.NodeNet.Contains(n.Addr) {
			t.Fatalf("%s has address %s outside %s", n.Name, n.Addr, bed.NodeNet)
		}
		ln, err := n.Listen("tcp", n.Addr.String()+":9000")
		if err != nil {
			t.Fatalf("listen on %s: %v", n.Name, err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveName(ln, n.Name)
	}
	for _, from := range c.Nodes {
		for _, to := range c.Nodes {
			conn, err := from.Dial("tcp", fmt.Sprintf("%s:9000", to.Addr), 5*time.Second)
			if err != nil {
				t.Fatalf("%s -> %s: %v", from.Name, to.Name, err)
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if err != nil || strings.TrimSpace(line) != to.Name {
				t.Errorf("%s -> %s answered %q (%v), want %q", from.Name, to.Name, line, err, to.Name)
			}
		}
	}
	// A command runs inside a node and sees only that node's address.
	out := c.Node(2).MustRun(t, "ip", "-4", "-o", "addr", "show")
	if !strings.Contains(out, "10.200.0.2/24") || strings.Contains(out, "10.200.0.1/24") {
		t.Errorf("ip addr in node2 shows:\n%s", out)
	}
}
