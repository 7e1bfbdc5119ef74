package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

func withKeys(keys ...[]byte) func(*Config) {
	return func(c *Config) { c.Keys = keys }
}

func nodeOf(n *memNode) *memberlist.Node {
	return n.c.ml.LocalNode()
}

// holdsOnly reports whether c's State() has exactly the named nodes.
func holdsOnly(c *Cluster, names ...string) bool {
	st := c.State()
	if len(st) != len(names) {
		return false
	}
	for i, n := range st {
		if n.Node != names[i] {
			return false
		}
	}
	return true
}

func TestRoguePeerWithoutKeyCannotJoinOrInject(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, withKeys(key(1)))
	for i, n := range nodes {
		n.c.Publish([]vip.Registration{reg("/app", 80, fmt.Sprintf("10.0.0.%d:80", i+1))})
	}
	for _, n := range nodes {
		waitFor(t, 20*time.Second, "cluster to form", func() bool { return holdsOnly(n.c, "node-00", "node-01", "node-02") })
	}
	cases := []struct {
		name string
		keys [][]byte
	}{
		{"no key", nil},
		{"wrong key", [][]byte{key(9)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rogue := startMem(t, net, "rogue-"+tc.name, func(c *Config) {
				c.Keys = tc.keys
				c.Timing.JoinRetryMin = 100 * time.Millisecond
				c.Timing.JoinRetryMax = 200 * time.Millisecond
			}, nodes[0].tr.Addr())
			rogue.c.Publish([]vip.Registration{reg("/app", 80, "10.6.6.6:80")})
			errorsBefore := nodes[1].c.Stats().MemberlistErrors
			// Inject: a record sent straight to a member, gossip-style and over TCP.
			evil := encodeDelta(fullDelta(&record{Node: "node-02", Version: Version{^uint64(0), 1},
				Registrations: []vip.Registration{reg("/app", 80, "10.6.6.6:80")}}, 0))
			_ = rogue.c.ml.SendBestEffort(nodeOf(nodes[1]), evil)
			_ = rogue.c.ml.SendReliable(nodeOf(nodes[1]), evil)
			time.Sleep(1500 * time.Millisecond) // many join attempts
			for _, n := range nodes {
				if !holdsOnly(n.c, "node-00", "node-01", "node-02") {
					t.Fatalf("%s state changed: %+v", n.name, n.c.State())
				}
				if !holdsExactly(n.c, "node-02", []vip.Registration{reg("/app", 80, "10.0.0.3:80")}) {
					t.Fatalf("%s: injected record took effect: %+v", n.name, n.c.State())
				}
				if s := memberState(n.c, rogue.name); s != "" {
					t.Fatalf("%s knows the rogue as %q", n.name, s)
				}
			}
			if !holdsOnly(rogue.c, rogue.name) {
				t.Fatalf("rogue learnt the cluster: %+v", rogue.c.State())
			}
			if got := nodes[1].c.Stats().MemberlistErrors; got <= errorsBefore {
				t.Fatalf("undecryptable traffic not counted (%d -> %d)", errorsBefore, got)
			}
		})
	}
}

func TestLabelsKeepClustersApart(t *testing.T) {
	net := memnet.New()
	label := func(l string) func(*Config) {
		return func(c *Config) {
			c.Label = l
			c.Timing.JoinRetryMin = 100 * time.Millisecond
		}
	}
	x0 := startMem(t, net, "x0", label("x"))
	x1 := startMem(t, net, "x1", label("x"), x0.tr.Addr())
	// y0 is pointed at x0 by mistake; y1 joins y0.
	y0 := startMem(t, net, "y0", label("y"), x0.tr.Addr())
	y1 := startMem(t, net, "y1", label("y"), y0.tr.Addr())
	for _, n := range []*memNode{x0, x1, y0, y1} {
		n.c.Publish([]vip.Registration{reg("/app", 80, "10.0.0.1:80")})
	}
	waitFor(t, 10*time.Second, "x cluster", func() bool { return holdsOnly(x0.c, "x0", "x1") && holdsOnly(x1.c, "x0", "x1") })
	waitFor(t, 10*time.Second, "y cluster", func() bool { return holdsOnly(y1.c, "y0", "y1") && holdsOnly(y0.c, "y0", "y1") })
	time.Sleep(time.Second)
	if !holdsOnly(x0.c, "x0", "x1") || !holdsOnly(y0.c, "y0", "y1") {
		t.Fatalf("clusters mixed: x0 %+v, y0 %+v", x0.c.State(), y0.c.State())
	}
}

