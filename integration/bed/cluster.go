package bed

import (
	"fmt"
	"net/netip"
	"path/filepath"
)

// NodeNet is the private network of a test cluster's nodes: node i (from 1)
// has the address 10.200.0.i/24 on a bridge that joins every node. The range
// exists only inside the guest.
var NodeNet = netip.MustParsePrefix("10.200.0.0/24")

// NodeNet6 is the same network's IPv6 prefix: node i also has fd00:200::i/64.
var NodeNet6 = netip.MustParsePrefix("fd00:200::/64")

// Node is one node of a test cluster: a network namespace with an address on
// the cluster's bridge, and a state directory of its own.
type Node struct {
	*Netns
	Index    int // from 1
	Name     string
	Addr     netip.Addr // in NodeNet
	Addr6    netip.Addr // in NodeNet6
	StateDir string
}

// Cluster is N nodes in network namespaces on one bridge, which lives in a
// namespace of its own (the "switch").
type Cluster struct {
	Switch *Netns
	Nodes  []*Node
}

// NewCluster builds a cluster of n nodes (at most 250). Node i is named
// "node<i>" and has the addresses 10.200.0.<i> and fd00:200::<i> (without
// duplicate address detection, so that it is usable at once).
func NewCluster(t T, n int) *Cluster {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("NewCluster(%d): between 1 and 250 nodes", n)
	}
	c := &Cluster{Switch: NewNetns(t, "switch")}
	c.Switch.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	c.Switch.MustRun(t, "ip", "link", "set", "br0", "up")
	base := t.TempDir()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node%d", i)
		ns := NewNetns(t, name)
		addr := netip.AddrFrom4([4]byte{10, 200, 0, byte(i)})
		nodeEnd, swEnd := Link(t, ns, fmt.Sprintf("%s/%d", addr, NodeNet.Bits()), c.Switch, "")
		addr6 := NodeNet6.Addr().As16()
		addr6[15] = byte(i)
		a6 := netip.AddrFrom16(addr6)
		ns.MustRun(t, "ip", "-6", "addr", "add", fmt.Sprintf("%s/%d", a6, NodeNet6.Bits()), "dev", nodeEnd, "nodad")
		c.Switch.MustRun(t, "ip", "link", "set", swEnd, "master", "br0")
		node := &Node{Netns: ns, Index: i, Name: name, Addr: addr, Addr6: a6, StateDir: filepath.Join(base, name)}
		c.Nodes = append(c.Nodes, node)
	}
	return c
}

// Node returns node i (from 1).
func (c *Cluster) Node(i int) *Node { return c.Nodes[i-1] }
