package gossip

import (
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// delegate is memberlist's hook into this package's state. memberlist calls
// it from several goroutines at once: NotifyMsg from the single packet
// handler goroutine (UDP gossip: deltas, notices) and from one goroutine per
// incoming stream (pull requests and replies over TCP); GetBroadcasts from
// the gossip and probe goroutines; LocalState and MergeRemoteState from
// push/pull goroutines. Every method therefore only decodes, hashes what it
// received outside any lock, takes the store's mutex for map updates in
// proportion to the message and returns: none blocks on the network, and
// work that needs the network (pulls, replies) is handed to the run loop
// through a buffered channel, dropped when it is full (the run loop's tick
// retries pulls).
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = (*delegate)(nil)

// NodeMeta returns this node's generation, which travels with memberlist's
// alive messages. Called on memberlist's goroutines; reads an atomic.
func (d *delegate) NodeMeta(limit int) []byte {
	if limit < metaLen {
		return nil
	}
	return encodeMeta(d.c.generation.Load())
}

// NotifyMsg handles a delta, notice, pull request or pull reply from a peer. buf is
// memberlist's and is not kept: decoding copies what it needs.
func (d *delegate) NotifyMsg(buf []byte) {
	d.c.handleMessage(buf)
}

// GetBroadcasts hands memberlist the queued deltas and notices that fit,
// then this node's periodic announcement if there is room.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.c.queue.GetBroadcasts(overhead, limit)
	used := 0
	for _, m := range msgs {
		used += overhead + len(m)
	}
	if rest := limit - used; rest > overhead {
		msgs = append(msgs, d.c.announce.GetBroadcasts(overhead, rest)...)
	}
	for _, m := range msgs {
		d.c.counters.sent(len(m))
	}
	return msgs
}

// LocalState returns this node's digest for push/pull anti-entropy: the
// version of every record it vouches for (its own and the live nodes'),
// not their content, so its size does not grow with the backends; only in
// the exchange that joins a node do small records (one packet or less)
// travel whole.
func (d *delegate) LocalState(join bool) []byte {
	c := d.c
	wholeUpTo := 0
	if join {
		// The joiner needs every record: small ones travel whole here
		// rather than in one pull each.
		wholeUpTo = inlineRecordBytes
	}
	buf := encodeDigest(c.store.digest(wholeUpTo))
	c.counters.sent(len(buf))
	return buf
}

// MergeRemoteState compares a peer's digest with what this node holds; the
// records it is behind on are pulled, from their owners, by the run loop.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := d.c
	m, err := decodeMessage(buf, MaxStateBytes)
	if err == nil && m.Kind != kindDigest {
		err = errors.New("push/pull carried a " + m.Kind.String() + " message")
	}
	if err != nil {
		c.dropBad(len(buf), err)
		return
	}
	c.counters.received(len(buf))
	for _, e := range m.Digest {
		if e.Whole {
			c.mergeDelta(&deltaMsg{Node: e.Node, Gen: e.Version.Generation, Seq: e.Version.Seq,
				Layout: e.Layout, Restarting: e.Restarting, Sum: e.Sum, Set: e.Regs})
		}
	}
	pull, selfNewer := c.store.noteDigest(m.Digest, c.now(), c.timing.PullGrace)
	if selfNewer != (Version{}) {
		c.fence(selfNewer)
	}
	if pull {
		c.wakePulls()
	}
	c.pushPulled.Store(true)
}

// events follows membership. memberlist calls these methods one at a time,
// holding its node lock: they must not call back into memberlist, and only
// update the store and signal.
type events struct{ c *Cluster }

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node) {
	c := e.c
	if n.Name != c.cfg.NodeName {
		if c.store.join(n.Name, n.Addr, n.Port, n.Meta, c.now(), c.joinPullGrace(n.Name)) {
			c.signal()
		}
		c.recountPeers()
		c.log.WithField("peer", n.Name).WithField("addr", n.Address()).Info("member joined")
		return
	}
	c.store.join(n.Name, n.Addr, n.Port, n.Meta, c.now(), c.timing.PullGrace)
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	c := e.c
	if c.store.join(n.Name, n.Addr, n.Port, n.Meta, c.now(), c.joinPullGrace(n.Name)) {
		c.signal()
	}
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	c := e.c
	if n.Name == c.cfg.NodeName {
		// memberlist reports this node's own leave as well.
		c.log.Debug("this node left the cluster")
		return
	}
	gone := c.noteDeclaredDead(n)
	if gone {
		c.signal()
	}
	if c.store.unconfirmed(n.Name) {
		return // confirm.go says when it goes
	}
	c.recountPeers()
	// memberlist's Node.State is not updated before this call; the store
	// knows a leave from the leaving record or the goodbye.
	how := "failed: no acks within the suspicion timeout"
	if c.store.stateOf(n.Name) == MemberLeft {
		how = "left"
	}
	c.log.WithFields(logrus.Fields{"peer": n.Name, "reason": how}).Info("member gone; its backends leave the cluster state")
}

// joinPullers is how many nodes of a cluster of more than joinPullAll, in
// expectation, pull a member that joins after them when gossip has not
// brought its record within PullGrace.
const joinPullers = 3

// joinPullAll is the largest cluster in which every node pulls such a
// member: below 10 nodes memberlist sends a broadcast only 4 times from
// each node, so gossip misses more nodes, and the pulls are few anyway.
const joinPullAll = 9

