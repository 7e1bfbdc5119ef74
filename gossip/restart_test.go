package gossip

import (
	"context"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// changeReader applies a node's TakeChanges to a map, as the agent does, and
// remembers every key of watched it was ever told was removed.
type changeReader struct {
	t       testing.TB
	c       *Cluster
	watched string
	held    map[string]map[vip.RegKey]vip.Registration
	removed []vip.RegKey
}

func newChangeReader(t testing.TB, c *Cluster, watched string) *changeReader {
	k := &changeReader{t: t, c: c, watched: watched, held: map[string]map[vip.RegKey]vip.Registration{}}
	k.take()
	return k
}

// take applies the next TakeChanges.
func (k *changeReader) take() {
	for _, nd := range k.c.TakeChanges() {
		m := k.held[nd.Node]
		if m == nil {
			m = map[vip.RegKey]vip.Registration{}
			k.held[nd.Node] = m
		}
		for _, key := range nd.Removed {
			delete(m, key)
		}
		for _, r := range nd.Set {
			m[r.Key()] = r
		}
		if nd.Node == k.watched {
			k.removed = append(k.removed, nd.Removed...)
		}
	}
}

// holds reports whether the changeReader holds exactly regs for node.
func (k *changeReader) holds(node string, regs []vip.Registration) bool {
	m := k.held[node]
	if len(m) != len(regs) {
		return false
	}
	for _, r := range normalizeRegistrations(regs) {
		if got, ok := m[r.Key()]; !ok || !sameRegistration(got, r) {
			return false
		}
	}
	return true
}

// memberOf returns what c knows of node.
func memberOf(c *Cluster, node string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Name == node {
			return m, true
		}
	}
	return Member{}, false
}

// startRestarted starts a new process for name on tr (the address of its
// previous life), publishing regs before it starts, as the agent publishes
// what it already knows.
func startRestarted(t testing.TB, tr *memnet.Transport, name string, regs []vip.Registration, tweak func(*Config), seeds ...string) *memNode {
	t.Helper()
	logger, hook := testLogger()
	cfg := Config{NodeName: name, Join: seeds, Logger: logger, Transport: tr}
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("new %s: %v", name, err)
	}
	c.Publish(regs)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	return &memNode{name: name, tr: tr, c: c, hook: hook}
}

func restartRegs() []vip.Registration {
	return []vip.Registration{reg("/app", 80, "10.0.0.3:80"), reg("/app", 80, "10.0.0.4:80"), reg("/db", 5432, "10.0.0.3:5432")}
}

// A node that restarts and comes back within the grace never leaves its
// peers' State() or TakeChanges: while it is gone its member state is
// restarting and its backends stay; when it is back with a new generation
// and the same registrations, the switch to its new record reports
// nothing removed, and the peers end with the new generation's record.
func TestRestartKeepsBackendsAndSwitchesInOneStep(t *testing.T) {
	net := memnet.New()
	tweak := func(c *Config) { c.RestartGrace = 20 * time.Second }
	nodes := startMemCluster(t, net, 3, tweak)
	a, b, c := nodes[0], nodes[1], nodes[2]
	peers := []*changeReader{newChangeReader(t, a.c, c.name), newChangeReader(t, b.c, c.name)}
	regs := restartRegs()
	c.c.Publish(regs)
	check := func(when string) {
		t.Helper()
		for _, k := range peers {
			k.take()
			if len(k.removed) > 0 {
				m, _ := memberOf(k.c, c.name)
				t.Fatalf("%s: %s's TakeChanges removed %v of the restarting node (member %+v, state %v)", when, k.c.cfg.NodeName, k.removed, m, k.c.State())
			}
		}
	}
	waitFor(t, 10*time.Second, "C's backends on A and B", func() bool {
		check("before the restart")
		return peers[0].holds(c.name, regs) && peers[1].holds(c.name, regs)
	})
	oldGen := c.c.Generation()

	if err := c.c.Restart(2 * time.Second); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := c.c.PublishDelta(regs, nil); err != ErrLeft {
		t.Errorf("PublishDelta after Restart: %v, want ErrLeft", err)
	}
	for _, k := range peers {
		waitFor(t, 15*time.Second, k.c.cfg.NodeName+" to see C gone and restarting", func() bool {
			check("while C is gone")
			if !holdsExactly(k.c, c.name, regs) {
				t.Fatalf("%s's State() dropped the restarting node: %v", k.c.cfg.NodeName, k.c.State())
			}
			return memberState(k.c, c.name) == MemberRestarting
		})
	}
	// Gone for a while (longer than a failure detection): still there.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		check("while C is gone")
		for _, k := range peers {
			if !holdsExactly(k.c, c.name, regs) || memberState(k.c, c.name) != MemberRestarting {
				t.Fatalf("%s: C in State() %v, state %s", k.c.cfg.NodeName, holdsExactly(k.c, c.name, regs), memberState(k.c, c.name))
			}
		}
	}

	tr, err := net.NewTransportAt(c.tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c2 := startRestarted(t, tr, c.name, regs, tweak, a.tr.Addr())
	if c2.c.Generation() <= oldGen {
		t.Fatalf("test setup: new generation %d not above %d", c2.c.Generation(), oldGen)
	}
	newGen := c2.c.Generation()
	for _, k := range peers {
		waitFor(t, 15*time.Second, k.c.cfg.NodeName+" to hold C's new generation", func() bool {
			check("while C comes back")
			if !holdsExactly(k.c, c.name, regs) {
				t.Fatalf("%s's State() dropped C while it came back: %v", k.c.cfg.NodeName, k.c.State())
			}
			m, ok := memberOf(k.c, c.name)
			return ok && m.State == MemberAlive && m.Generation == newGen && m.Version.Generation == newGen
		})
	}
	time.Sleep(500 * time.Millisecond)
	check("after C came back")
	for _, k := range peers {
		if !k.holds(c.name, regs) {
			t.Errorf("%s's changeReader holds %v for C, want %v", k.c.cfg.NodeName, k.held[c.name], regs)
		}
	}
	// The new process was not confused by its previous life's record.
	if g := c2.c.Generation(); g != newGen {
		t.Errorf("new C moved its generation from %d to %d", newGen, g)
	}
	if n := c2.c.Stats().GenerationBumps; n != 0 {
		t.Errorf("new C fenced %d times", n)
	}
	if !holdsExactly(c2.c, c.name, regs) {
		t.Errorf("new C's own State() %v", c2.c.State())
	}
}

