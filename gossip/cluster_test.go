package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

func TestPublishConverges(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 5, nil)
	want := map[string][]vip.Registration{}
	for i, n := range nodes {
		regs := []vip.Registration{reg("/app", 80, fmt.Sprintf("10.0.0.%d:8080", i+1))}
		n.c.Publish(regs)
		want[n.name] = regs
	}
	for _, n := range nodes {
		waitForNoFatal(t, 20*time.Second, n.name+" to hold every record", func() bool {
			for node, regs := range want {
				if !holdsExactly(n.c, node, regs) {
					return false
				}
			}
			return len(n.c.State()) == len(nodes)
		})
		if t.Failed() {
			t.Logf("%s members %+v", n.name, n.c.Members())
			t.Logf("%s stats %+v", n.name, n.c.Stats())
		}
	}
}

func TestPublishIsIdempotent(t *testing.T) {
	c, err := New(Config{NodeName: "a", Transport: memnet.New().NewTransport()})
	if err != nil {
		t.Fatal(err)
	}
	regs := []vip.Registration{reg("/a", 80, "10.0.0.2:80"), reg("/a", 80, "10.0.0.1:80")}
	c.Publish(regs)
	v := c.store.selfRecord().Version
	c.Publish([]vip.Registration{regs[1], regs[0]}) // same set, other order
	if got := c.store.selfRecord().Version; got != v {
		t.Fatalf("republishing the same set moved the version %v -> %v", v, got)
	}
	c.Publish(regs[:1])
	if got := c.store.selfRecord().Version; got.Seq != v.Seq+1 || got.Generation != v.Generation {
		t.Fatalf("a change moved the version %v -> %v, want seq+1", v, got)
	}
	if !holdsExactly(c, "a", regs[:1]) {
		t.Fatalf("state before Start = %+v", c.State())
	}
}

func TestConfigErrors(t *testing.T) {
	tr := memnet.New().NewTransport()
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Transport: tr}, "node name"},
		{"no bind address", Config{NodeName: "a"}, "bind address"},
		{"encryption required without key", Config{NodeName: "a", Transport: tr, RequireEncryption: true}, ErrNoKey.Error()},
		{"bad key length", Config{NodeName: "a", Transport: tr, Keys: [][]byte{make([]byte, 7)}}, "key"},
		{"label too long", Config{NodeName: "a", Transport: tr, Label: string(make([]byte, 300))}, "label"},
		{"probe timeout not below interval", Config{NodeName: "a", Transport: tr, Timing: Timing{ProbeInterval: time.Second, ProbeTimeout: time.Second}}, "probe timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{NodeName: "a", Transport: tr, RequireEncryption: true}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("RequireEncryption without key: %v, want ErrNoKey", err)
	}
}

func TestUnencryptedStartWarns(t *testing.T) {
	n := startMem(t, memnet.New(), "a", nil)
	found := false
	for _, e := range n.hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "NOT encrypted") {
			found = true
		}
	}
	if !found {
		t.Fatal("no warning about unencrypted gossip at start")
	}
	k := startMem(t, memnet.New(), "b", func(c *Config) { c.Keys = [][]byte{key(1)} })
	for _, e := range k.hook.AllEntries() {
		if strings.Contains(e.Message, "NOT encrypted") {
			t.Fatal("encrypted node warned about missing encryption")
		}
	}
}

