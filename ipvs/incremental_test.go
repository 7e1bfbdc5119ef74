package ipvs

import (
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// TestIncrementalPlanEqualsFullDiff drives two reconcilers with the same
// random sequence of tables: one gets tables derived from each other (it
// plans only the keys that ChangedSince names), the other copies that
// descend from nothing (it diffs the whole table). After every step both
// kernels must hold the same services, real servers and addresses.
func TestIncrementalPlanEqualsFullDiff(t *testing.T) {
	for seed := int64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewSource(seed))
		// Both are public nodes: the public services follow the same
		// tables (incremental expansion against a rebuild each time).
		public := func(c *Config) { c.PublicAddrs = testPublicAddrs }
		inc := newFixture(t, nil, public)
		full := newFixture(t, nil, public)
		cur := vip.Derive(nil, nil, nil, nil)
		for step := 0; step < 60; step++ {
			vips := slices.Clone(cur.VIPs)
			var changed []vip.ServiceKey
			for n := rng.Intn(4) + 1; n > 0; n-- {
				vips, changed = mutate(rng, vips, changed)
			}
			slices.SortFunc(vips, func(a, b vip.VIP) int { return vip.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
			next := vip.Derive(cur, vips, nil, changed)
			if _, ok := next.ChangedSince(cur); !ok {
				t.Fatal("a derived table must say what changed")
			}
			inc.apply(next, false)
			full.apply(&vip.Table{VIPs: slices.Clone(vips)}, false)
			if a, b := inc.state(), full.state(); !reflect.DeepEqual(a, b) {
				t.Fatalf("seed %d step %d: incremental kernel\n%v\nfull diff kernel\n%v", seed, step, a, b)
			}
			if a, b := inc.addrs(), full.addrs(); !reflect.DeepEqual(a, b) {
				t.Fatalf("seed %d step %d: addresses %v, full diff %v", seed, step, a, b)
			}
			cur = next
			// Time passes so that drains end the same way in both.
			inc.clock.Step(20 * time.Second)
			full.clock.Step(20 * time.Second)
		}
	}
}

// mutate adds, removes or changes one VIP of vips and notes its key.
func mutate(rng *rand.Rand, vips []vip.VIP, changed []vip.ServiceKey) ([]vip.VIP, []vip.ServiceKey) {
	proto := []string{"tcp", "udp"}[rng.Intn(2)]
	key := fmt.Sprintf("%s 11.0.0.%d:%d", proto, 1+rng.Intn(4), 80+rng.Intn(2))
	var backends []string
	for n := rng.Intn(4); n > 0; n-- {
		backends = append(backends, fmt.Sprintf("10.1.0.%d:8080", 1+rng.Intn(5)))
	}
	slices.Sort(backends)
	backends = slices.Compact(backends)
	v := vipOf(key, backends...)
	for i := range v.Backends {
		v.Backends[i].Weight = uint32(rng.Intn(3))
	}
	v.PublicPort = []uint16{0, 0, 10000, 80}[rng.Intn(4)]
	i := slices.IndexFunc(vips, func(x vip.VIP) bool { return x.ServiceKey == v.ServiceKey })
	switch {
	case i >= 0 && rng.Intn(3) == 0:
		vips = slices.Delete(vips, i, i+1)
	case i >= 0:
		vips[i] = v
	default:
		vips = append(vips, v)
	}
	return vips, append(changed, v.ServiceKey)
}
