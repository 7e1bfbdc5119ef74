package gossip

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"
)

// dueByScan is the oracle of pullTargets: the wanted records that are due,
// of live members, and not yet held, found by a scan of every want (what
// pullTargets did before it skipped its scan until wantDue).
func dueByScan(s *store, now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, w := range s.want {
		if cur := s.records[name]; cur != nil && !cur.rec.version.Less(w.version) && !w.full {
			continue
		}
		m := s.members[name]
		if m == nil || (m.state != MemberAlive && m.state != MemberSuspect) || now.Before(w.notBefore) {
			continue
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestPullTargetsSkipEqualsScan: after any sequence of wants, joins,
// deaths, records arriving and pulls started, the targets pullTargets
// returns (scanning only once wantDue has come) are exactly those a full
// scan finds due.
func TestPullTargetsSkipEqualsScan(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := newStore("self")
		now := t0
		nodes := []string{"a", "b", "c", "d", "e"}
		gen := map[string]uint64{}
		seq := map[string]uint64{}
		for _, n := range nodes {
			gen[n] = 10
			s.join(n, net.IPv4(127, 0, 0, 9), 7946, encodeMeta(gen[n]), now, time.Second)
		}
		for step := range 120 {
			n := nodes[rng.IntN(len(nodes))]
			switch rng.IntN(9) {
			case 0, 1: // a notice or digest: a newer version, pulled after a grace
				seq[n] += uint64(1 + rng.IntN(3))
				s.mu.Lock()
				s.wantLocked(n, Version{gen[n], seq[n]}, now.Add(time.Duration(rng.IntN(3000))*time.Millisecond), false)
				s.mu.Unlock()
			case 2: // the record arrives
				s.merge(rec(n, gen[n], seq[n], fmt.Sprintf("10.0.0.%d:80", 1+rng.IntN(9))), now)
			case 3: // death (or leave)
				s.leave(n, now)
			case 6: // back: a false death refuted, or a restart (pulled after a grace, or not on the join)
				gen[n] += uint64(rng.IntN(2))
				grace := time.Duration(rng.IntN(2000)) * time.Millisecond
				if rng.IntN(3) == 0 {
					grace = -1
				}
				s.join(n, net.IPv4(127, 0, 0, 9), 7946, encodeMeta(gen[n]), now, grace)
			case 4: // a pull goes out for whatever is due
				for _, pt := range s.pullTargets(now) {
					s.pullStarted(pt.name, pt.version, now.Add(time.Second))
				}
			default: // time passes
				now = now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
			}
			want := dueByScan(s, now)
			var got []string
			for _, pt := range s.pullTargets(now) {
				got = append(got, pt.name)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d at +%v: pullTargets %v, a full scan finds %v due", seed, step, now.Sub(t0), got, want)
			}
		}
	}
}
