package gossip

import (
	"errors"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// delegate is memberlist's hook into this package's state. memberlist calls
// it from several goroutines at once: NotifyMsg from the single packet
// handler goroutine (UDP gossip) and from one goroutine per incoming stream
// (pull replies over TCP); GetBroadcasts from the gossip and probe
// goroutines; LocalState and MergeRemoteState from push/pull goroutines.
// Every method therefore only decodes, takes the store's mutex for a map
// update and returns: none blocks on the network, and work that needs the
// network (pulls, replies) is handed to the run loop through a buffered
// channel, dropped when it is full (the run loop's tick retries pulls).
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

// NotifyMsg handles a record, notice or pull request from a peer. buf is
// memberlist's and is not kept: decoding copies what it needs.
func (d *delegate) NotifyMsg(buf []byte) {
	d.c.handleMessage(buf)
}

// GetBroadcasts hands memberlist the queued records and notices that fit,
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

// LocalState returns every record this node vouches for (its own and the
// live nodes'), for push/pull anti-entropy.
func (d *delegate) LocalState(join bool) []byte {
	c := d.c
	buf := encodeState(c.store.visibleRecords())
	if len(buf) > MaxStateBytes {
		c.log.WithFields(logrus.Fields{"bytes": len(buf),
			"reason": "cluster state over the push/pull cap"}).Error("sending only this node's record on push/pull")
		buf = encodeState([]*record{c.store.selfRecord()})
	}
	c.counters.sent(len(buf))
	return buf
}

// MergeRemoteState merges the records a peer sent on push/pull.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := d.c
	m, err := decodeMessage(buf, MaxStateBytes)
	if err == nil && m.Kind != kindState {
		err = errors.New("push/pull carried a " + m.Kind.String() + " message")
	}
	if err != nil {
		c.dropBad(len(buf), err)
		return
	}
	c.counters.received(len(buf))
	for _, r := range m.Records {
		c.mergeRecord(r)
	}
}

// events follows membership. memberlist calls these methods one at a time,
// holding its node lock: they must not call back into memberlist, and only
// update the store and signal.
type events struct{ c *Cluster }

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node) {
	c := e.c
	if n.Name != c.cfg.NodeName {
		if c.store.join(n.Name, n.Addr, n.Port, n.Meta, c.now(), c.timing.PullGrace) {
			c.signal()
		}
		c.recountPeers()
		c.log.WithField("peer", n.Name).WithField("addr", n.Address()).Debug("member joined")
		return
	}
	c.store.join(n.Name, n.Addr, n.Port, n.Meta, c.now(), c.timing.PullGrace)
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	c := e.c
	if c.store.join(n.Name, n.Addr, n.Port, n.Meta, c.now(), c.timing.PullGrace) {
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
	if c.store.leave(n.Name, c.now()) {
		c.signal()
	}
	c.recountPeers()
	c.log.WithField("peer", n.Name).Info("member gone; its backends leave the cluster state")
}

func (c *Cluster) recountPeers() {
	c.livePeers.Store(int64(c.store.livePeerCount()))
}

// handleMessage decodes and applies one message from a peer.
func (c *Cluster) handleMessage(buf []byte) {
	m, err := decodeMessage(buf, MaxMessageBytes)
	if err == nil && m.Kind == kindState {
		err = errors.New("state message outside push/pull")
	}
	if err != nil {
		c.dropBad(len(buf), err)
		return
	}
	c.counters.received(len(buf))
	switch m.Kind {
	case kindRecord:
		if c.mergeRecord(m.Record) == outcomeAccepted {
			// Pass it on: the originator alone would reach only
			// RetransmitMult × log10(N) peers. A record too large for a
			// packet (it came by pull) is passed on as a notice.
			msg := append([]byte(nil), buf...)
			if len(msg) > inlineRecordBytes {
				msg = encodeNotice(m.Record.Node, m.Record.Version)
			}
			c.queue.QueueBroadcast(&nodeBroadcast{node: m.Record.Node, msg: msg})
		}
	case kindNotice:
		pull, selfNewer := c.store.noteVersion(m.Node, m.Version, c.now())
		if selfNewer {
			c.fence(m.Version)
		}
		if pull {
			c.queue.QueueBroadcast(&nodeBroadcast{node: m.Node, msg: append([]byte(nil), buf...)})
			select {
			case c.pullWake <- struct{}{}:
			default:
			}
		}
	case kindPull:
		if m.Node != c.cfg.NodeName {
			c.dropBad(len(buf), errors.New("pull request for "+m.Node+" reached "+c.cfg.NodeName))
			return
		}
		select {
		case c.replies <- m.Requester:
		default:
			c.log.WithField("peer", m.Requester).WithField("reason", "reply queue full").Debug("pull request dropped")
		}
	}
}

// mergeRecord merges one record and counts the outcome.
func (c *Cluster) mergeRecord(r *record) mergeOutcome {
	out, visible := c.store.merge(r, c.now())
	switch out {
	case outcomeAccepted:
		c.counters.recordsAccepted.Add(1)
	case outcomeStale:
		c.counters.staleRecords.Add(1)
	case outcomeConflict:
		c.counters.mergeConflicts.Add(1)
		c.log.WithFields(logrus.Fields{"peer": r.Node, "version": r.Version,
			"reason": "two records with one version"}).Warn("record conflict")
	case outcomeSelfNewer:
		c.fence(r.Version)
	}
	if visible {
		c.signal()
	}
	return out
}

// dropBad counts and logs (rate limited) a message that could not be used.
func (c *Cluster) dropBad(size int, err error) {
	c.counters.droppedMessages.Add(1)
	if ok, suppressed := c.badLog.allow(c.now()); ok {
		c.log.WithFields(logrus.Fields{"bytes": size, "reason": err.Error(),
			"suppressed": suppressed}).Warn("dropped bad gossip message")
	}
}
