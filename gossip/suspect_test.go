package gossip

import (
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
)

// TestSuspicionFromMemberlistItself pins the one place memberlist reports
// that its failure detector suspects a peer: a log line (log.go,
// suspectPrefix and suspectSuffix). A peer cut off from the network must
// show as MemberSuspect before it is declared dead; if memberlist changes
// its wording, this test fails instead of suspicion silently going unseen.
func TestSuspicionFromMemberlistItself(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, nil)
	a, gone := nodes[0], nodes[2]
	waitFor(t, 10*time.Second, "every node alive", func() bool {
		return memberState(a.c, gone.name) == MemberAlive
	})
	cut := gone.tr.Addr()
	net.SetCut(func(from, to string) bool { return from == cut || to == cut })

	var seen []MemberState
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		s := memberState(a.c, gone.name)
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
		if s == MemberSuspect {
			return
		}
		if s == MemberDead {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s went through %v without ever being suspect: memberlist's suspicion log line (%q ... %q) may have changed", gone.name, seen, suspectPrefix, suspectSuffix)
}