// Over real UDP/TCP sockets on 127.0.0.0/8: a node whose seed is not up
// yet keeps retrying, works alone meanwhile, and joins once the seed starts.
func TestJoinRetriesUntilSeedStarts(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	seedAddr := net.JoinHostPort("127.0.0.2", strconv.Itoa(port))
	logger, _ := testLogger()
	late, err := New(Config{NodeName: "late", BindAddr: "127.0.0.3", BindPort: 0, Join: []string{seedAddr}, Logger: logger,
		Timing: Timing{JoinRetryMin: 100 * time.Millisecond, JoinRetryMax: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := late.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = late.Shutdown() })
	late.Publish([]vip.Registration{reg("/a", 80, "10.0.0.3:80")})
	time.Sleep(500 * time.Millisecond) // several failed attempts
	if got := late.State(); len(got) != 1 || got[0].Node != "late" {
		t.Fatalf("alone, state = %+v", got)
	}

	seed, err := New(Config{NodeName: "seed", BindAddr: "127.0.0.2", BindPort: port, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = seed.Shutdown() })
	seed.Publish([]vip.Registration{reg("/a", 80, "10.0.0.2:80")})
	for _, c := range []*Cluster{seed, late} {
		waitFor(t, 10*time.Second, "both nodes in state", func() bool {
			return holdsExactly(c, "seed", []vip.Registration{reg("/a", 80, "10.0.0.2:80")}) &&
				holdsExactly(c, "late", []vip.Registration{reg("/a", 80, "10.0.0.3:80")})
		})
	}
	if s := seed.Stats(); s.WireBytesReceived == 0 || s.WireBytesSent == 0 || s.MessagesReceived == 0 {
		t.Fatalf("transport counters did not move: %+v", s)
	}
}

func TestDeathRemovesBackendsEverywhere(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, nil)
	for i, n := range nodes {
		n.c.Publish([]vip.Registration{reg("/app", 80, fmt.Sprintf("10.0.0.%d:80", i+1))})
	}
	victim := nodes[2]
	for _, n := range nodes[:2] {
		waitFor(t, 10*time.Second, "victim's backends to arrive", func() bool {
			_, ok := nodeBackends(n.c, victim.name)
			return ok
		})
	}
	if err := victim.c.Shutdown(); err != nil { // no goodbye
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		waitFor(t, 10*time.Second, "victim's backends to leave "+n.name, func() bool {
			_, ok := nodeBackends(n.c, victim.name)
			return !ok
		})
		if got := memberState(n.c, victim.name); got != MemberDead {
			t.Fatalf("%s sees the victim as %q, want dead", n.name, got)
		}
	}
	// The survivors still hold each other.
	for _, n := range nodes[:2] {
		if len(n.c.State()) != 2 {
			t.Fatalf("%s state = %+v", n.name, n.c.State())
		}
	}
}

// A node that leaves says goodbye: the others mark it left (failure
// detection would mark it dead) and drop its backends at once. How fast is
// a figure for the benchmarks; here a busy machine must not fail the test.
func TestGracefulLeaveIsALeaveNotADeath(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 3, nil)
	leaver := nodes[2]
	leaver.c.Publish([]vip.Registration{reg("/app", 80, "10.0.0.3:80")})
	for _, n := range nodes[:2] {
		waitFor(t, 10*time.Second, "leaver's backends to arrive", func() bool {
			_, ok := nodeBackends(n.c, leaver.name)
			return ok
		})
	}
	start := time.Now()
	if err := leaver.c.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		waitFor(t, 10*time.Second, "leaver's backends to leave "+n.name, func() bool {
			_, ok := nodeBackends(n.c, leaver.name)
			return !ok
		})
		// The goodbye and the leaving record may arrive in either order.
		waitFor(t, 2*time.Second, n.name+" to see the leaver as left (a goodbye, not a failure)", func() bool {
			return memberState(n.c, leaver.name) == MemberLeft
		})
	}
	t.Logf("leave propagated in %v", time.Since(start))
}

// TestWholeClusterLeavingAtOnceDoesNotWait stops every node at the same
// time, as an operator stopping the cluster would: once no live peer is
// left to tell, Leave returns at once instead of waiting out its timeout
// for a goodbye nobody can hear, and a node does not report itself as a
// member gone.
func TestWholeClusterLeavingAtOnceDoesNotWait(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 2, nil)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.name+" to see its peer", func() bool { return n.c.store.livePeerCount() == 1 })
	}
	const timeout = 5 * time.Second
	start := time.Now()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.c.Leave(timeout) }()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Errorf("leave: %v", err)
		}
	}
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("leaving took %v: the nodes waited for a goodbye nobody could hear (timeout %v)", took, timeout)
	}
	for _, n := range nodes {
		for _, e := range n.hook.AllEntries() {
			if e.Data["peer"] == n.name {
				t.Errorf("%s logged about itself as a peer: %q", n.name, e.Message)
			}
		}
	}
}
