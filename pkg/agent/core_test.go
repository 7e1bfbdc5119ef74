package agent

import (
	"context"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// fakeNet is a cluster whose gossip is instant: every node sees every
// published change at once.
type fakeNet struct {
	mu     sync.Mutex
	states map[string]map[vip.RegKey]vip.Registration
	subs   []*fakeCluster
}

type fakeCluster struct {
	net  *fakeNet
	node string
	ch   chan struct{}
	// seen is what TakeChanges last reported, per node (guarded by net.mu).
	seen map[string]map[vip.RegKey]vip.Registration
	// refuse, when set, makes PublishDelta fail.
	refuse error
}

func (n *fakeNet) join(node string) *fakeCluster {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.states == nil {
		n.states = map[string]map[vip.RegKey]vip.Registration{}
	}
	c := &fakeCluster{net: n, node: node, ch: make(chan struct{}, 1), seen: map[string]map[vip.RegKey]vip.Registration{}}
	n.subs = append(n.subs, c)
	return c
}

func (c *fakeCluster) PublishDelta(set []vip.Registration, removed []vip.RegKey) error {
	c.net.mu.Lock()
	if c.refuse != nil {
		c.net.mu.Unlock()
		return c.refuse
	}
	st := c.net.states[c.node]
	if st == nil {
		st = map[vip.RegKey]vip.Registration{}
		c.net.states[c.node] = st
	}
	for _, k := range removed {
		delete(st, k)
	}
	for _, r := range set {
		st[r.Key()] = r
	}
	subs := c.net.subs
	c.net.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// TakeChanges diffs the network's state against what this node saw last.
func (c *fakeCluster) TakeChanges() []vip.NodeDelta {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	var out []vip.NodeDelta
	nodes := map[string]bool{}
	for n := range c.net.states {
		nodes[n] = true
	}
	for n := range c.seen {
		nodes[n] = true
	}
	for n := range nodes {
		cur, old := c.net.states[n], c.seen[n]
		d := vip.NodeDelta{Node: n}
		for k := range old {
			if _, ok := cur[k]; !ok {
				d.Removed = append(d.Removed, k)
			}
		}
		for k, r := range cur {
			if o, ok := old[k]; !ok || !sameRegistration(o, r) {
				d.Set = append(d.Set, r)
			}
		}
		if len(d.Removed)+len(d.Set) > 0 {
			out = append(out, d)
		}
		c.seen[n] = maps.Clone(cur)
	}
	return out
}

func (c *fakeCluster) State() vip.ClusterState {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	var st vip.ClusterState
	for n, regs := range c.net.states {
		ns := vip.NodeState{Node: n}
		for _, r := range regs {
			ns.Backends = append(ns.Backends, r)
		}
		st = append(st, ns)
	}
	sort.Slice(st, func(i, j int) bool { return st[i].Node < st[j].Node })
	return st
}

func (c *fakeCluster) Changes() <-chan struct{} { return c.ch }

// sink records the tables it is handed.
type sink struct {
	mu     sync.Mutex
	tables []*vip.Table
}

func (s *sink) Update(t *vip.Table) {
	s.mu.Lock()
	s.tables = append(s.tables, t)
	s.mu.Unlock()
}

func (s *sink) last() *vip.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tables) == 0 {
		return nil
	}
	return s.tables[len(s.tables)-1]
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tables)
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func local(t *testing.T, e source.Entry) source.Local {
	t.Helper()
	l, err := e.Parse()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 5s: %s", what)
}

func startCore(t *testing.T, cfg CoreConfig, c Cluster) *Core {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	return runCore(t, NewCore(cfg, c))
}

// runCore runs a Core until the test ends.
func runCore(t *testing.T, core *Core) *Core {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = core.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return core
}

// programmedBy makes a plane that reports back at once what it is handed.
type programmedBy struct {
	sink
	core *Core
}

func (p *programmedBy) Update(t *vip.Table) {
	p.sink.Update(t)
	p.core.Programmed(t)
}

