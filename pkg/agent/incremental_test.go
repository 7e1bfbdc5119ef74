package agent

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// TestPublishedEqualsSourcesFromScratch drives a Core with random changes
// of its three sources and of health, each by difference, and checks that
// what it publishes is what the merge rule gives from scratch: for every
// key, the first source's backend, unhealthy while its check has not
// passed; every named VIP with one valid claim per name.
func TestPublishedEqualsSourcesFromScratch(t *testing.T) {
	for seed := int64(0); seed < 8; seed++ {
		rng := rand.New(rand.NewSource(seed))
		var net fakeNet
		cl := net.join("node1")
		core := startCore(t, CoreConfig{Node: "node1"}, cl)
		model := [numSources]map[string]source.Local{{}, {}, {}}
		healthy := map[string]bool{}
		for step := 0; step < 40; step++ {
			src := Sources[rng.Intn(int(numSources))]
			switch op := rng.Intn(10); {
			case op < 6: // set a few
				var set []source.Local
				for n := rng.Intn(4) + 1; n > 0; n-- {
					l := randomLocal(t, rng)
					set = append(set, l)
					model[src][l.Key()] = l
				}
				core.Update(src, set, nil)
			case op < 8: // remove a few
				var removed []string
				for k := range model[src] {
					if rng.Intn(3) == 0 {
						removed = append(removed, k)
						delete(model[src], k)
					}
				}
				core.Update(src, nil, removed)
			case op < 9: // replace all
				set := []source.Local{}
				next := map[string]source.Local{}
				for n := rng.Intn(5); n > 0; n-- {
					l := randomLocal(t, rng)
					set = append(set, l)
					next[l.Key()] = l
				}
				model[src] = next
				core.Replace(src, set)
			default: // health
				h := map[string]bool{}
				for k := range model[src] {
					if rng.Intn(2) == 0 {
						h[k] = rng.Intn(2) == 0
						healthy[k] = h[k]
					}
				}
				core.HealthChanged(h)
			}
			want := fromScratch(model, healthy)
			eventually(t, fmt.Sprintf("seed %d step %d: published equals the sources from scratch", seed, step), func() bool {
				return samePublished(t, cl.State(), want, false)
			})
		}
		samePublished(t, cl.State(), fromScratch(model, healthy), true)
	}
}

// randomLocal is one of a small set of backends, so that sources collide.
func randomLocal(t *testing.T, rng *rand.Rand) source.Local {
	e := source.Entry{
		VIP:     []string{"/a:80", "/a:443", "/b:80", "11.9.9.9:80", "udp:///c:53"}[rng.Intn(5)],
		Backend: fmt.Sprintf("10.0.0.%d:8080", 1+rng.Intn(4)),
		Weight:  ptr(uint32(rng.Intn(3))),
	}
	if rng.Intn(4) == 0 {
		e.Check = "tcp"
	}
	return local(t, e)
}

func ptr[T any](v T) *T { return &v }

// fromScratch is what the merge rule publishes: key -> registration
// without its claim.
func fromScratch(model [numSources]map[string]source.Local, healthy map[string]bool) map[string]vip.Registration {
	out := map[string]vip.Registration{}
	for _, src := range Sources {
		for k, l := range model[src] {
			if _, ok := out[k]; ok {
				continue
			}
			h := vip.Healthy
			if l.Check.Kind != "" && !healthy[k] {
				h = vip.Unhealthy
			}
			out[k] = l.Registration(h)
		}
	}
	return out
}

func samePublished(t *testing.T, st vip.ClusterState, want map[string]vip.Registration, report bool) bool {
	t.Helper()
	got := map[string]vip.Registration{}
	claims := map[vip.NameKey]netip.Addr{}
	for _, n := range st {
		for _, r := range n.Backends {
			k := source.KeyOf(r.VIP, r.Backend)
			if _, dup := got[k]; dup {
				if report {
					t.Errorf("key %s published twice", k)
				}
				return false
			}
			if r.VIP.Named() {
				nk := vip.NameKeyOf(&r)
				if !r.Claim.Addr.IsValid() {
					if report {
						t.Errorf("%s published without a claim", k)
					}
					return false
				}
				if a, ok := claims[nk]; ok && a != r.Claim.Addr {
					if report {
						t.Errorf("name %v published with two claims: %s and %s", nk, a, r.Claim.Addr)
					}
					return false
				}
				claims[nk] = r.Claim.Addr
			}
			r.Claim = vip.Claim{}
			got[k] = r
		}
	}
	if len(got) != len(want) {
		if report {
			t.Errorf("published %d backends, want %d", len(got), len(want))
		}
		return false
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !sameRegistration(g, w) {
			if report {
				t.Errorf("key %s: published %+v, want %+v", k, g, w)
			}
			return false
		}
	}
	return true
}

