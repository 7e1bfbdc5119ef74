package agent

import (
	"io"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/gossip"
)

// TestJoinGraceCountsFromGossipStart: an agent with seeds whose gossip has
// not started yet (a slow setup before it) is not merged however long it
// has been running; once gossip started, it is after the grace without a
// seed, and not before.
func TestJoinGraceCountsFromGossipStart(t *testing.T) {
	l := logrus.New()
	l.Out = io.Discard
	c, err := gossip.New(gossip.Config{NodeName: "alone", BindAddr: "127.0.0.1", Logger: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	var started atomic.Int64
	merged := stateMerged(c, []string{"127.0.0.1:1"}, &started, 50*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // longer than the grace, gossip not started
	if ok, why := merged(); ok || why == "" {
		t.Fatalf("merged before gossip started: %v %q", ok, why)
	}
	started.Store(time.Now().UnixNano())
	if ok, _ := merged(); ok {
		t.Fatal("merged at once when gossip started, with no seed reached")
	}
	time.Sleep(100 * time.Millisecond)
	if ok, why := merged(); !ok {
		t.Fatalf("not merged after the grace from gossip's start: %q", why)
	}
	if ok, _ := stateMerged(c, nil, new(atomic.Int64), time.Hour)(); !ok {
		t.Error("an agent without seeds waits for a merge")
	}
}

// TestSeedsMissing: a seed is reached when a live (or suspect) member has
// its address; dead ones and other addresses do not count.
func TestSeedsMissing(t *testing.T) {
	ap := netip.MustParseAddrPort
	members := []gossip.Member{
		{Name: "a", Addr: ap("10.0.0.1:7946"), State: gossip.MemberAlive},
		{Name: "b", Addr: ap("10.0.0.2:7946"), State: gossip.MemberSuspect},
		{Name: "c", Addr: ap("10.0.0.3:7946"), State: gossip.MemberDead},
	}
	got := seedsMissing(members, []netip.AddrPort{ap("10.0.0.1:7946"), ap("10.0.0.2:7946"), ap("10.0.0.3:7946"), ap("10.0.0.1:7947")})
	if want := []string{"10.0.0.3:7946", "10.0.0.1:7947"}; !slices.Equal(got, want) {
		t.Errorf("seedsMissing = %v, want %v", got, want)
	}
}