func TestLocalBackendsFlowToEveryNode(t *testing.T) {
	var net fakeNet
	dns1, dns2 := &sink{}, &sink{}
	startCore(t, CoreConfig{Node: "node1", DNS: dns1}, net.join("node1"))
	c2 := startCore(t, CoreConfig{Node: "node2", DNS: dns2}, net.join("node2"))

	c2.Replace(SourceAPI, []source.Local{local(t, source.Entry{VIP: "/dcos-101/app2:10000", Backend: "10.0.0.2:8080"})})
	for _, d := range []*sink{dns1, dns2} {
		eventually(t, "both nodes' DNS get the VIP", func() bool { t := d.last(); return t != nil && len(t.VIPs) == 1 })
	}
	v1, v2 := dns1.last().VIPs[0], dns2.last().VIPs[0]
	if v1.Addr != v2.Addr || !netip.MustParsePrefix("11.0.0.0/8").Contains(v1.Addr) {
		t.Errorf("nodes disagree on the VIP address or it is out of range: %s vs %s", v1.Addr, v2.Addr)
	}
	if len(v1.Backends) != 1 || v1.Backends[0].Node != "node2" || v1.Backends[0].Weight != 1 {
		t.Errorf("backends on node1: %+v", v1.Backends)
	}
	c2.Replace(SourceAPI, nil)
	eventually(t, "withdrawn backend leaves node1's table", func() bool { return len(dns1.last().VIPs) == 0 })
}

func TestHealthDecidesWhatIsPublished(t *testing.T) {
	var net fakeNet
	dns := &sink{}
	cl := net.join("node1")
	core := startCore(t, CoreConfig{Node: "node1", DNS: dns}, cl)
	checked := local(t, source.Entry{VIP: "/a:80", Backend: "10.0.0.1:80", Check: "tcp"})
	plain := local(t, source.Entry{VIP: "/a:80", Backend: "10.0.0.2:80"})
	core.Replace(SourceAPI, []source.Local{checked, plain})
	healthOf := func(backend string) vip.Health {
		for _, n := range cl.State() {
			for _, r := range n.Backends {
				if r.Backend.String() == backend {
					return r.Health
				}
			}
		}
		return "missing"
	}
	eventually(t, "published", func() bool { return healthOf("10.0.0.2:80") == vip.Healthy })
	if h := healthOf("10.0.0.1:80"); h != vip.Unhealthy {
		t.Errorf("a checked backend with no check result yet is %q, want unhealthy", h)
	}
	core.HealthChanged(map[string]bool{checked.Key(): true})
	eventually(t, "healthy after a passing check", func() bool { return healthOf("10.0.0.1:80") == vip.Healthy })
	core.HealthChanged(map[string]bool{checked.Key(): false})
	eventually(t, "unhealthy after failing checks", func() bool { return healthOf("10.0.0.1:80") == vip.Unhealthy })
	eventually(t, "the unhealthy backend leaves the table", func() bool {
		t := dns.last()
		return t != nil && len(t.VIPs) == 1 && len(t.VIPs[0].Backends) == 1 && t.VIPs[0].Backends[0].Addr.String() == "10.0.0.2:80"
	})
}

func TestNothingIsProgrammedBeforeTheStateIsMerged(t *testing.T) {
	var net fakeNet
	var merged sync.Mutex
	isMerged := false
	plane := &sink{}
	core := startCore(t, CoreConfig{Node: "node1", Plane: plane, StateMerged: func() (bool, string) {
		merged.Lock()
		defer merged.Unlock()
		return isMerged, "waiting for a seed"
	}}, net.join("node1"))
	time.Sleep(300 * time.Millisecond)
	if n := plane.count(); n != 0 {
		t.Fatalf("the data plane got %d tables before the state was merged", n)
	}
	if ok, why := core.Synced(); ok || why != "waiting for a seed" {
		t.Errorf("Synced() = %v, %q before the merge", ok, why)
	}
	merged.Lock()
	isMerged = true
	merged.Unlock()
	eventually(t, "programmed once merged", func() bool { return plane.count() > 0 })
	if ok, _ := core.Synced(); ok {
		t.Error("Synced before the data plane reported a sync")
	}
	core.Programmed(plane.last())
	if ok, why := core.Synced(); !ok {
		t.Errorf("not synced after the plane reported: %s", why)
	}
}

func TestClaimsSurviveARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claims.json")
	reg := source.Entry{VIP: "/dcos-101/app2:10000", Backend: "10.0.0.2:8080"}
	var first vip.Claim
	{
		var net fakeNet
		cl := net.join("node2")
		book := NewClaimBook(path)
		core := startCore(t, CoreConfig{Node: "node2", Claims: book, Now: func() time.Time { return time.Unix(1000, 0) }}, cl)
		core.Replace(SourceAPI, []source.Local{local(t, reg)})
		eventually(t, "claim published", func() bool {
			st := cl.State()
			return len(st) == 1 && len(st[0].Backends) == 1 && st[0].Backends[0].Claim.Addr.IsValid()
		})
		first = cl.State()[0].Backends[0].Claim
	}
	// A new process: a fresh cluster view, the book read back from disk, a
	// later clock. It must publish the same claim, Since included.
	var net fakeNet
	cl := net.join("node2")
	book := NewClaimBook(path)
	if err := book.Load(); err != nil {
		t.Fatal(err)
	}
	core := startCore(t, CoreConfig{Node: "node2", Claims: book, Now: func() time.Time { return time.Unix(5000, 0) }}, cl)
	core.Replace(SourceAPI, []source.Local{local(t, reg)})
	eventually(t, "claim republished", func() bool {
		st := cl.State()
		return len(st) == 1 && len(st[0].Backends) == 1 && st[0].Backends[0].Claim.Addr.IsValid()
	})
	if got := cl.State()[0].Backends[0].Claim; got.Addr != first.Addr || !got.Since.Equal(first.Since) {
		t.Errorf("after a restart the claim is %+v, want %+v", got, first)
	}
}

func TestClaimBookFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "claims.json")
	b := NewClaimBook(path)
	k1 := vip.NameKey{Framework: "marathon", Name: "/a"}
	k2 := vip.NameKey{Framework: "marathon", Name: "/b", V6: true}
	c1 := vip.Claim{Addr: netip.MustParseAddr("11.0.0.5"), Since: time.Unix(10, 0).UTC()}
	c2 := vip.Claim{Addr: netip.MustParseAddr("fd01:c::5"), Since: time.Unix(20, 0).UTC()}
	if err := b.Put(k1, c1); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(k2, c2); err != nil {
		t.Fatal(err)
	}
	b.Forget(map[vip.NameKey]bool{k1: true})
	r := NewClaimBook(path)
	if err := r.Load(); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get(k1); ok {
		t.Error("a forgotten claim came back from the file")
	}
	if got, ok := r.Get(k2); !ok || got.Addr != c2.Addr || !got.Since.Equal(c2.Since) {
		t.Errorf("read back %+v %v, want %+v", got, ok, c2)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := NewClaimBook(path).Load(); err == nil {
		t.Error("a corrupt claims file loaded without error")
	}
	if err := NewClaimBook(filepath.Join(dir, "missing.json")).Load(); err != nil {
		t.Errorf("a missing claims file is an empty book, got %v", err)
	}
}

func TestProgrammedTableGoesToDNS(t *testing.T) {
	var net fakeNet
	dns := &sink{}
	pl := &programmedBy{}
	core := NewCore(CoreConfig{Node: "node1", DNS: dns, Plane: pl, Log: quietLog()}, net.join("node1"))
	pl.core = core
	runCore(t, core)
	core.Replace(SourceAPI, []source.Local{local(t, source.Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})})
	eventually(t, "DNS gets the programmed table", func() bool { t := dns.last(); return t != nil && len(t.VIPs) == 1 })
	if ok, why := core.Synced(); !ok {
		t.Errorf("not synced: %s", why)
	}
	if core.ProgrammedTable() != dns.last() {
		t.Error("DNS was handed something other than the programmed table")
	}
}

func TestWithdrawnNameForgetsItsClaim(t *testing.T) {
	var net fakeNet
	book := NewClaimBook(filepath.Join(t.TempDir(), "claims.json"))
	core := startCore(t, CoreConfig{Node: "node1", Claims: book}, net.join("node1"))
	l := local(t, source.Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})
	reg := l.Registration(vip.Healthy)
	key := vip.NameKeyOf(&reg)
	core.Replace(SourceAPI, []source.Local{l})
	eventually(t, "claim kept", func() bool { _, ok := book.Get(key); return ok })
	core.Replace(SourceAPI, nil)
	eventually(t, "claim forgotten", func() bool { _, ok := book.Get(key); return !ok })
}