// A node at its limit refuses a new backend with a FullError and stores
// nothing; one already held may still be replaced.
func TestRegistrationPastTheLimitIsRefused(t *testing.T) {
	a, cl := newLocalNode(t)
	a.core.cfg.Room = func(add []vip.Registration) error {
		if n := a.core.LocalCount() + len(add); n > 2 {
			return fmt.Errorf("%w: %d registrations, over 2", gossip.ErrRecordFull, n)
		}
		return nil
	}
	for i := 1; i <= 2; i++ {
		if _, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: fmt.Sprintf("10.0.0.%d:80", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: "10.0.0.3:80"})
	var full *api.FullError
	if !errors.As(err, &full) || !errors.Is(err, gossip.ErrRecordFull) {
		t.Fatalf("third backend: err = %v, want a FullError wrapping gossip.ErrRecordFull", err)
	}
	if _, ok := a.store.Get(source.KeyOf(vip.Spec{Protocol: vip.TCP, Name: "/app", Port: 80}, netip.MustParseAddrPort("10.0.0.3:80"))); ok {
		t.Error("a refused registration was stored")
	}
	if _, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: "10.0.0.2:80", Weight: ptr(uint32(5))}); err != nil {
		t.Errorf("replacing a held backend at the limit: %v", err)
	}
	eventually(t, "two published", func() bool { return len(published(cl)) == 2 })
}

// When gossip refuses the node's change, the agent says so: not ready, with
// the reason, until a publication goes through.
func TestRefusedPublicationMakesTheNodeNotReady(t *testing.T) {
	a, cl := newLocalNode(t)
	cl.net.mu.Lock()
	cl.refuse = errors.New("record over its limit")
	cl.net.mu.Unlock()
	if _, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the refusal is seen", func() bool { return a.core.PublishError() != nil })
	a.core.Programmed(a.core.Table())
	if ok, why := a.Ready(); ok || why == "" {
		t.Errorf("Ready() = %v, %q while gossip refuses the backends", ok, why)
	}
	cl.net.mu.Lock()
	cl.refuse = nil
	cl.net.mu.Unlock()
	a.core.Kick()
	eventually(t, "published once gossip takes it", func() bool { return len(published(cl)) == 1 && a.core.PublishError() == nil })
	keys := []string{}
	for k := range published(cl) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if keys[0] != "10.0.0.1:80" {
		t.Errorf("published %v", keys)
	}
}

// A burst of cluster changes is applied in few rebuilds, and all of it is
// applied; a lone change on an idle core is applied without waiting for
// the interval.
func TestBurstsOfChangesAreMerged(t *testing.T) {
	var net fakeNet
	dns := &sink{}
	start := func(node string, cfg CoreConfig) (*Core, *fakeCluster) {
		cl := net.join(node)
		cfg.Node = node
		return startCore(t, cfg, cl), cl
	}
	_, _ = start("node1", CoreConfig{DNS: dns, MinRebuildInterval: 200 * time.Millisecond})
	other := net.join("node2")
	eventually(t, "first table", func() bool { return dns.count() > 0 })
	before := dns.count()
	// Changes a millisecond apart: each would find the core idle without
	// the interval.
	const n = 100
	for i := 0; i < n; i++ {
		time.Sleep(time.Millisecond)
		r := vip.Registration{VIP: vip.Spec{Protocol: vip.TCP, Addr: netip.MustParseAddr("11.9.9.9"), Port: 80},
			Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 80), Weight: 1, Health: vip.Healthy}
		if err := other.PublishDelta([]vip.Registration{r}, nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every change applied", func() bool {
		tab := dns.last()
		return len(tab.VIPs) == 1 && len(tab.VIPs[0].Backends) == n
	})
	if tables := dns.count() - before; tables > n/4 {
		t.Errorf("%d changes made %d tables: a burst must be merged", n, tables)
	}
	// Idle for longer than the interval: the next change goes through at
	// once, well before another interval.
	time.Sleep(300 * time.Millisecond)
	lone := vip.Registration{VIP: vip.Spec{Protocol: vip.TCP, Addr: netip.MustParseAddr("11.9.9.8"), Port: 80},
		Backend: netip.MustParseAddrPort("10.1.0.1:80"), Weight: 1, Health: vip.Healthy}
	sent := time.Now()
	if err := other.PublishDelta([]vip.Registration{lone}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lone change applied", func() bool { return len(dns.last().VIPs) == 2 })
	if d := time.Since(sent); d > 150*time.Millisecond {
		t.Errorf("a change on an idle core took %v, want no wait for the 200ms interval", d)
	}
}