// A node that announced a restart and never comes back is dropped as on a
// death once the grace has passed since its peers saw it gone, not before.
func TestRestartNotBackIsRemovedAfterGrace(t *testing.T) {
	net := memnet.New()
	const grace = 3 * time.Second
	nodes := startMemCluster(t, net, 3, func(c *Config) { c.RestartGrace = grace })
	a, b, c := nodes[0], nodes[1], nodes[2]
	peers := []*changeReader{newChangeReader(t, a.c, c.name), newChangeReader(t, b.c, c.name)}
	regs := restartRegs()
	c.c.Publish(regs)
	waitFor(t, 10*time.Second, "C's backends on A and B", func() bool {
		peers[0].take()
		peers[1].take()
		return peers[0].holds(c.name, regs) && peers[1].holds(c.name, regs)
	})
	if err := c.c.Restart(2 * time.Second); err != nil {
		t.Fatalf("restart: %v", err)
	}
	since := make([]time.Time, len(peers))
	waitFor(t, 15*time.Second, "A and B to see C restarting", func() bool {
		all := true
		for i, k := range peers {
			m, _ := memberOf(k.c, c.name)
			if m.State == MemberRestarting && since[i].IsZero() {
				since[i] = m.Since
			}
			all = all && !since[i].IsZero()
		}
		return all
	})
	// Until shortly before the grace is over on each peer: still there.
	for bounded := 0; bounded < 1000; bounded++ {
		waiting := false
		for i, k := range peers {
			if time.Now().After(since[i].Add(grace - 300*time.Millisecond)) {
				continue
			}
			waiting = true
			k.take()
			if len(k.removed) > 0 || !holdsExactly(k.c, c.name, regs) {
				t.Fatalf("%s dropped C %v after it was seen gone, before the grace %v (removed %v)",
					k.c.cfg.NodeName, time.Since(since[i]), grace, k.removed)
			}
		}
		if !waiting {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, k := range peers {
		waitFor(t, 2*time.Second+grace-time.Since(since[i]), k.c.cfg.NodeName+" to drop C after the grace", func() bool {
			k.take()
			_, shown := nodeBackends(k.c, c.name)
			return !shown && len(k.held[c.name]) == 0
		})
		if len(k.removed) != len(regs) {
			t.Errorf("%s removed %v, want C's %d keys", k.c.cfg.NodeName, k.removed, len(regs))
		}
		if s := memberState(k.c, c.name); s != MemberDead {
			t.Errorf("%s sees C %s after the grace, want dead", k.c.cfg.NodeName, s)
		}
		t.Logf("%s dropped C %v after it saw it gone (grace %v)", k.c.cfg.NodeName, time.Since(since[i]), grace)
	}
}

// A crash (Shutdown without Restart) and a Leave are handled as before:
// the node's backends go at failure detection, or at once on a leave.
func TestCrashAndLeaveAreNotRestarts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stop   func(*Cluster) error
		within time.Duration
		state  MemberState
	}{
		{"crash", func(c *Cluster) error { return c.Shutdown() }, 8 * time.Second, MemberDead},
		{"leave", func(c *Cluster) error { return c.Leave(2 * time.Second) }, time.Second, MemberLeft},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := memnet.New()
			nodes := startMemCluster(t, net, 3, func(c *Config) { c.RestartGrace = time.Minute })
			a, b, c := nodes[0], nodes[1], nodes[2]
			peers := []*changeReader{newChangeReader(t, a.c, c.name), newChangeReader(t, b.c, c.name)}
			regs := restartRegs()
			c.c.Publish(regs)
			waitFor(t, 10*time.Second, "C's backends on A and B", func() bool {
				peers[0].take()
				peers[1].take()
				return peers[0].holds(c.name, regs) && peers[1].holds(c.name, regs)
			})
			start := time.Now()
			if err := tc.stop(c.c); err != nil {
				t.Fatal(err)
			}
			for _, k := range peers {
				waitFor(t, tc.within-time.Since(start), k.c.cfg.NodeName+" to drop C", func() bool {
					if s := memberState(k.c, c.name); s == MemberRestarting {
						t.Fatalf("%s sees C restarting after a %s", k.c.cfg.NodeName, tc.name)
					}
					k.take()
					_, shown := nodeBackends(k.c, c.name)
					return !shown && len(k.held[c.name]) == 0
				})
				waitFor(t, 2*time.Second, k.c.cfg.NodeName+" to see C "+string(tc.state), func() bool {
					return memberState(k.c, c.name) == tc.state
				})
				if len(k.removed) != len(regs) {
					t.Errorf("%s removed %v, want C's %d keys", k.c.cfg.NodeName, k.removed, len(regs))
				}
			}
			t.Logf("%s: C gone from both peers in %v", tc.name, time.Since(start))
		})
	}
}

