package gossip

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// A node that many peers pull at once answers every one of them: a
// request waits for a free reply slot rather than being dropped while the
// slots are busy (here: with answers to peers slow to accept their
// connection). Dropped, the requester asked again a second later, and a
// node that all others pulled (a joiner, the owner of a large change)
// answered 8 per round.
func TestPullRequestsWaitForAReplySlot(t *testing.T) {
	const requesters = 20 // more than the reply slots
	net := memnet.New()
	owner := startMem(t, net, "owner", nil)
	owner.c.Publish([]vip.Registration{reg("/x", 80, "10.0.0.1:80")})
	var peers []*memnet.Transport
	for i := range requesters {
		// A peer that only this test reads from: its connections are
		// accepted when the test says.
		tr := net.NewTransport()
		peers = append(peers, tr)
		name := fmt.Sprintf("peer-%02d", i)
		ip, port, _ := tr.FinalAdvertiseAddr("", 0)
		owner.c.store.join(name, ip, uint16(port), encodeMeta(1), owner.c.now(), time.Hour)
		owner.c.handleMessage(encodePull(name, "owner", Version{}, 0))
	}
	// Every reply slot is taken by an answer waiting to connect.
	time.Sleep(500 * time.Millisecond)
	var answered atomic.Int64
	var wg sync.WaitGroup
	for _, tr := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case conn := <-tr.StreamCh():
				if b, _ := io.ReadAll(conn); len(b) > 0 {
					answered.Add(1)
				}
				_ = conn.Close()
			case <-time.After(20 * time.Second):
			}
		}()
	}
	wg.Wait()
	if got := answered.Load(); got != requesters {
		t.Fatalf("%d of %d pull requests answered", got, requesters)
	}
	waitFor(t, 5*time.Second, "the answers to be counted", func() bool {
		return owner.c.Stats().PullsServed == requesters
	})
	if got := owner.c.Stats().PullRequestsDropped; got != 0 {
		t.Fatalf("%d pull requests dropped", got)
	}
}
