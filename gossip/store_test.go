package gossip

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/l4lb/l4lb/vip"
)

var t0 = time.Unix(1800000000, 0)

func rec(node string, gen, seq uint64, backends ...string) *record {
	r := &record{Node: node, Version: Version{gen, seq}}
	for _, b := range backends {
		r.Registrations = append(r.Registrations, reg("/app", 80, b))
	}
	r.Registrations = normalizeRegistrations(r.Registrations)
	return r
}

func joinMember(s *store, name string, gen uint64) {
	s.join(name, net.IPv4(127, 0, 0, 9), 7946, encodeMeta(gen), t0, time.Second)
}

func TestStoreMerge(t *testing.T) {
	type step struct {
		r    *record
		want mergeOutcome
	}
	cases := []struct {
		name    string
		memberG uint64 // generation the member announced; 0: not a member
		steps   []step
		// backends of "b" expected in state() at the end; nil means absent.
		final []string
	}{
		{"newer replaces older", 10, []step{
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeAccepted},
			{rec("b", 10, 2, "10.0.0.2:80"), outcomeAccepted},
		}, []string{"10.0.0.2:80"}},
		{"older never overwrites newer (out of order)", 10, []step{
			{rec("b", 10, 5, "10.0.0.5:80"), outcomeAccepted},
			{rec("b", 10, 4, "10.0.0.4:80"), outcomeStale},
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeStale},
		}, []string{"10.0.0.5:80"}},
		{"a deleted backend does not come back from an old message", 10, []step{
			{rec("b", 10, 1, "10.0.0.1:80", "10.0.0.2:80"), outcomeAccepted},
			{rec("b", 10, 2, "10.0.0.1:80"), outcomeAccepted},
			{rec("b", 10, 1, "10.0.0.1:80", "10.0.0.2:80"), outcomeStale},
		}, []string{"10.0.0.1:80"}},
		{"restart: new generation with a lower counter wins", 20, []step{
			{rec("b", 10, 99, "10.0.0.9:80"), outcomeStale}, // older than the announced generation
			{rec("b", 20, 1, "10.0.0.1:80"), outcomeAccepted},
			{rec("b", 10, 100, "10.0.0.9:80"), outcomeStale},
		}, []string{"10.0.0.1:80"}},
		{"duplicate", 10, []step{
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeAccepted},
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeDuplicate},
		}, []string{"10.0.0.1:80"}},
		// The winner is the record with the larger content sum
		// (TestConflictWinnerHasTheLargerSum checks which one that is).
		{"conflict keeps the same winner whatever the order (a then b)", 10, []step{
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeAccepted},
			{rec("b", 10, 1, "10.0.0.2:80"), outcomeConflict},
		}, []string{"10.0.0.1:80"}},
		{"conflict keeps the same winner whatever the order (b then a)", 10, []step{
			{rec("b", 10, 1, "10.0.0.2:80"), outcomeAccepted},
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeConflict},
		}, []string{"10.0.0.1:80"}},
		{"record of a node that is not a member is held but not shown", 0, []step{
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeAccepted},
		}, nil},
		{"leaving record empties the node", 10, []step{
			{rec("b", 10, 1, "10.0.0.1:80"), outcomeAccepted},
			{&record{Node: "b", Version: Version{10, 2}, Leaving: true}, outcomeAccepted},
		}, nil},
		{"records about this node are not merged", 10, []step{
			{rec("self", 1, 1, "10.0.0.1:80"), outcomeSelfOld},
			{rec("self", 5, 2, "10.0.0.1:80"), outcomeSelfNewer},
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore("self")
			s.setSelf(rec("self", 5, 1), t0)
			if tc.memberG != 0 {
				joinMember(s, "b", tc.memberG)
			}
			for i, st := range tc.steps {
				if got, _ := s.merge(st.r, t0); got != st.want {
					t.Fatalf("step %d: outcome %v, want %v", i, got, st.want)
				}
			}
			var got []string
			for _, n := range s.state() {
				if n.Node == "b" {
					got = []string{}
					for _, r := range n.Backends {
						got = append(got, r.Backend.String())
					}
				}
			}
			if (got == nil) != (tc.final == nil) || len(got) != len(tc.final) {
				t.Fatalf("state of b = %v, want %v", got, tc.final)
			}
			for i := range got {
				if got[i] != tc.final[i] {
					t.Fatalf("state of b = %v, want %v", got, tc.final)
				}
			}
		})
	}
}

func TestConflictWinnerHasTheLargerSum(t *testing.T) {
	a := fullDelta(rec("b", 10, 1, "10.0.0.1:80"), 0).Sum
	b := fullDelta(rec("b", 10, 1, "10.0.0.2:80"), 0).Sum
	if a <= b {
		t.Fatalf("sum of 10.0.0.1 %x, of 10.0.0.2 %x: TestStoreMerge expects the first to win", a, b)
	}
}

