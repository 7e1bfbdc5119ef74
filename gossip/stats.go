package gossip

import "sync/atomic"

// Stats is a snapshot of this node's gossip counters, ready for metrics.
// Counters only grow for the life of a Cluster; gauges are as of the call.
type Stats struct {
	// Members is the number of live members, this node included.
	Members int
	// Backends is the number of registrations in State(); BackendsByNode
	// splits it per live node.
	Backends       int
	BackendsByNode map[string]int

	// MessagesSent and MessagesReceived count this package's own messages
	// (records, notices, pulls, push/pull state); BytesSent and
	// BytesReceived are their sizes before encryption. A broadcast counts
	// once per transmission.
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64

	// PacketsSent and PacketsReceived count every packet on the transport
	// (memberlist's probes and gossip included); WireBytesSent and
	// WireBytesReceived count every byte on it, packets and streams,
	// as sent (encrypted, labelled).
	PacketsSent, PacketsReceived     uint64
	WireBytesSent, WireBytesReceived uint64

	// BroadcastQueue is the number of this package's messages waiting to
	// be gossiped.
	BroadcastQueue int

	// RecordsAccepted counts deltas and pull replies that moved a record
	// to a newer version.
	RecordsAccepted uint64
	// DeltasBehind counts deltas (and pull replies) this node could not
	// apply because it lacked their base version, and so pulled.
	DeltasBehind uint64
	// StaleRecords counts records dropped because a newer one was held (or
	// the node has restarted since).
	StaleRecords uint64
	// MergeConflicts counts records with the version of the held one but
	// different content (two processes under one name).
	MergeConflicts uint64
	// DroppedMessages counts malformed or oversized messages dropped.
	DroppedMessages uint64
	// PullsSent, PullsServed and PullsFailed count direct record fetches.
	PullsSent, PullsServed, PullsFailed uint64
	// PullRequestsDropped counts peers' pull requests dropped unanswered
	// because 256 already waited for an answer; the peer asks again.
	PullRequestsDropped uint64
	// GenerationBumps counts the times this node found a record of its own
	// name newer than its own (its clock went back across a restart) and
	// moved its generation past it.
	GenerationBumps uint64
	// MemberlistErrors counts error lines from memberlist: undecryptable or
	// mislabelled packets from peers without the key or of another cluster,
	// failed sends.
	MemberlistErrors uint64
}

// counters are the cumulative figures behind Stats.
type counters struct {
	messagesSent, messagesReceived   atomic.Uint64
	bytesSent, bytesReceived         atomic.Uint64
	packetsSent, packetsReceived     atomic.Uint64
	wireBytesSent, wireBytesReceived atomic.Uint64
	recordsAccepted, staleRecords    atomic.Uint64
	mergeConflicts, droppedMessages  atomic.Uint64
	pullsSent, pullsServed           atomic.Uint64
	pullsFailed, generationBumps     atomic.Uint64
	memberlistErrors, deltasBehind   atomic.Uint64
	pullRequestsDropped              atomic.Uint64
}

func (c *counters) sent(n int) {
	c.messagesSent.Add(1)
	c.bytesSent.Add(uint64(n))
}

func (c *counters) received(n int) {
	c.messagesReceived.Add(1)
	c.bytesReceived.Add(uint64(n))
}

func (c *counters) fill(s *Stats) {
	s.MessagesSent, s.MessagesReceived = c.messagesSent.Load(), c.messagesReceived.Load()
	s.BytesSent, s.BytesReceived = c.bytesSent.Load(), c.bytesReceived.Load()
	s.PacketsSent, s.PacketsReceived = c.packetsSent.Load(), c.packetsReceived.Load()
	s.WireBytesSent, s.WireBytesReceived = c.wireBytesSent.Load(), c.wireBytesReceived.Load()
	s.RecordsAccepted, s.StaleRecords = c.recordsAccepted.Load(), c.staleRecords.Load()
	s.MergeConflicts, s.DroppedMessages = c.mergeConflicts.Load(), c.droppedMessages.Load()
	s.PullsSent, s.PullsServed = c.pullsSent.Load(), c.pullsServed.Load()
	s.PullsFailed, s.GenerationBumps = c.pullsFailed.Load(), c.generationBumps.Load()
	s.MemberlistErrors, s.DeltasBehind = c.memberlistErrors.Load(), c.deltasBehind.Load()
	s.PullRequestsDropped = c.pullRequestsDropped.Load()
}