// A rolling restart: B restarts and stays away; meanwhile A restarts and
// comes back. The new A learns B's record from its peers (memberlist tells
// a joiner of no dead member) and shows B's backends as restarting; C
// never drops either; when B comes back, everyone holds its new record.
func TestRollingRestartKeepsEveryonesBackends(t *testing.T) {
	net := memnet.New()
	tweak := func(c *Config) { c.RestartGrace = 20 * time.Second }
	nodes := startMemCluster(t, net, 3, tweak)
	a, b, c := nodes[0], nodes[1], nodes[2]
	regsOf := map[string][]vip.Registration{
		a.name: {reg("/a", 80, "10.0.1.1:80")},
		b.name: {reg("/b", 80, "10.0.2.1:80"), reg("/b", 80, "10.0.2.2:80")},
	}
	watchC := []*changeReader{newChangeReader(t, c.c, a.name), newChangeReader(t, c.c, b.name)}
	a.c.Publish(regsOf[a.name])
	b.c.Publish(regsOf[b.name])
	noRemoval := func(when string) {
		t.Helper()
		for _, k := range watchC {
			k.take()
			if len(k.removed) > 0 {
				t.Fatalf("%s: C's TakeChanges removed %v of %s", when, k.removed, k.watched)
			}
		}
	}
	waitFor(t, 10*time.Second, "A's and B's backends on C", func() bool {
		noRemoval("before the restarts")
		return watchC[0].holds(a.name, regsOf[a.name]) && watchC[0].holds(b.name, regsOf[b.name])
	})
	if err := b.c.Restart(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "A and C to see B restarting", func() bool {
		noRemoval("while B is gone")
		return memberState(a.c, b.name) == MemberRestarting && memberState(c.c, b.name) == MemberRestarting
	})
	if err := a.c.Restart(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	trA, err := net.NewTransportAt(a.tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	a2 := startRestarted(t, trA, a.name, regsOf[a.name], tweak, c.tr.Addr())
	waitFor(t, 15*time.Second, "the new A to hold B's backends, B restarting", func() bool {
		noRemoval("while A comes back")
		return holdsExactly(a2.c, b.name, regsOf[b.name]) && memberState(a2.c, b.name) == MemberRestarting
	})
	trB, err := net.NewTransportAt(b.tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	b2 := startRestarted(t, trB, b.name, regsOf[b.name], tweak, c.tr.Addr())
	for _, n := range []*memNode{a2, c} {
		waitFor(t, 15*time.Second, n.name+" to hold the new A and B", func() bool {
			noRemoval("while B comes back")
			ma, _ := memberOf(n.c, a.name)
			mb, _ := memberOf(n.c, b.name)
			return (n == a2 || ma.Version.Generation == a2.c.Generation()) && mb.Version.Generation == b2.c.Generation() &&
				mb.State == MemberAlive && holdsExactly(n.c, a.name, regsOf[a.name]) && holdsExactly(n.c, b.name, regsOf[b.name])
		})
	}
	noRemoval("at the end")
	if !watchC[0].holds(a.name, regsOf[a.name]) || !watchC[0].holds(b.name, regsOf[b.name]) {
		t.Errorf("C's consumer holds %v", watchC[0].held)
	}
}
