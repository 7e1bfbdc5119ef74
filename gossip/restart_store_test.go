package gossip

import (
	"testing"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// TestStoreRestartRules checks, on the store alone, what peers do with a
// node that announced a restart: the member state, what State() shows and
// what TakeChanges reports, step by step.
func TestStoreRestartRules(t *testing.T) {
	const grace = 30 * time.Second
	restarting := func(r *record) *record { r.Restarting = true; return r }
	gone := t0.Add(time.Second)
	type check struct {
		state   MemberState
		shown   []string // b's backends in State(); nil: absent
		set     int      // registrations of b in this TakeChanges' Set
		removed int      // keys of b in this TakeChanges' Removed
	}
	cases := []struct {
		name  string
		steps []func(s *store)
		want  []check // after each step
	}{
		{"dead after a restart announcement: kept for the grace, then removed",
			[]func(s *store){
				func(s *store) { s.merge(restarting(rec("b", 10, 2, "10.0.0.1:80", "10.0.0.2:80")), t0) },
				func(s *store) { s.leave("b", gone) },
				func(s *store) { s.expireRestarts(gone.Add(grace-time.Nanosecond), grace) },
				func(s *store) { s.expireRestarts(gone.Add(grace), grace) },
			},
			[]check{
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberDead, nil, 0, 2},
			}},
		{"dead without the flag: removed at once",
			[]func(s *store){func(s *store) { s.leave("b", gone) }},
			[]check{{MemberDead, nil, 0, 2}}},
		{"leaving: removed at once, left",
			[]func(s *store){
				func(s *store) { s.merge(&record{Node: "b", Version: Version{10, 2}, Leaving: true}, t0) },
				func(s *store) { s.leave("b", gone) },
			},
			[]check{{MemberAlive, nil, 0, 2}, {MemberLeft, nil, 0, 0}}},
		{"back with a new generation: old record until the new one, then only the differences",
			[]func(s *store){
				func(s *store) { s.merge(restarting(rec("b", 10, 2, "10.0.0.1:80", "10.0.0.2:80")), t0) },
				func(s *store) { s.leave("b", gone) },
				func(s *store) { joinMember(s, "b", 20) },
				func(s *store) { s.merge(rec("b", 20, 1, "10.0.0.1:80", "10.0.0.3:80"), t0) },
				func(s *store) { s.expireRestarts(gone.Add(2*grace), grace) },
			},
			[]check{
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.3:80"}, 1, 1},
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.3:80"}, 0, 0},
			}},
		{"the new generation's record before memberlist reports it alive",
			[]func(s *store){
				func(s *store) { s.merge(restarting(rec("b", 10, 2, "10.0.0.1:80", "10.0.0.2:80")), t0) },
				func(s *store) { s.leave("b", gone) },
				func(s *store) { s.merge(rec("b", 20, 1, "10.0.0.1:80", "10.0.0.2:80"), t0) },
				func(s *store) { joinMember(s, "b", 20) },
			},
			[]check{
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
			}},
		{"back, then dead before its new record: dead at once",
			[]func(s *store){
				func(s *store) { s.merge(restarting(rec("b", 10, 2, "10.0.0.1:80", "10.0.0.2:80")), t0) },
				func(s *store) { s.leave("b", gone) },
				func(s *store) { joinMember(s, "b", 20) },
				func(s *store) { s.leave("b", gone.Add(time.Second)) },
			},
			[]check{
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberDead, nil, 0, 2},
			}},
		{"the announcement after the death: restarting from then",
			[]func(s *store){
				func(s *store) { s.leave("b", gone) },
				func(s *store) { s.merge(restarting(rec("b", 10, 2, "10.0.0.1:80", "10.0.0.2:80")), gone) },
			},
			[]check{
				{MemberDead, nil, 0, 2},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 2, 0},
			}},
		{"missed announcement applied from a digest",
			[]func(s *store){
				func(s *store) {
					sum := s.records["b"].rec.sum
					s.noteDigest([]digestEntry{{Node: "b", Version: Version{10, 5}, Restarting: true, Sum: sum}}, t0, time.Second)
				},
				func(s *store) { s.leave("b", gone) },
			},
			[]check{
				{MemberAlive, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
				{MemberRestarting, []string{"10.0.0.1:80", "10.0.0.2:80"}, 0, 0},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore("self")
			joinMember(s, "b", 10)
			s.merge(rec("b", 10, 1, "10.0.0.1:80", "10.0.0.2:80"), t0)
			s.takeChanges()
			for i, step := range tc.steps {
				step(s)
				want := tc.want[i]
				var got MemberState
				for _, m := range s.memberList(t0) {
					if m.Name == "b" {
						got = m.State
					}
				}
				if got != want.state {
					t.Errorf("step %d: state %s, want %s", i, got, want.state)
				}
				var shown []vip.Registration
				present := false
				for _, n := range s.state() {
					if n.Node == "b" {
						shown, present = n.Backends, true
					}
				}
				if want.shown == nil {
					if present {
						t.Errorf("step %d: b shown with %v", i, shown)
					}
				} else if !equalRegistrations(shown, rec("b", 1, 1, want.shown...).Registrations) {
					t.Errorf("step %d: b shows %v, want %v (present %v)", i, shown, want.shown, present)
				}
				var set, removed int
				for _, nd := range s.takeChanges() {
					if nd.Node == "b" {
						set, removed = len(nd.Set), len(nd.Removed)
					}
				}
				if set != want.set || removed != want.removed {
					t.Errorf("step %d: TakeChanges set %d removed %d, want %d and %d", i, set, removed, want.set, want.removed)
				}
			}
		})
	}
}

// A restarting record of a node this node has no member for (it joined
// while that node was gone) makes it a restarting member, shown, for the
// grace from then.
func TestStoreRestartingRecordOfUnknownMember(t *testing.T) {
	const grace = 30 * time.Second
	s := newStore("self")
	s.takeChanges()
	r := rec("b", 10, 4, "10.0.0.1:80")
	r.Restarting = true
	s.merge(r, t0)
	if st := storeMemberState(s, "b"); st != MemberRestarting {
		t.Fatalf("state %q, want restarting", st)
	}
	if ch := s.takeChanges(); len(ch) != 1 || len(ch[0].Set) != 1 {
		t.Fatalf("TakeChanges %v, want b's one registration", ch)
	}
	if s.expireRestarts(t0.Add(grace-time.Nanosecond), grace) != 0 {
		t.Fatal("expired before the grace")
	}
	if s.expireRestarts(t0.Add(grace), grace) != 1 {
		t.Fatal("not expired after the grace")
	}
	if ch := s.takeChanges(); len(ch) != 1 || len(ch[0].Removed) != 1 {
		t.Fatalf("TakeChanges %v, want b's key removed", ch)
	}
	if got := s.deadMembers(); len(got) != 0 {
		t.Errorf("reconnect targets %v: a member never seen has no address", got)
	}
}

func storeMemberState(s *store, name string) MemberState {
	for _, m := range s.memberList(t0) {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}
