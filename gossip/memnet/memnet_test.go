package memnet

import (
	"testing"
	"time"
)

func TestPacketsPartitionsAndClosedPeers(t *testing.T) {
	n := New()
	a, b, c := n.NewTransport(), n.NewTransport(), n.NewTransport()
	recv := func(tr *Transport) bool {
		select {
		case <-tr.PacketCh():
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}
	cases := []struct {
		name  string
		setup func()
		from  *Transport
		to    *Transport
		want  bool
	}{
		{"delivered", func() {}, a, b, true},
		{"cut between groups", func() { n.Partition([]string{a.Addr()}, []string{b.Addr()}) }, a, b, false},
		{"same side still talks", func() {}, b, c, true},
		{"healed", func() { n.SetCut(nil) }, a, b, true},
		{"closed peer drops, sender does not block", func() { _ = c.Shutdown() }, a, c, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			if _, err := tc.from.WriteTo([]byte("x"), tc.to.Addr()); err != nil {
				t.Fatal(err)
			}
			if got := recv(tc.to); got != tc.want {
				t.Fatalf("delivered %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := a.DialTimeout(c.Addr(), 100*time.Millisecond); err == nil {
		t.Fatal("dial to a closed transport succeeded")
	}
	if _, err := n.NewTransportAt(a.Addr()); err == nil {
		t.Fatal("took the address of a live transport")
	}
	again, err := n.NewTransportAt(c.Addr())
	if err != nil {
		t.Fatalf("restart on a closed transport's address: %v", err)
	}
	if _, err := a.WriteTo([]byte("y"), again.Addr()); err != nil || !recv(again) {
		t.Fatal("restarted transport does not receive")
	}
}

func TestBacklogCountsUnreadPackets(t *testing.T) {
	n := New()
	a, b, c := n.NewTransport(), n.NewTransport(), n.NewTransport()
	if got := n.Backlog(); got != 0 {
		t.Fatalf("empty network: backlog %d, want 0", got)
	}
	for range 3 {
		_, _ = a.WriteTo([]byte("x"), b.Addr())
	}
	_, _ = a.WriteTo([]byte("x"), c.Addr())
	if got := n.Backlog(); got != 4 {
		t.Fatalf("after 4 packets: backlog %d, want 4", got)
	}
	<-b.PacketCh()
	if got := n.Backlog(); got != 3 {
		t.Fatalf("after one read: backlog %d, want 3", got)
	}
	_ = c.Shutdown()
	if got := n.Backlog(); got != 2 {
		t.Fatalf("after the receiver of one packet closed: backlog %d, want 2", got)
	}
}
