package gossip

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// applied is what a TakeChanges consumer holds: per node, per key.
type applied map[string]map[vip.RegKey]vip.Registration

func (a applied) apply(t testing.TB, deltas []vip.NodeDelta) {
	t.Helper()
	for _, d := range deltas {
		m := a[d.Node]
		if m == nil {
			m = map[vip.RegKey]vip.Registration{}
			a[d.Node] = m
		}
		for _, k := range d.Removed {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: removed key %v the consumer does not hold", d.Node, k)
			}
			delete(m, k)
		}
		for _, r := range d.Set {
			if old, ok := m[r.Key()]; ok && sameRegistration(old, r) {
				t.Errorf("%s: set %v the consumer already holds", d.Node, r.Key())
			}
			m[r.Key()] = r
		}
		if len(m) == 0 {
			delete(a, d.Node)
		}
	}
}

// diff says how a differs from a cluster state ("" when equal); nodes
// without registrations count as absent.
func (a applied) diff(st vip.ClusterState) string {
	seen := map[string]bool{}
	for _, n := range st {
		if len(n.Backends) == 0 {
			continue
		}
		seen[n.Node] = true
		m := a[n.Node]
		if len(m) != len(n.Backends) {
			return fmt.Sprintf("%s: consumer holds %d registrations, state %d", n.Node, len(m), len(n.Backends))
		}
		for _, r := range n.Backends {
			if got, ok := m[r.Key()]; !ok || !sameRegistration(got, r) {
				return fmt.Sprintf("%s: consumer holds %v for %v, state %v", n.Node, got, r.Key(), r)
			}
		}
	}
	for node := range a {
		if !seen[node] {
			return fmt.Sprintf("consumer holds %d registrations of %s, which is not in state", len(a[node]), node)
		}
	}
	return ""
}

func TestPublishDelta(t *testing.T) {
	c, err := New(Config{NodeName: "a", Transport: memnet.New().NewTransport()})
	if err != nil {
		t.Fatal(err)
	}
	r1, r2, r3 := reg("/a", 80, "10.0.0.1:80"), reg("/a", 80, "10.0.0.2:80"), reg("/b", 80, "10.0.0.3:80")
	if err := c.PublishDelta([]vip.Registration{r1, r2}, nil); err != nil {
		t.Fatal(err)
	}
	v := c.store.selfVersion()
	// A change that changes nothing: no version.
	if err := c.PublishDelta([]vip.Registration{r1}, []vip.RegKey{r3.Key()}); err != nil || c.store.selfVersion() != v {
		t.Fatalf("no-op moved the version %v -> %v (%v)", v, c.store.selfVersion(), err)
	}
	// Replace by key, remove, and a key in both lists is set.
	r1b := r1
	r1b.Weight = 7
	if err := c.PublishDelta([]vip.Registration{r1b, r3}, []vip.RegKey{r2.Key(), r3.Key()}); err != nil {
		t.Fatal(err)
	}
	if !holdsExactly(c, "a", []vip.Registration{r1b, r3}) || c.store.selfVersion().Seq != v.Seq+1 {
		t.Fatalf("state %+v, version %v", c.State(), c.store.selfVersion())
	}
	// Times are normalised before keying and comparing.
	r3b := r3
	r3b.Claim.Since = time.Now()
	if err := c.PublishDelta([]vip.Registration{r3b}, nil); err != nil {
		t.Fatal(err)
	}
	r3b.Claim.Since = r3b.Claim.Since.In(time.FixedZone("x", 3600)).Round(0)
	v = c.store.selfVersion()
	if err := c.PublishDelta([]vip.Registration{r3b}, nil); err != nil || c.store.selfVersion() != v {
		t.Fatalf("the same registration in another zone moved the version (%v)", err)
	}
	// Full: nothing changes.
	many := manyRegs(MaxRegistrations + 1)
	if err := c.PublishDelta(many, nil); !errors.Is(err, ErrRecordFull) {
		t.Fatalf("publishing %d registrations: %v, want ErrRecordFull", len(many), err)
	}
	if got := c.store.selfVersion(); got != v {
		t.Fatalf("a refused change moved the version %v -> %v", v, got)
	}
	if n, _ := nodeBackends(c, "a"); len(n) != 2 {
		t.Fatalf("a refused change changed the record: %d registrations", len(n))
	}
	_ = c.Shutdown()
	if err := c.PublishDelta([]vip.Registration{r2}, nil); !errors.Is(err, ErrLeft) {
		t.Fatalf("after shutdown: %v, want ErrLeft", err)
	}
}