func TestKeyRotation(t *testing.T) {
	net := memnet.New()
	k1, k2 := key(1), key(2)
	nodes := startMemCluster(t, net, 3, withKeys(k1))
	for _, n := range nodes {
		waitFor(t, 20*time.Second, "cluster to form", func() bool { return len(n.c.State()) == 3 })
	}
	steps := []struct {
		name string
		do   func(c *Cluster) error
	}{
		{"install new key", func(c *Cluster) error { return c.InstallKey(k2) }},
		{"use new key", func(c *Cluster) error { return c.UseKey(k2) }},
		{"remove old key", func(c *Cluster) error { return c.RemoveKey(k1) }},
	}
	for i, st := range steps {
		for _, n := range nodes {
			if err := st.do(n.c); err != nil {
				t.Fatalf("%s on %s: %v", st.name, n.name, err)
			}
		}
		// The cluster keeps working after each round.
		regs := []vip.Registration{reg("/app", 80, fmt.Sprintf("10.0.0.%d:80", i+1))}
		nodes[i].c.Publish(regs)
		for _, n := range nodes {
			waitFor(t, 20*time.Second, "publication after "+st.name, func() bool {
				return holdsExactly(n.c, nodes[i].name, regs) && len(n.c.State()) == 3
			})
		}
	}
	if got := nodes[0].c.Keys(); len(got) != 1 || string(got[0]) != string(k2) {
		t.Fatalf("keys after rotation = %x", got)
	}
	if err := nodes[0].c.RemoveKey(k2); err == nil {
		t.Fatal("removing the primary key succeeded")
	}
	// A node with the new key joins; one with only the old key cannot.
	newcomer := startMem(t, net, "newcomer", withKeys(k2), nodes[0].tr.Addr())
	stale := startMem(t, net, "stale", withKeys(k1), nodes[0].tr.Addr())
	waitFor(t, 20*time.Second, "newcomer to join", func() bool { return len(newcomer.c.State()) == 4 })
	time.Sleep(time.Second)
	if len(stale.c.State()) != 1 {
		t.Fatalf("node with the removed key joined: %+v", stale.c.State())
	}
	if s := memberState(nodes[0].c, "stale"); s != "" {
		t.Fatalf("cluster knows the node with the removed key as %q", s)
	}
	// An unencrypted cluster has no keyring to rotate.
	plain := startMem(t, net, "plain", nil)
	if err := plain.c.InstallKey(k2); err != ErrNotEncrypted {
		t.Fatalf("InstallKey without encryption: %v", err)
	}
}

// Malformed and oversized messages from a peer are dropped and counted; they
// change nothing.
func TestBadMessagesAreDropped(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 2, nil)
	a, b := nodes[0], nodes[1]
	a.c.Publish([]vip.Registration{reg("/app", 80, "10.0.0.1:80")})
	waitFor(t, 20*time.Second, "b to hold a", func() bool { _, ok := nodeBackends(b.c, a.name); return ok })
	before := b.c.State()
	oversized := make([]byte, MaxStreamBytes+10)
	oversized[0], oversized[1] = formatVersion, byte(kindPages)
	cases := []struct {
		name string
		send func() error
	}{
		{"garbage over UDP", func() error { return a.c.ml.SendBestEffort(nodeOf(b), []byte{0xde, 0xad, 0xbe, 0xef}) }},
		{"truncated record over UDP", func() error {
			m := encodeDelta(fullDelta(&record{Node: a.name, Version: Version{^uint64(0), 1}, Registrations: []vip.Registration{reg("/app", 80, "10.6.6.6:80")}}, 0))
			return a.c.ml.SendBestEffort(nodeOf(b), m[:len(m)-4])
		}},
		{"oversized over TCP", func() error { return a.c.ml.SendReliable(nodeOf(b), oversized) }},
		{"digest outside push/pull", func() error { return a.c.ml.SendReliable(nodeOf(b), encodeDigest(nil)) }},
		{"pull for another node", func() error {
			return a.c.ml.SendReliable(nodeOf(b), encodePull(a.name, "someone-else", Version{}, 0))
		}},
		{"delta over the gossip cap over TCP", func() error {
			m := encodeDelta(&deltaMsg{Node: a.name, Gen: 1, Seq: 2, Set: manyRegs(30000)})
			if len(m) <= MaxMessageBytes {
				return fmt.Errorf("test setup: delta of %d bytes", len(m))
			}
			return a.c.ml.SendReliable(nodeOf(b), m)
		}},
		{"malformed push/pull", func() error {
			(&delegate{c: b.c}).MergeRemoteState([]byte{formatVersion, byte(kindDigest), 9}, false)
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dropped := b.c.Stats().DroppedMessages
			if err := tc.send(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "drop to be counted", func() bool { return b.c.Stats().DroppedMessages == dropped+1 })
		})
	}
	if got := b.c.State(); !equalState(got, before) {
		t.Fatalf("state changed after bad messages:\n%+v\n%+v", got, before)
	}
}

func equalState(a, b vip.ClusterState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Node != b[i].Node || !equalRegistrations(a[i].Backends, b[i].Backends) {
			return false
		}
	}
	return true
}
