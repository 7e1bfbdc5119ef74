package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// A node that restarts starts counting from 1 again; its new records must
// still win over everything its previous life published, and the backends
// it had before must not come back.
func TestRestartWithLowerCounter(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, nil)
	b := nodes[1]
	old := []vip.Registration{reg("/app", 80, "10.0.0.99:80")}
	for i := range 10 { // seq climbs to 11
		b.c.Publish([]vip.Registration{reg("/app", 80, fmt.Sprintf("10.0.0.%d:80", 50+i))})
	}
	b.c.Publish(old)
	oldVersion := b.c.store.selfRecord().Version
	waitFor(t, 10*time.Second, "old record everywhere", func() bool {
		return holdsExactly(nodes[0].c, b.name, old) && holdsExactly(nodes[2].c, b.name, old)
	})
	if err := b.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	tr, err := net.NewTransportAt(b.tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	fresh := []vip.Registration{reg("/app", 80, "10.0.0.1:80")}
	b2 := startMemAt(t, net, tr, b.name, nil, nodes[0].tr.Addr())
	b2.c.Publish(fresh)
	if v := b2.c.store.selfRecord().Version; v.Seq >= oldVersion.Seq || v.Generation <= oldVersion.Generation {
		t.Fatalf("restarted version %v, old %v: want a lower seq in a newer generation", v, oldVersion)
	}
	for _, n := range []*memNode{nodes[0], nodes[2]} {
		waitFor(t, 10*time.Second, n.name+" to hold the restarted node's new record", func() bool {
			return holdsExactly(n.c, b.name, fresh)
		})
	}
	// And it sticks: the previous life's record, still in flight or in a
	// push/pull, does not take over again.
	time.Sleep(time.Second)
	for _, n := range []*memNode{nodes[0], nodes[2]} {
		if !holdsExactly(n.c, b.name, fresh) {
			got, _ := nodeBackends(n.c, b.name)
			t.Fatalf("%s went back to %v", n.name, got)
		}
	}
}

// A node whose clock went back across a restart starts with a generation
// below its previous life's. When it finds its own old record in the
// cluster, it moves its generation past it, so its records win again.
func TestRestartWithClockGoneBack(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, nil)
	b := nodes[1]
	b.c.Publish([]vip.Registration{reg("/app", 80, "10.0.0.99:80")})
	waitFor(t, 10*time.Second, "old record everywhere", func() bool {
		_, ok := nodeBackends(nodes[0].c, b.name)
		_, ok2 := nodeBackends(nodes[2].c, b.name)
		return ok && ok2
	})
	oldGen := b.c.Generation()
	if err := b.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	tr, err := net.NewTransportAt(b.tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	past := time.Unix(0, int64(oldGen)).Add(-time.Hour)
	if uint64(past.UnixNano()) >= oldGen {
		t.Fatal("test setup: the restarted node's clock is not behind")
	}
	b2 := startMemAt(t, net, tr, b.name, func(c *Config) { c.Now = func() time.Time { return past } }, nodes[0].tr.Addr())
	fresh := []vip.Registration{reg("/app", 80, "10.0.0.1:80")}
	b2.c.Publish(fresh)
	for _, n := range []*memNode{nodes[0], nodes[2]} {
		waitFor(t, 15*time.Second, n.name+" to hold the restarted node's new record", func() bool {
			return holdsExactly(n.c, b.name, fresh)
		})
	}
	if b2.c.Generation() <= oldGen || b2.c.Stats().GenerationBumps == 0 {
		t.Fatalf("generation %d (old %d), bumps %d: want moved past the old one",
			b2.c.Generation(), oldGen, b2.c.Stats().GenerationBumps)
	}
}

// Two groups cut apart each drop the other's backends; once the network
// heals, reconnection merges them again.
func TestPartitionAndHeal(t *testing.T) {
	net := memnet.New()
	fast := func(c *Config) { c.Timing.ReconnectInterval = 500 * time.Millisecond }
	nodes := startMemCluster(t, net, 4, fast)
	want := map[string][]vip.Registration{}
	for i, n := range nodes {
		want[n.name] = []vip.Registration{reg("/app", 80, fmt.Sprintf("10.0.0.%d:80", i+1))}
		n.c.Publish(want[n.name])
	}
	all := func(n *memNode) bool {
		for node, regs := range want {
			if !holdsExactly(n.c, node, regs) {
				return false
			}
		}
		return true
	}
	for _, n := range nodes {
		if !waitForNoFatal(t, 20*time.Second, n.name+" to converge", func() bool { return all(n) }) {
			for _, m := range nodes {
				t.Logf("%s members %+v\nstate %+v\nstats %+v", m.name, m.c.Members(), m.c.State(), m.c.Stats())
				t.Logf("%s want %+v", m.name, m.c.store.want)
			}
			t.FailNow()
		}
	}
	left, right := nodes[:2], nodes[2:]
	net.Partition([]string{left[0].tr.Addr(), left[1].tr.Addr()}, []string{right[0].tr.Addr(), right[1].tr.Addr()})
	for _, side := range [][]*memNode{left, right} {
		other := left
		if side[0] == left[0] {
			other = right
		}
		for _, n := range side {
			waitFor(t, 15*time.Second, n.name+" to drop the other side", func() bool {
				for _, o := range other {
					if _, ok := nodeBackends(n.c, o.name); ok {
						return false
					}
				}
				return len(n.c.State()) == 2
			})
		}
	}
	// While apart, one side changes its backends.
	want[left[0].name] = []vip.Registration{reg("/app", 80, "10.0.1.1:80")}
	left[0].c.Publish(want[left[0].name])

	net.SetCut(nil)
	for _, n := range nodes {
		waitFor(t, 20*time.Second, n.name+" to converge after heal", func() bool { return all(n) })
	}
}