func TestTakeChangesCoalesces(t *testing.T) {
	s := newStore("self")
	s.setSelf(rec("self", 5, 1), t0)
	joinMember(s, "b", 10)
	s.merge(rec("b", 10, 1, "10.0.0.1:80", "10.0.0.2:80"), t0)
	got := s.takeChanges()
	if len(got) != 1 || got[0].Node != "b" || len(got[0].Set) != 2 {
		t.Fatalf("first call = %+v, want b's two registrations", got)
	}
	if got := s.takeChanges(); len(got) != 0 {
		t.Fatalf("nothing changed, got %+v", got)
	}
	// 10.0.0.1 changed three times, 10.0.0.3 came and went, 10.0.0.2 went.
	r1 := reg("/app", 80, "10.0.0.1:80")
	for i, w := range []uint32{5, 6, 7} {
		r := r1
		r.Weight = w
		d := &deltaMsg{Node: "b", Gen: 10, Base: uint64(i + 1), Seq: uint64(i + 2), Set: []vip.Registration{r}}
		if i == 1 {
			d.Set = append(d.Set, reg("/app", 80, "10.0.0.3:80"))
			d.Removed = []vip.RegKey{reg2key("10.0.0.2:80")}
		}
		if i == 2 {
			d.Removed = []vip.RegKey{reg2key("10.0.0.3:80")}
		}
		d.Sum = s.records["b"].rec.sum
		if out, _ := s.applyDelta(d, t0); out != outcomeAccepted {
			t.Fatalf("delta %d: %v", i, out)
		}
	}
	got = s.takeChanges()
	if len(got) != 1 || len(got[0].Set) != 1 || got[0].Set[0].Weight != 7 ||
		len(got[0].Removed) != 1 || got[0].Removed[0] != reg2key("10.0.0.2:80") {
		t.Fatalf("coalesced changes = %+v", got)
	}
	// Invisible: every key removed; visible again: every registration set.
	s.leave("b", t0)
	if got := s.takeChanges(); len(got) != 1 || len(got[0].Removed) != 1 || len(got[0].Set) != 0 {
		t.Fatalf("after death = %+v", got)
	}
	joinMember(s, "b", 10)
	if got := s.takeChanges(); len(got) != 1 || len(got[0].Set) != 1 || len(got[0].Removed) != 0 {
		t.Fatalf("after refutation = %+v", got)
	}
}

func reg2key(backend string) vip.RegKey {
	r := reg("/app", 80, backend)
	return r.Key()
}

// owner is a node of the model in TestStoreTakeChangesProperty: a store of
// its own, whose publications the observer receives in every way gossip
// delivers them.
type owner struct {
	name    string
	gen     uint64
	s       *store
	history map[uint64][]vip.RegKey // keys changed at each seq
}

func newOwner(name string, gen uint64) *owner {
	o := &owner{name: name, gen: gen, s: newStore(name), history: map[uint64][]vip.RegKey{}}
	o.s.setSelf(&record{Node: name, Version: Version{gen, 1}}, t0)
	return o
}

func (o *owner) publish(t *testing.T, r *rand.Rand) {
	var set []vip.Registration
	var removed []vip.RegKey
	keys := o.s.selfKeys()
	for range 1 + r.IntN(4) {
		if len(keys) > 0 && r.IntN(3) == 0 {
			removed = append(removed, keys[r.IntN(len(keys))])
			continue
		}
		x := reg(fmt.Sprintf("/app-%d", r.IntN(3)), 80, fmt.Sprintf("10.0.%d.%d:80", r.IntN(4), r.IntN(50)))
		x.Weight = uint32(r.IntN(3))
		set = append(set, x)
	}
	// Now and then a burst, so that the page layout changes.
	if r.IntN(15) == 0 {
		for i := range 200 + r.IntN(300) {
			set = append(set, reg("/bulk", 80, fmt.Sprintf("10.9.%d.%d:80", i/250, i%250)))
		}
	}
	if r.IntN(15) == 0 {
		for _, k := range keys {
			if k.VIP.Name == "/bulk" {
				removed = append(removed, k)
			}
		}
	}
	changed, v, err := o.s.publish(set, removed, t0)
	if err != nil {
		t.Fatal(err)
	}
	if changed != nil {
		o.history[v.Seq] = changed
	}
}

