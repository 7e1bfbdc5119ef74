package gossip

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

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

// TestPeersJoiningAndLeavingAreLoggedOnce: at info level a node logs each
// peer's join once and its departure once, saying whether it left or
// failed, and nothing of memberlist's own wording.
func TestPeersJoiningAndLeavingAreLoggedOnce(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, nil)
	a, leaver, dier := nodes[0], nodes[1], nodes[2]
	waitFor(t, 10*time.Second, "every node alive", func() bool {
		return memberState(a.c, leaver.name) == MemberAlive && memberState(a.c, dier.name) == MemberAlive
	})
	if err := leaver.c.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	cut := dier.tr.Addr()
	net.SetCut(func(from, to string) bool { return from == cut || to == cut })
	waitFor(t, 20*time.Second, "both gone", func() bool {
		return memberState(a.c, leaver.name) == MemberLeft && memberState(a.c, dier.name) == MemberDead
	})
	count := map[string]int{}
	for _, e := range a.hook.AllEntries() {
		if e.Data["source"] == "memberlist" && e.Level >= logrus.InfoLevel {
			t.Errorf("memberlist's own line at %s: %q", e.Level, e.Message)
		}
		peer, _ := e.Data["peer"].(string)
		reason, _ := e.Data["reason"].(string)
		count[peer+" "+e.Message+" "+reason]++
	}
	for _, want := range []string{
		leaver.name + " member joined ",
		dier.name + " member joined ",
		leaver.name + " member gone; its backends leave the cluster state left",
		// The dial that confirms the death fails on the cut link.
		dier.name + " member gone; its backends leave the cluster state failed, and its gossip port: ",
	} {
		n := 0
		for line, k := range count {
			if strings.HasPrefix(line, want) {
				n += k
			}
		}
		if n != 1 {
			t.Errorf("%q logged %d times, want once; all: %v", want, n, count)
		}
	}
}
