package gossip

import (
	"log"
	"net"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestMemberlistLogLevelsSuspicionAndRateLimit(t *testing.T) {
	entry, hook := testLogger()
	entry.Logger.SetLevel(logrus.DebugLevel)
	var c counters
	var suspected []string
	w := &memberlistLog{log: entry, limit: newLogLimiter(3, time.Hour), counters: &c,
		onSuspect: func(n string) { suspected = append(suspected, n) }}
	l := log.New(w, "", log.LstdFlags)
	l.Printf("[DEBUG] memberlist: Failed UDP ping: b (timeout reached)")
	l.Printf("[INFO] memberlist: Suspect node-b has failed, no acks received")
	for range 5 {
		l.Printf("[ERR] memberlist: Decrypt packet failed: no installed keys could decrypt the message from: 127.0.0.9:7946")
	}
	entries := hook.AllEntries()
	levels := map[logrus.Level]int{}
	for _, e := range entries {
		levels[e.Level]++
	}
	if levels[logrus.DebugLevel] != 2 || levels[logrus.InfoLevel] != 0 {
		t.Fatalf("levels %v: want memberlist's debug and info lines at debug (the gossip package logs the events itself)", levels)
	}
	if levels[logrus.ErrorLevel] != 3 {
		t.Fatalf("%d error lines let through, want 3 (rate limit)", levels[logrus.ErrorLevel])
	}
	if got := c.memberlistErrors.Load(); got != 5 {
		t.Fatalf("memberlist errors counted %d, want 5 (all, logged or not)", got)
	}
	if len(suspected) != 1 || suspected[0] != "node-b" {
		t.Fatalf("suspected %v, want [node-b]", suspected)
	}
}

func TestSuspicionShowsInMembersAndExpires(t *testing.T) {
	s := newStore("self")
	s.join("b", net.IPv4(127, 0, 0, 2), 7946, encodeMeta(1), t0, time.Second)
	s.suspect("b", t0, t0.Add(10*time.Second))
	if got := s.memberList(t0.Add(time.Second)); got[0].State != MemberSuspect {
		t.Fatalf("state %q, want suspect", got[0].State)
	}
	if got := s.memberList(t0.Add(11 * time.Second)); got[0].State != MemberAlive {
		t.Fatalf("state %q after the suspicion bound, want alive", got[0].State)
	}
	if s.livePeerCount() != 1 {
		t.Fatal("a suspect member stops counting as live")
	}
}

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(2, time.Second)
	var ok []bool
	for range 4 {
		a, _ := l.allow(t0)
		ok = append(ok, a)
	}
	if !ok[0] || !ok[1] || ok[2] || ok[3] {
		t.Fatalf("allowed %v, want two then none", ok)
	}
	a, suppressed := l.allow(t0.Add(time.Second))
	if !a || suppressed != 2 {
		t.Fatalf("next period: allowed %v suppressed %d, want true and 2", a, suppressed)
	}
}
