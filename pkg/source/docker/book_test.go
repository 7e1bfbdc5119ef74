package docker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// TestBookIncrementalEqualsRebuild: after any sequence of containers set
// and removed, the published set kept by difference equals a rebuild from
// scratch, and the changes commit reported, applied in order to what the
// consumer had, give the same set.
func TestBookIncrementalEqualsRebuild(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 42))
		b := newBook()
		consumer := map[string]Backend{}
		ids := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
		for step := range 60 {
			id := ids[rng.IntN(len(ids))]
			if rng.IntN(4) == 0 {
				b.remove(id)
			} else {
				b.set(randomEntry(rng, id))
			}
			if rng.IntN(3) == 0 || step == 59 {
				set, removed := b.commit()
				for _, k := range removed {
					if _, ok := consumer[k]; !ok {
						t.Fatalf("seed %d step %d: removed %s, which the consumer does not have", seed, step, k)
					}
					delete(consumer, k)
				}
				for _, be := range set {
					if old, ok := consumer[be.Key()]; ok && old == be {
						t.Fatalf("seed %d step %d: reported %s unchanged", seed, step, be.Key())
					}
					consumer[be.Key()] = be
				}
				want := b.rebuild()
				if fmt.Sprint(want) != fmt.Sprint(b.published) {
					t.Fatalf("seed %d step %d: incremental\n%v\nrebuild\n%v", seed, step, b.published, want)
				}
				if fmt.Sprint(want) != fmt.Sprint(consumer) {
					t.Fatalf("seed %d step %d: consumer has\n%v\nwant\n%v", seed, step, consumer, want)
				}
			}
		}
	}
}

// randomEntry gives container id a few backends drawn from a small pool,
// so that containers often give the same key and names sometimes change.
func randomEntry(rng *rand.Rand, id string) *entry {
	e := &entry{id: id, name: fmt.Sprintf("n%d", rng.IntN(4))}
	seen := map[string]bool{}
	for range rng.IntN(4) {
		spec := vip.Spec{Protocol: vip.TCP, Name: fmt.Sprintf("/app%d", rng.IntN(3)), Port: 80}
		l := source.Local{VIP: spec, Framework: vip.DefaultFramework, Backend: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(8000+rng.IntN(3))),
			Weight: uint32(rng.IntN(2)), Scheduler: vip.DefaultScheduler}
		if seen[l.Key()] {
			continue
		}
		seen[l.Key()] = true
		h := []vip.Health{"", vip.Healthy, vip.Unhealthy}[rng.IntN(3)]
		e.backends = append(e.backends, Backend{Local: l, Container: e.name, ContainerID: id, Health: h})
	}
	return e
}
