package gossip

import (
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// nodeBroadcast is a record or a notice about one node, queued for gossip.
// It is a memberlist.NamedBroadcast named after the node: queueing a newer
// one about the same node drops the older one from the queue, so the queue
// holds at most one message per node, always the newest this node knows.
type nodeBroadcast struct {
	node string
	msg  []byte
	// done, when set, is set by Finished: the queue dropped the broadcast
	// (sent its last transmission, or replaced it by a newer one).
	done *atomic.Bool
}

var _ memberlist.NamedBroadcast = (*nodeBroadcast)(nil)

// Name implements memberlist.NamedBroadcast.
func (b *nodeBroadcast) Name() string { return b.node }

// Invalidates implements memberlist.Broadcast. The queue uses Name for
// named broadcasts; this says the same for any other caller.
func (b *nodeBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*nodeBroadcast)
	return ok && o.node == b.node
}

// Message implements memberlist.Broadcast.
func (b *nodeBroadcast) Message() []byte { return b.msg }

// Finished implements memberlist.Broadcast.
func (b *nodeBroadcast) Finished() {
	if b.done != nil {
		b.done.Store(true)
	}
}

// broadcastQueue is memberlist's TransmitLimitedQueue, kept from losing
// broadcasts. That queue orders its items by (transmits, length, id) and
// resets its id counter whenever it becomes empty, also in the middle of
// queueing a broadcast that replaces the only one queued: the new item keeps
// an id from before the reset, a later item gets the same id, and when both
// have the same length and transmit count the later one silently takes the
// earlier one's place (hashicorp/memberlist pull request 263, open at
// v0.7.0). A leaving node lost its goodbye record that way. An anchor that
// never fits in a packet keeps the queue from ever being empty, so the
// counter never resets.
//
// Its methods are safe for concurrent use, as the wrapped queue's are.
type broadcastQueue struct {
	q memberlist.TransmitLimitedQueue
}

func newBroadcastQueue(numNodes func() int, retransmitMult int) *broadcastQueue {
	b := &broadcastQueue{q: memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: retransmitMult}}
	b.q.QueueBroadcast(queueAnchor{})
	return b
}

// QueueBroadcast queues nb, dropping a queued broadcast about the same node.
func (b *broadcastQueue) QueueBroadcast(nb *nodeBroadcast) { b.q.QueueBroadcast(nb) }

// GetBroadcasts returns the broadcasts that fit in limit bytes, with
// overhead bytes counted for each, fewest transmissions first.
func (b *broadcastQueue) GetBroadcasts(overhead, limit int) [][]byte {
	return b.q.GetBroadcasts(overhead, limit)
}

// NumQueued returns how many broadcasts wait to be sent (the anchor aside).
func (b *broadcastQueue) NumQueued() int { return b.q.NumQueued() - 1 }

// anchorMsg is longer than any packet memberlist asks broadcasts for (at
// most a UDP datagram, 64 KiB), so the queue never hands the anchor out. It
// is never written or read, only measured: the zero array costs no memory
// until touched.
var anchorMsg [1 << 20]byte

// queueAnchor is the broadcast that keeps a broadcastQueue non-empty. It is
// unique: no other broadcast invalidates it.
type queueAnchor struct{}

var _ memberlist.UniqueBroadcast = queueAnchor{}

func (queueAnchor) Invalidates(memberlist.Broadcast) bool { return false }
func (queueAnchor) Message() []byte                       { return anchorMsg[:] }
func (queueAnchor) Finished()                             {}
func (queueAnchor) UniqueBroadcast()                      {}
