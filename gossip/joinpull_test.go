package gossip

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// lossyTransport is a memnet transport whose outgoing packets (UDP:
// probes, gossip) are dropped while drop is set; its streams (TCP: the
// join exchange, pulls) still work.
type lossyTransport struct {
	*memnet.Transport
	drop atomic.Bool
}

func (t *lossyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.drop.Load() {
		return time.Now(), nil
	}
	return t.Transport.WriteTo(b, addr)
}

func (t *lossyTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// A member that joins a cluster of 50 while its gossip is lost (so that
// every node learns of it from memberlist, and none gets its record from
// gossip) is pulled by a few nodes, not by all 50: joinPullers in
// expectation. When every node pulled a joiner whose gossip was slower
// than PullGrace, a join cost N pulls, and building a one-process cluster
// of 1,000 nodes stalled under 700,000 of them.
func TestJoinIsPulledByAFewNodes(t *testing.T) {
	const n = 50
	net := memnet.New()
	nodes := startMemCluster(t, net, n, nil)
	for i, m := range nodes {
		m.c.Publish([]vip.Registration{benchReg(i, 0)})
	}
	waitFor(t, 60*time.Second, "the cluster of 50 to converge", func() bool { return converged(nodes) })

	tr := &lossyTransport{Transport: net.NewTransport()}
	tr.drop.Store(true)
	logger, _ := testLogger()
	j, err := New(Config{NodeName: "joiner", Join: []string{nodes[7].tr.Addr()}, Logger: logger, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	regs := []vip.Registration{benchReg(n, 0)}
	j.Publish(regs)
	var pullsBefore uint64
	for _, m := range nodes {
		pullsBefore += m.c.Stats().PullsSent
	}
	if err := j.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Shutdown() })
	waitFor(t, 30*time.Second, "every node to see the joiner alive", func() bool {
		for _, m := range nodes {
			if m.c.store.stateOf("joiner") != MemberAlive {
				return false
			}
		}
		return true
	})
	// Every pull on the join is due by now (PullGrace after memberlist
	// reported the joiner), and has had time to be answered.
	time.Sleep(LANTiming().PullGrace + 2*time.Second)
	served := j.Stats().PullsServed
	var pulls uint64
	for _, m := range nodes {
		pulls += m.c.Stats().PullsSent
	}
	pulls -= pullsBefore
	tr.drop.Store(false)
	// Its gossip flows again: its next publication reaches every node.
	regs = append(regs, benchReg(n, 1))
	j.Publish(regs)
	waitFor(t, 30*time.Second, "every node to hold the joiner's record", func() bool {
		for _, m := range nodes {
			if !holdsExactly(m.c, "joiner", regs) {
				return false
			}
		}
		return true
	})
	t.Logf("the joiner served %d pulls, the %d nodes sent %d", served, n, pulls)
	// Who pulls is a hash of the names with N: joinPullers in
	// expectation; a push/pull digest may add one.
	if limit := uint64(3 * joinPullers); served > limit || pulls > limit {
		t.Fatalf("a join cost %d pulls sent, %d served in a cluster of %d, want at most %d", pulls, served, n, limit)
	}
}

// store.join wants a member's record of its generation from now + the
// grace, or not at all with a negative grace; a version already wanted
// (from a notice, say) stays wanted either way.
func TestJoinWantsTheRecordUnlessToldNot(t *testing.T) {
	ip := net.IPv4(127, 0, 0, 9)
	for _, tc := range []struct {
		name     string
		noticed  bool // a notice of seq 5 came before the join
		grace    time.Duration
		want     bool
		wantSeq  uint64
		wantFrom time.Time
	}{
		{"grace: wanted after it", false, time.Second, true, 0, t0.Add(time.Second)},
		{"negative: not wanted", false, -1, false, 0, time.Time{}},
		{"negative, noticed before: still wanted", true, -1, true, 5, t0},
		{"grace, noticed before: the noticed version", true, time.Second, true, 5, t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore("self")
			if tc.noticed {
				s.noteVersion("m", Version{Generation: 7, Seq: 5}, t0)
			}
			s.join("m", ip, 7946, encodeMeta(7), t0, tc.grace)
			s.mu.Lock()
			w, ok := s.want["m"]
			s.mu.Unlock()
			if ok != tc.want {
				t.Fatalf("wanted: %v, want %v", ok, tc.want)
			}
			if ok && (w.version != Version{Generation: 7, Seq: tc.wantSeq} || !w.notBefore.Equal(tc.wantFrom)) {
				t.Fatalf("want %+v, want version 7/%d from %v", w, tc.wantSeq, tc.wantFrom)
			}
		})
	}
}
