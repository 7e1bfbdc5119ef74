package agent

import (
	"io"
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
	merged := stateMerged(c, true, &started, 50*time.Millisecond)
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
	if ok, _ := stateMerged(c, false, new(atomic.Int64), time.Hour)(); !ok {
		t.Error("an agent without seeds waits for a merge")
	}
}