func TestStoreDeathHidesAndStaleDoesNotResurrect(t *testing.T) {
	s := newStore("self")
	s.setSelf(rec("self", 5, 1), t0)
	joinMember(s, "b", 10)
	s.merge(rec("b", 10, 3, "10.0.0.1:80"), t0)
	if !s.holds("b", Version{10, 3}) {
		t.Fatal("b not in state after merge")
	}
	if !s.leave("b", t0) {
		t.Fatal("leave of a visible node must report a change")
	}
	if _, ok := findNode(s.state(), "b"); ok {
		t.Fatal("dead node still in state")
	}
	// An old push/pull or a late broadcast about the dead node.
	s.merge(rec("b", 10, 2, "10.0.0.7:80"), t0)
	s.merge(rec("b", 10, 4, "10.0.0.8:80"), t0)
	if _, ok := findNode(s.state(), "b"); ok {
		t.Fatal("a message about a dead node resurrected it")
	}
	// A false death: the node refutes and comes back with its generation;
	// its newest record shows again at once.
	joinMember(s, "b", 10)
	if got, ok := findNode(s.state(), "b"); !ok || got[0].Backend.String() != "10.0.0.8:80" {
		t.Fatalf("refuted node state = %v %v", got, ok)
	}
	// A restart: the node rejoins with a new generation; its old record is
	// not shown, and a pull is wanted after the grace period.
	s.leave("b", t0)
	joinMember(s, "b", 20)
	if _, ok := findNode(s.state(), "b"); ok {
		t.Fatal("restarted node shows its previous life's record")
	}
	if got := s.pullTargets(t0); len(got) != 0 {
		t.Fatalf("pull before grace: %v", got)
	}
	if got := s.pullTargets(t0.Add(2 * time.Second)); len(got) != 1 || got[0].name != "b" {
		t.Fatalf("pull targets after grace = %v", got)
	}
	s.merge(rec("b", 20, 1, "10.0.0.9:80"), t0)
	if got := s.pullTargets(t0.Add(2 * time.Second)); len(got) != 0 {
		t.Fatalf("pull targets once the record came = %v", got)
	}
}

func TestStoreLeftVersusDead(t *testing.T) {
	s := newStore("self")
	s.setSelf(rec("self", 5, 1), t0)
	joinMember(s, "gone", 10)
	joinMember(s, "self", 5)
	joinMember(s, "crashed", 10)
	joinMember(s, "goodbye-first", 10)
	s.merge(&record{Node: "gone", Version: Version{10, 2}, Leaving: true}, t0)
	s.leave("gone", t0)
	s.leave("crashed", t0)
	// memberlist's goodbye may come before the leaving record.
	s.leave("goodbye-first", t0)
	s.merge(&record{Node: "goodbye-first", Version: Version{10, 2}, Leaving: true}, t0)
	// A record that is not a leaving one says nothing about how a node went.
	s.merge(rec("crashed", 10, 3, "10.0.0.1:80"), t0)
	got := map[string]MemberState{}
	for _, m := range s.memberList(t0) {
		got[m.Name] = m.State
	}
	want := map[string]MemberState{"gone": MemberLeft, "goodbye-first": MemberLeft, "crashed": MemberDead, "self": MemberAlive}
	for name, st := range want {
		if got[name] != st {
			t.Errorf("%s is %q, want %q", name, got[name], st)
		}
	}
	if d := s.deadMembers(); len(d) != 1 {
		t.Fatalf("reconnect targets = %v, want only the crashed node", d)
	}
	if n := s.sweep(t0.Add(time.Hour), 10*time.Minute); n != 3 {
		t.Fatalf("sweep forgot %d members, want 3", n)
	}
	if len(s.records) != 1 || len(s.members) != 1 {
		t.Fatalf("after sweep: %d records, %d members; want only this node's", len(s.records), len(s.members))
	}
}

// Property: whatever order a node's records arrive in, with duplicates, the
// store ends with the newest one.
func TestStoreOrderIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 300 {
		var recs []*record
		for seq := uint64(1); seq <= 12; seq++ {
			gen := uint64(10)
			if seq > 8 {
				gen = 11 // a restart part way
			}
			recs = append(recs, rec("b", gen, seq, randomBackend(r)))
		}
		newest := recs[len(recs)-1]
		msgs := append(append([]*record(nil), recs...), recs[r.IntN(len(recs))], recs[r.IntN(len(recs))])
		r.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		s := newStore("self")
		joinMember(s, "b", 10)
		for _, m := range msgs {
			s.merge(m, t0)
		}
		got, ok := findNode(s.state(), "b")
		if !ok || !equalRegistrations(got, newest.Registrations) {
			t.Fatalf("trial %d: state %v, want %v", trial, got, newest.Registrations)
		}
	}
}

func randomBackend(r *rand.Rand) string {
	return net.IPv4(10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1+r.IntN(250))).String() + ":80"
}

func findNode(cs vip.ClusterState, node string) ([]vip.Registration, bool) {
	for _, n := range cs {
		if n.Node == node {
			return n.Backends, true
		}
	}
	return nil, false
}