// message returns one message about o as gossip could deliver it to a node
// that holds version held: a delta from some base, the whole record, a
// pull reply, or an old message replayed.
func (o *owner) message(r *rand.Rand, held Version, heldLayout uint8) func(s *store) {
	v := o.s.selfVersion()
	switch r.IntN(5) {
	case 0: // whole record
		d := o.s.selfDelta(0, nil)
		return func(s *store) { s.applyDelta(d, t0) }
	case 1: // pull reply since what is held
		p := o.s.pagesSince(held, heldLayout)
		return func(s *store) { s.applyPages(p, t0) }
	case 2: // a stale or current notice
		return func(s *store) { s.noteVersion(o.name, Version{o.gen, 1 + r.Uint64N(v.Seq)}, t0) }
	default: // a delta spanning the last few versions
		base := v.Seq - 1 - r.Uint64N(min(v.Seq-1, 4)+1)
		if base == 0 || base >= v.Seq {
			base = v.Seq - 1
		}
		var keys []vip.RegKey
		for seq := base + 1; seq <= v.Seq; seq++ {
			keys = append(keys, o.history[seq]...)
		}
		if base == 0 {
			d := o.s.selfDelta(0, nil)
			return func(s *store) { s.applyDelta(d, t0) }
		}
		d := o.s.selfDelta(base, keys)
		return func(s *store) { s.applyDelta(d, t0) }
	}
}

// Property: whatever a node receives (deltas from any base, whole records,
// pull replies, stale messages), with deaths, leaves, restarts and
// forgetting, the TakeChanges it returns, applied in turn to an empty map,
// give State() at every call.
func TestStoreTakeChangesProperty(t *testing.T) {
	for trial := range 40 {
		r := rand.New(rand.NewPCG(uint64(trial), 99))
		obs := newStore("obs")
		obs.setSelf(&record{Node: "obs", Version: Version{1, 1}}, t0)
		owners := map[string]*owner{}
		for i := range 4 {
			name := fmt.Sprintf("n%d", i)
			owners[name] = newOwner(name, 10)
			joinMember(obs, name, 10)
		}
		names := []string{"n0", "n1", "n2", "n3"}
		got := applied{}
		now := t0
		for step := range 400 {
			o := owners[names[r.IntN(len(names))]]
			switch x := r.IntN(100); {
			case x < 35:
				o.publish(t, r)
			case x < 75:
				held, layout := Version{}, uint8(0)
				obs.mu.Lock()
				if e := obs.records[o.name]; e != nil {
					held, layout = e.rec.version, e.rec.layout
				}
				obs.mu.Unlock()
				o.message(r, held, layout)(obs)
			case x < 80: // this node's own publication
				set := []vip.Registration{reg("/self", 80, fmt.Sprintf("10.1.0.%d:80", r.IntN(5)))}
				if _, _, err := obs.publish(set, nil, now); err != nil {
					t.Fatal(err)
				}
			case x < 84: // death
				obs.leave(o.name, now)
			case x < 88: // back (refuted, or rejoined)
				obs.join(o.name, net.IPv4(127, 0, 0, 9), 7946, encodeMeta(o.gen), now, time.Second)
			case x < 90: // restart: new generation, empty record
				owners[o.name] = newOwner(o.name, o.gen+1)
				obs.leave(o.name, now)
				obs.join(o.name, net.IPv4(127, 0, 0, 9), 7946, encodeMeta(o.gen+1), now, time.Second)
			case x < 91: // graceful leave
				d := o.s.leaveSelf(now)
				obs.applyDelta(d, now)
				if r.IntN(2) == 0 {
					obs.leave(o.name, now)
				}
				owners[o.name] = newOwner(o.name, o.gen+1)
			case x < 92: // restart announced (Cluster.Restart), maybe seen gone
				v := o.s.restartSelf(now)
				o.history[v.Seq] = nil
				o.message(r, Version{}, 0)(obs)
				if r.IntN(2) == 0 {
					obs.leave(o.name, now)
				}
				owners[o.name] = newOwner(o.name, o.gen+1)
			case x < 94: // time passes; restarts expire, the gone are forgotten
				now = now.Add(time.Duration(r.IntN(20)) * time.Minute)
				obs.expireRestarts(now, 5*time.Minute)
				obs.sweep(now, 10*time.Minute)
			default:
				got.apply(t, obs.takeChanges())
				if d := got.diff(obs.state()); d != "" {
					t.Fatalf("trial %d step %d: %s", trial, step, d)
				}
			}
		}
		got.apply(t, obs.takeChanges())
		if d := got.diff(obs.state()); d != "" {
			t.Fatalf("trial %d end: %s", trial, d)
		}
		// And every live owner's content reaches the observer once
		// everything is delivered whole.
		for _, name := range names {
			o := owners[name]
			obs.join(name, net.IPv4(127, 0, 0, 9), 7946, encodeMeta(o.gen), now, time.Second)
			obs.applyDelta(o.s.selfDelta(0, nil), now)
			want, _ := findNode(o.s.state(), name)
			have, _ := findNode(obs.state(), name)
			if !equalRegistrations(want, have) {
				t.Fatalf("trial %d: %s holds %d registrations, observer %d", trial, name, len(want), len(have))
			}
		}
		got.apply(t, obs.takeChanges())
		if d := got.diff(obs.state()); d != "" {
			t.Fatalf("trial %d after delivery: %s", trial, d)
		}
	}
}