// joinPullGrace returns how long this node waits, after memberlist reports
// member with a generation whose record it does not hold, before pulling
// that record from it; negative: it does not pull on the join.
//
// Until this node has merged a peer's state (its own join exchange), the
// members it learns of were there before it: it pulls each record that
// the exchange did not carry after PullGrace, as it needs them all. A
// member that joins later spreads its record by gossip and announcements
// (whole, or as a notice on which every node pulls), and push/pull finds
// whatever both missed; a pull after PullGrace is only a shortcut for when
// gossip is slow, taken by joinPullers nodes in expectation (those whose
// hash with the member falls below joinPullers in N), by every node in a
// cluster of at most joinPullAll. When every node took it, a join whose
// gossip was slower than PullGrace made all N nodes pull the joiner at
// once: 257,000 such pulls while a one-process 1,000-node cluster was
// built (where starting nodes slows gossip down), and 416,000 by 900
// nodes when the others pulled 5 to 10 s after the join instead; a real
// cluster that many nodes join at once would see the same storm.
func (c *Cluster) joinPullGrace(member string) time.Duration {
	n := uint64(c.livePeers.Load()) + 1
	if !c.pushPulled.Load() || n <= joinPullAll || joinHash(member, c.cfg.NodeName)%n < joinPullers {
		return c.timing.PullGrace
	}
	return -1
}

// joinHash hashes a member's name with this node's (FNV-1a, 64 bits).
func joinHash(member, self string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(self))
	return h.Sum64()
}

func (c *Cluster) recountPeers() {
	c.livePeers.Store(int64(c.store.livePeerCount()))
}

// handleMessage decodes and applies one message from a peer.
func (c *Cluster) handleMessage(buf []byte) {
	m, err := decodeMessage(buf, MaxStreamBytes)
	if err == nil && m.Kind == kindDigest {
		err = errors.New("digest outside push/pull")
	}
	if err == nil && m.Kind != kindPages && len(buf) > MaxMessageBytes {
		err = fmt.Errorf("%w: %s of %d bytes over %d", ErrOversized, m.Kind, len(buf), MaxMessageBytes)
	}
	if err != nil {
		c.dropBad(len(buf), err)
		return
	}
	c.counters.received(len(buf))
	switch m.Kind {
	case kindDelta:
		switch c.mergeDelta(m.Delta) {
		case outcomeAccepted:
			// Pass it on: the originator alone would reach only
			// RetransmitMult × log10(N) peers.
			c.queue.QueueBroadcast(&nodeBroadcast{node: m.Delta.Node, msg: append([]byte(nil), buf...)})
		case outcomeBehind:
			// News this node cannot apply: others may hold its base.
			c.queue.QueueBroadcast(&nodeBroadcast{node: m.Delta.Node, msg: append([]byte(nil), buf...)})
			c.wakePulls()
		}
	case kindPages:
		out, _ := c.store.applyPages(m.Pages, c.now())
		c.countOutcome(m.Pages.Node, Version{Generation: m.Pages.Gen, Seq: m.Pages.Seq}, out)
		if out == outcomeBehind {
			c.wakePulls()
		}
	case kindNotice:
		pull, selfNewer := c.store.noteVersion(m.Node, m.Version, c.now())
		if selfNewer {
			c.fence(m.Version)
		}
		if pull {
			c.queue.QueueBroadcast(&nodeBroadcast{node: m.Node, msg: append([]byte(nil), buf...)})
			c.wakePulls()
		}
	case kindApplied:
		// An answer to askApplied: kept, not passed on.
		c.applied.mergeApplied(c.cfg.NodeName, m.Applied, c.now())
	case kindAppliedQuery:
		select {
		case c.appliedAsks <- m.Requester:
		default:
			c.log.WithField("peer", m.Requester).WithField("reason", "queue full").Debug("applied report query dropped")
		}
	case kindPull:
		if m.Node != c.cfg.NodeName {
			c.dropBad(len(buf), errors.New("pull request for "+m.Node+" reached "+c.cfg.NodeName))
			return
		}
		select {
		case c.replies <- pullRequest{requester: m.Requester, since: m.Version, layout: m.Layout}:
		default:
			c.counters.pullRequestsDropped.Add(1)
			c.log.WithField("peer", m.Requester).WithField("reason", "reply queue full").Debug("pull request dropped")
		}
	}
}

// wakePulls tells the run loop that a pull may be due.
func (c *Cluster) wakePulls() {
	select {
	case c.pullWake <- struct{}{}:
	default:
	}
}

// mergeDelta applies one delta and counts the outcome.
func (c *Cluster) mergeDelta(d *deltaMsg) mergeOutcome {
	out, _ := c.store.applyDelta(d, c.now())
	c.countOutcome(d.Node, Version{Generation: d.Gen, Seq: d.Seq}, out)
	return out
}

// countOutcome counts what merging a message about node at v did, and
// fences when it was a newer version of this node's own name.
func (c *Cluster) countOutcome(node string, v Version, out mergeOutcome) {
	switch out {
	case outcomeAccepted:
		c.counters.recordsAccepted.Add(1)
	case outcomeStale:
		c.counters.staleRecords.Add(1)
	case outcomeBehind:
		c.counters.deltasBehind.Add(1)
	case outcomeConflict:
		c.counters.mergeConflicts.Add(1)
		c.log.WithFields(logrus.Fields{"peer": node, "version": v,
			"reason": "two records with one version"}).Warn("record conflict")
	case outcomeSelfNewer:
		c.fence(v)
	}
}

// dropBad counts and logs (rate limited) a message that could not be used.
func (c *Cluster) dropBad(size int, err error) {
	c.counters.droppedMessages.Add(1)
	if ok, suppressed := c.badLog.allow(c.now()); ok {
		c.log.WithFields(logrus.Fields{"bytes": size, "reason": err.Error(),
			"suppressed": suppressed}).Warn("dropped bad gossip message")
	}
}
