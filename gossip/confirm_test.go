package gossip

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// logged says whether hook holds an entry about peer whose message starts
// with msg and whose reason (if want is not empty) contains want.
func logged(hook *test.Hook, peer, msg, want string) bool {
	for _, e := range hook.AllEntries() {
		p, _ := e.Data["peer"].(string)
		r, _ := e.Data["reason"].(string)
		if p == peer && strings.HasPrefix(e.Message, msg) && strings.Contains(r, want) {
			return true
		}
	}
	return false
}

// starvedCluster is three memnet nodes; the last publishes one backend,
// which the first holds.
func starvedCluster(t *testing.T, tweak func(*Config)) (*memnet.Network, *memNode, *memNode, vip.Registration) {
	t.Helper()
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, tweak)
	a, c := nodes[0], nodes[2]
	r := reg("/starved", 80, "10.0.0.3:8080")
	if err := c.c.PublishDelta([]vip.Registration{r}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node-00 holds node-02's backend", func() bool {
		regs, ok := nodeBackends(a.c, c.name)
		return ok && len(regs) == 1
	})
	return net, a, c, r
}

// TestStarvedMemberKeepsItsBackends: a member whose process gets no CPU
// for longer than the suspicion (its packets dropped, its kernel still
// accepting connections) is declared dead by memberlist, but the dial of
// its gossip port connects: its backend never leaves another node's
// State(), it shows as suspect, and it is alive again once it runs.
func TestStarvedMemberKeepsItsBackends(t *testing.T) {
	net, a, c, _ := starvedCluster(t, nil)
	net.Stall(c.tr.Addr(), true)
	stalled := time.Now()
	declared := false
	for !declared || !logged(a.hook, c.name, "member declared failed answers on its gossip port", "") {
		if _, ok := nodeBackends(a.c, c.name); !ok {
			t.Fatalf("%v after the stall, node-02's backend left node-00's state", time.Since(stalled))
		}
		if s := memberState(a.c, c.name); s != MemberAlive && s != MemberSuspect {
			t.Fatalf("node-02 is %q on node-00, want alive or suspect", s)
		}
		declared = declared || logged(a.hook, c.name, "member declared failed by the failure detector", "")
		if time.Since(stalled) > 15*time.Second {
			t.Fatalf("no declared death within 15 s of the stall (declared: %v)", declared)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := memberState(a.c, c.name); s != MemberSuspect {
		t.Errorf("node-02 declared failed and answering is %q, want suspect", s)
	}
	t.Logf("declared failed and found answering %v after the stall", time.Since(stalled).Round(time.Millisecond))
	net.Stall(c.tr.Addr(), false)
	waitFor(t, 15*time.Second, "node-02 alive again on node-00", func() bool {
		if _, ok := nodeBackends(a.c, c.name); !ok {
			t.Fatalf("node-02's backend left node-00's state after the stall ended")
		}
		return memberState(a.c, c.name) == MemberAlive && !a.c.store.unconfirmed(c.name)
	})
	if logged(a.hook, c.name, "member gone", "") {
		t.Error("node-00 logged node-02 gone")
	}
}

// TestStalledPastTheReprieveIsDead: a member that answers on its port but
// not to probes for longer than DeathReprieve is dead then, and its
// backend leaves.
func TestStalledPastTheReprieveIsDead(t *testing.T) {
	net, a, c, _ := starvedCluster(t, func(cfg *Config) { cfg.Timing.DeathReprieve = 2 * time.Second })
	net.Stall(c.tr.Addr(), true)
	waitFor(t, 20*time.Second, "node-02 out of node-00's state", func() bool {
		_, ok := nodeBackends(a.c, c.name)
		return !ok
	})
	if s := memberState(a.c, c.name); s != MemberDead {
		t.Errorf("node-02 is %q on node-00, want dead", s)
	}
	if !logged(a.hook, c.name, "member gone", "accepts connections but it has answered no probe for 2s") {
		t.Errorf("no log line saying the reprieve ran out: %v", a.hook.AllEntries())
	}
}

// TestDeadMemberIsConfirmedByARefusedDial: a member whose process is gone
// (its port refuses) is dead as soon as memberlist declares it: the dial
// is refused, the reprieve is not waited for.
func TestDeadMemberIsConfirmedByARefusedDial(t *testing.T) {
	_, a, c, _ := starvedCluster(t, func(cfg *Config) { cfg.Timing.DeathReprieve = time.Minute })
	if err := c.tr.Shutdown(); err != nil { // as SIGKILL: no goodbye, the port closed
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 20*time.Second, "node-02 out of node-00's state", func() bool {
		_, ok := nodeBackends(a.c, c.name)
		return !ok
	})
	if !logged(a.hook, c.name, "member gone", "connection refused") {
		t.Errorf("the death was not confirmed by the refused dial: %v", a.hook.AllEntries())
	}
	t.Logf("out %v after the process went", time.Since(start).Round(time.Millisecond))
}

// TestDeathCheckOff: with DeathReprieve < 0 a declared death is final at
// once, without a dial.
func TestDeathCheckOff(t *testing.T) {
	net, a, c, _ := starvedCluster(t, func(cfg *Config) { cfg.Timing.DeathReprieve = -1 })
	net.Stall(c.tr.Addr(), true)
	waitFor(t, 20*time.Second, "node-02 out of node-00's state", func() bool {
		_, ok := nodeBackends(a.c, c.name)
		return !ok
	})
	if logged(a.hook, c.name, "member declared failed by the failure detector", "") {
		t.Error("a death was checked with the check off")
	}
}