// consumer calls TakeChanges on a node and keeps what it was told.
type consumer struct {
	c   *Cluster
	got applied
}

func (k *consumer) take(t testing.TB) { k.got.apply(t, k.c.TakeChanges()) }

// holds reports whether the consumer holds node's backends.
func (k *consumer) holds(node string) bool { return len(k.got[node]) > 0 }

// A graceful leave takes the leaver's backends out of every peer's State()
// and TakeChanges within a second, whichever of the leaving record and
// memberlist's goodbye arrives first; 20 leaves in a row.
func TestLeaveRemovesBackendsEverywhere(t *testing.T) {
	net := memnet.New()
	stay := startMemCluster(t, net, 2, nil)
	consumers := []*consumer{{c: stay[0].c, got: applied{}}, {c: stay[1].c, got: applied{}}}
	for run := range 20 {
		name := fmt.Sprintf("leaver-%02d", run)
		leaver := startMem(t, net, name, nil, stay[run%2].tr.Addr())
		if err := leaver.c.PublishDelta([]vip.Registration{reg("/app", 80, "10.0.0.1:80"), reg("/app", 80, "10.0.0.2:80")}, nil); err != nil {
			t.Fatal(err)
		}
		for _, k := range consumers {
			waitFor(t, 10*time.Second, name+"'s backends to arrive", func() bool {
				k.take(t)
				return k.holds(name) && holdsExactly(k.c, name, []vip.Registration{reg("/app", 80, "10.0.0.1:80"), reg("/app", 80, "10.0.0.2:80")})
			})
		}
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- leaver.c.Leave(2 * time.Second) }()
		for _, k := range consumers {
			waitFor(t, 5*time.Second, name+"'s backends to leave", func() bool {
				k.take(t)
				_, inState := nodeBackends(k.c, name)
				return !k.holds(name) && !inState
			})
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("run %d: the leaver's backends left its peers after %v, over 1 s", run, took)
		}
		if err := <-done; err != nil {
			t.Fatalf("run %d: leave: %v", run, err)
		}
		for _, k := range consumers {
			if d := k.got.diff(k.c.State()); d != "" {
				t.Fatalf("run %d: %s", run, d)
			}
		}
	}
}

