package gossip

import (
	"fmt"

	"github.com/l4lb/l4lb/vip"
)

// Room returns nil when this node's record can take add besides what it
// holds, and otherwise an error wrapping ErrRecordFull that says which
// limit it would pass: what PublishDelta would refuse, asked before a
// source accepts a registration, so that nothing is accepted that cannot
// be served. add is taken as new keys (a replacement is counted twice, so
// Room errs on the side of room left, never of a refusal it would not
// make... except by those bytes). Cost O(len(add)).
func (c *Cluster) Room(add []vip.Registration) error {
	c.store.mu.Lock()
	r := c.store.records[c.store.self].rec
	count, bytes, cur := r.count, r.bytes, r.layout
	c.store.mu.Unlock()
	count += len(add)
	if count > MaxRegistrations {
		return fmt.Errorf("%w: %d registrations, over %d", ErrRecordFull, count, MaxRegistrations)
	}
	var e encoder
	for i := range add {
		e.registration(&add[i])
	}
	wire := bytes + len(e.b) + (1<<layoutFor(cur, count))*pageHeaderBytes + messageHeaderBytes
	if wire > MaxRecordBytes {
		return fmt.Errorf("%w: %d registrations would take %d bytes on the wire, over %d", ErrRecordFull, count, wire, MaxRecordBytes)
	}
	return nil
}
