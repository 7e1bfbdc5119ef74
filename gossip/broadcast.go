package gossip

import "github.com/hashicorp/memberlist"

// nodeBroadcast is a record or a notice about one node, queued for gossip.
// It is a memberlist.NamedBroadcast named after the node: queueing a newer
// one about the same node drops the older one from the queue, so the queue
// holds at most one message per node, always the newest this node knows.
type nodeBroadcast struct {
	node string
	msg  []byte
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
func (b *nodeBroadcast) Finished() {}