// Large records do not fit a gossip packet: a notice goes out and peers
// fetch the record over TCP.
func TestLargeRecordTravelsByPull(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 4, nil)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "membership", func() bool { return len(n.c.State()) == len(nodes) })
	}
	var regs []vip.Registration
	for i := range 300 {
		regs = append(regs, reg(fmt.Sprintf("/app-%d", i%7), uint16(8000+i%5), fmt.Sprintf("10.1.%d.%d:80", i/250, i%250+1)))
	}
	if n := len(encodeDelta(fullDelta(&record{Node: nodes[0].name, Version: Version{1, 1}, Registrations: regs}, 0))); n <= inlineRecordBytes {
		t.Fatalf("test setup: record of %d bytes would be gossiped inline", n)
	}
	nodes[0].c.Publish(regs)
	var pulls uint64
	for _, n := range nodes[1:] {
		waitFor(t, 10*time.Second, n.name+" to hold the large record", func() bool {
			return holdsExactly(n.c, nodes[0].name, regs)
		})
		pulls += n.c.Stats().PullsSent
	}
	if pulls == 0 || nodes[0].c.Stats().PullsServed == 0 {
		t.Fatalf("large record arrived without pulls (sent %d, served %d)", pulls, nodes[0].c.Stats().PullsServed)
	}
}

func TestChangesSignalsStateChanges(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 2, nil)
	drain := func(ch <-chan struct{}) {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}
	waitFor(t, 10*time.Second, "membership", func() bool { return len(nodes[1].c.State()) == 2 })
	time.Sleep(200 * time.Millisecond)
	drain(nodes[1].c.Changes())
	nodes[0].c.Publish([]vip.Registration{reg("/x", 80, "10.0.0.1:80")})
	select {
	case <-nodes[1].c.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification after a peer published")
	}
	if !holdsExactly(nodes[1].c, nodes[0].name, []vip.Registration{reg("/x", 80, "10.0.0.1:80")}) {
		t.Fatal("notified before the state held the change")
	}
}

// A broadcast that misses a node (here: cut off for a moment, shorter than
// failure detection) is repaired by the owner's periodic announcement,
// well before push/pull would: a record that fits in a packet is announced
// whole and applied as it is, a larger one is announced by a notice and
// pulled.
func TestMissedBroadcastIsRepairedByAnnouncement(t *testing.T) {
	large := make([]vip.Registration, 0, 300)
	for i := range 300 {
		large = append(large, reg(fmt.Sprintf("/app-%d", i%7), uint16(8000+i%5), fmt.Sprintf("10.1.%d.%d:80", i/250, i%250+1)))
	}
	for _, tc := range []struct {
		name     string
		regs     []vip.Registration
		wantPull bool
	}{
		{"small record: announced whole, no pull", []vip.Registration{reg("/app", 80, "10.0.0.42:80")}, false},
		{"large record: announced by a notice, pulled", large, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := memnet.New()
			slowPushPull := func(c *Config) { c.Timing.PushPullInterval = time.Minute }
			nodes := startMemCluster(t, net, 3, slowPushPull)
			a, b := nodes[0], nodes[1]
			for _, n := range nodes {
				waitFor(t, 20*time.Second, "cluster to form", func() bool { return len(n.c.State()) == 3 })
			}
			time.Sleep(3 * time.Second) // let the initial push/pulls and announcements pass
			pulls := b.c.Stats().PullsSent
			net.SetCut(func(from, to string) bool { return to == b.tr.Addr() })
			a.c.Publish(tc.regs)
			time.Sleep(400 * time.Millisecond) // every retransmission goes out, b gets none
			net.SetCut(nil)
			if holdsExactly(b.c, a.name, tc.regs) {
				t.Fatal("test setup: b got the broadcast through the cut")
			}
			waitFor(t, 3*LANTiming().AnnounceInterval, "b to catch up without push/pull", func() bool {
				return holdsExactly(b.c, a.name, tc.regs)
			})
			if pulled := b.c.Stats().PullsSent > pulls; pulled != tc.wantPull {
				t.Fatalf("b pulled: %v, want %v", pulled, tc.wantPull)
			}
		})
	}
}

// A notice of a newer version while a pull is in flight pulls again at once:
// the pull in flight may have been answered before the owner made that
// version, and waiting for it to expire stalled every quick change of a large
// record by a second.
func TestNewerVersionIsPulledAgainAtOnce(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 2, nil)
	waitFor(t, 10*time.Second, "membership", func() bool { return len(nodes[1].c.State()) == 2 })
	owner, c := nodes[0], nodes[1].c
	var sent int
	send := func(func()) bool { sent++; return true } // count, do not send
	inflight := map[string]pull{}
	gen := owner.c.Generation()

	for i, step := range []struct {
		seq      uint64 // version noted before pulling; 0 for none
		wantSent int
	}{
		{1000, 1}, // a notice: pull
		{0, 1},    // nothing new, the pull is in flight: wait
		{1000, 1}, // the same version again: wait
		{1001, 2}, // a newer version: pull again at once
	} {
		if step.seq != 0 {
			c.store.noteVersion(owner.name, Version{Generation: gen, Seq: step.seq}, c.now())
		}
		c.pullDue(inflight, send)
		if sent != step.wantSent {
			t.Fatalf("step %d: %d pulls sent, want %d", i, sent, step.wantSent)
		}
	}
}
