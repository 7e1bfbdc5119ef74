package gossip

import (
	"fmt"
	"slices"
	"testing"
)

// The sequence that lost a leaving node's goodbye record: the only queued
// broadcast is replaced by a newer one about the same node, then broadcasts
// of the same length about other nodes are queued. Every newest broadcast
// must still go out.
func TestBroadcastQueueKeepsEveryNodesNewest(t *testing.T) {
	for replaced := 1; replaced <= 3; replaced++ {
		t.Run(fmt.Sprintf("replaced=%d", replaced), func(t *testing.T) {
			q := newBroadcastQueue(func() int { return 3 }, 4)
			for i := range replaced {
				q.QueueBroadcast(&nodeBroadcast{node: "a", msg: []byte(fmt.Sprintf("a%d", i))})
			}
			for _, n := range []string{"b", "c", "d"} {
				q.QueueBroadcast(&nodeBroadcast{node: n, msg: []byte(n + "0")})
			}
			if got := q.NumQueued(); got != 4 {
				t.Fatalf("NumQueued = %d, want 4", got)
			}
			var got []string
			for _, m := range q.GetBroadcasts(3, 1400) {
				got = append(got, string(m))
			}
			slices.Sort(got)
			want := []string{fmt.Sprintf("a%d", replaced-1), "b0", "c0", "d0"}
			if !slices.Equal(got, want) {
				t.Fatalf("sent %q, want %q", got, want)
			}
		})
	}
}

// The anchor never leaves, whatever room a packet offers, and is not
// counted.
func TestBroadcastQueueAnchorIsNeverSent(t *testing.T) {
	q := newBroadcastQueue(func() int { return 1 }, 1)
	if got := q.NumQueued(); got != 0 {
		t.Fatalf("empty queue: NumQueued = %d", got)
	}
	if got := q.GetBroadcasts(3, 65536); len(got) != 0 {
		t.Fatalf("empty queue sent %d messages", len(got))
	}
	q.QueueBroadcast(&nodeBroadcast{node: "a", msg: []byte("a")})
	if got := q.GetBroadcasts(3, 65536); len(got) != 1 || string(got[0]) != "a" {
		t.Fatalf("sent %q, want only a", got)
	}
	// Transmitted RetransmitMult × ceil(log10(N+1)) = 1 time: gone.
	if got := q.NumQueued(); got != 0 {
		t.Fatalf("NumQueued = %d after the last transmission", got)
	}
	if got := q.GetBroadcasts(3, 65536); len(got) != 0 {
		t.Fatalf("sent %q after the last transmission", got)
	}
}