// A node holds 50,000 backends: a peer converges to all of them; one
// change then travels inline (no pull), and a peer that missed a change
// pulls only the pages it lacks.
func TestFiftyThousandBackends(t *testing.T) {
	net := memnet.New()
	slowPushPull := func(c *Config) { c.Timing.PushPullInterval = time.Minute }
	nodes := startMemCluster(t, net, 3, slowPushPull)
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "membership", func() bool { return len(n.c.State()) == 3 })
	}
	regs := manyRegs(50000)
	for i := 0; i < len(regs); i += 10000 {
		if err := a.c.PublishDelta(regs[i:i+10000], nil); err != nil {
			t.Fatal(err)
		}
	}
	want := func(n *memNode) bool { return holdsExactly(n.c, a.name, regs) }
	for _, n := range []*memNode{b, c} {
		waitFor(t, 30*time.Second, n.name+" to hold 50,000 backends", func() bool {
			return n.c.Stats().BackendsByNode[a.name] == len(regs) && want(n)
		})
	}

	// One change: inline.
	pulls := b.c.Stats().PullsSent + c.c.Stats().PullsSent
	regs[123].Weight = 9
	if err := a.c.PublishDelta(regs[123:124], nil); err != nil {
		t.Fatal(err)
	}
	v := a.c.store.selfVersion()
	for _, n := range []*memNode{b, c} {
		waitFor(t, 5*time.Second, n.name+" to hold the change", func() bool { return n.c.store.holds(a.name, v) })
	}
	if got := b.c.Stats().PullsSent + c.c.Stats().PullsSent; got != pulls {
		t.Errorf("a one-backend change was pulled (%d pulls), not gossiped inline", got-pulls)
	}

	// c misses a few changes, then catches up from a's announcement with a
	// pull of the changed pages only.
	net.SetCut(func(from, to string) bool { return to == c.tr.Addr() })
	for i := range 3 {
		regs[1000*i].Weight = 5
		if err := a.c.PublishDelta(regs[1000*i:1000*i+1], nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	before := c.c.Stats().WireBytesReceived
	net.SetCut(nil)
	v = a.c.store.selfVersion()
	waitFor(t, 10*time.Second, "c to catch up", func() bool { return c.c.store.holds(a.name, v) })
	if !want(c) || !want(b) {
		t.Fatal("peers do not hold the record")
	}
	if got := c.c.Stats().WireBytesReceived - before; got > 64<<10 {
		t.Errorf("catching up on 3 changes took %d bytes: more than the pages that changed", got)
	}
}

// Property: for random PublishDelta on several nodes, with deaths, leaves
// and restarts, every node's TakeChanges applied in turn to an empty map
// equals its State() once converged.
func TestTakeChangesMatchesStateOnAClusterProperty(t *testing.T) {
	net := memnet.New()
	fast := func(c *Config) { c.Timing.ReconnectInterval = 500 * time.Millisecond }
	nodes := startMemCluster(t, net, 4, fast)
	consumers := map[string]*consumer{}
	for _, n := range nodes {
		consumers[n.name] = &consumer{c: n.c, got: applied{}}
	}
	r := rand.New(rand.NewPCG(7, 8))
	restarts := 0
	for step := range 120 {
		i := 1 + r.IntN(len(nodes)-1) // node 0 stays, as a seed
		n := nodes[i]
		switch x := r.IntN(100); {
		case x < 85:
			var set []vip.Registration
			var removed []vip.RegKey
			for range 1 + r.IntN(3) {
				x := reg("/app", 80, fmt.Sprintf("10.%d.0.%d:80", i, r.IntN(20)))
				if r.IntN(3) == 0 {
					removed = append(removed, x.Key())
				} else {
					x.Weight = uint32(r.IntN(4))
					set = append(set, x)
				}
			}
			if r.IntN(20) == 0 {
				set = append(set, manyRegs(100+r.IntN(200))...)
			}
			_ = n.c.PublishDelta(set, removed)
		case x < 93 && restarts < 4: // death or leave, then a restart
			restarts++
			if x < 89 {
				_ = n.c.Shutdown()
			} else {
				_ = n.c.Leave(time.Second)
			}
			delete(consumers, n.name)
			time.Sleep(time.Duration(r.IntN(1500)) * time.Millisecond)
			tr, err := net.NewTransportAt(n.tr.Addr())
			if err != nil {
				t.Fatal(err)
			}
			nodes[i] = startMemAt(t, net, tr, n.name, fast, nodes[0].tr.Addr())
			consumers[n.name] = &consumer{c: nodes[i].c, got: applied{}}
		}
		if step%10 == 0 {
			for _, k := range consumers {
				k.take(t)
			}
		}
		time.Sleep(time.Duration(r.IntN(30)) * time.Millisecond)
	}
	// Converged: every node holds every node's own record.
	for _, n := range nodes {
		waitFor(t, 30*time.Second, n.name+" to converge", func() bool {
			for _, o := range nodes {
				mine, _ := nodeBackends(o.c, o.name)
				theirs, ok := nodeBackends(n.c, o.name)
				if !ok || !equalRegistrations(mine, theirs) {
					return false
				}
			}
			return len(n.c.State()) == len(nodes)
		})
	}
	for _, n := range nodes {
		k := consumers[n.name]
		k.take(t)
		if d := k.got.diff(n.c.State()); d != "" {
			t.Fatalf("%s: %s", n.name, d)
		}
	}
	names := slices.Collect(func(yield func(string) bool) {
		for name := range consumers {
			if !yield(name) {
				return
			}
		}
	})
	t.Logf("%d restarts; consumers %v", restarts, names)
}

// The owner answers "what changed since my version" with the pages changed
// after it; a peer on another generation or layout, or holding nothing,
// gets every page; a re-page counts as a change of every page.
func TestPagesSince(t *testing.T) {
	o := newOwner("o", 10)
	if _, _, err := o.s.publish(manyRegs(5000), nil, t0); err != nil {
		t.Fatal(err)
	}
	v := o.s.selfVersion()
	r := o.s.records["o"].rec
	layout, pages := r.layout, len(r.pages)
	if pages < 64 {
		t.Fatalf("5,000 registrations in %d pages", pages)
	}
	changed := manyRegs(3)
	for i := range changed {
		changed[i].Weight = 42
	}
	if _, _, err := o.s.publish(changed, nil, t0); err != nil {
		t.Fatal(err)
	}
	want := map[uint32]bool{}
	for _, x := range changed {
		want[uint32(pageOf(keyHashOf(x.Key()), layout))] = true
	}
	p := o.s.pagesSince(v, layout)
	if p.Full || len(p.Pages) != len(want) {
		t.Fatalf("since the previous version: full %v, %d pages, want the %d changed", p.Full, len(p.Pages), len(want))
	}
	for _, pg := range p.Pages {
		if !want[pg.Index] {
			t.Fatalf("page %d did not change", pg.Index)
		}
	}
	for _, since := range []struct {
		name   string
		v      Version
		layout uint8
	}{
		{"nothing held", Version{}, 0},
		{"another generation", Version{9, v.Seq}, layout},
		{"another layout", v, layout - 1},
	} {
		if p := o.s.pagesSince(since.v, since.layout); !p.Full || len(p.Pages) != pages {
			t.Fatalf("%s: full %v, %d pages, want all %d", since.name, p.Full, len(p.Pages), pages)
		}
	}
	// Growing past the layout re-pages: a peer from before gets every page.
	v = o.s.selfVersion()
	if _, _, err := o.s.publish(manyRegs(40000), nil, t0); err != nil {
		t.Fatal(err)
	}
	r = o.s.records["o"].rec
	if r.layout == layout {
		t.Fatalf("40,000 registrations kept the layout of 5,000 (%d pages)", len(r.pages))
	}
	if p := o.s.pagesSince(v, layout); !p.Full {
		t.Fatal("a peer from before the re-page was not sent everything")
	}
	v = o.s.selfVersion()
	if p := o.s.pagesSince(v, r.layout); p.Full || len(p.Pages) != 0 {
		t.Fatalf("a peer up to date got %d pages", len(p.Pages))
	}
}
