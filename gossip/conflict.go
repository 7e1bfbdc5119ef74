package gossip

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// ErrNameConflict is sent (wrapped) on NameConflict when another live
// member of the cluster already holds this node's name.
var ErrNameConflict = errors.New("gossip: another live member has this node's name")

// conflicts is memberlist's ConflictDelegate: memberlist calls it when a
// member announces itself alive under a name that a live member holds at
// another address. memberlist keeps the member it knew and drops the
// announcement; this package decides what the process that came second
// does.
type conflicts struct{ c *Cluster }

var _ memberlist.ConflictDelegate = (*conflicts)(nil)

// NotifyConflict is called with memberlist's node lock held, from its
// packet and stream handlers: it must not call back into memberlist and
// must not block, so the shutdown it may start runs in a goroutine.
//
// Of two processes under one name, the one with the newer generation (the
// later start; on a tie, the larger address) is the duplicate: it stops
// gossip at once, without a goodbye or a restart announcement (either
// would speak for the other process's record), and NameConflict receives
// ErrNameConflict. The other keeps running. A peer that sees the conflict
// refuses the duplicate's record (its generation), so that the live
// member's backends stay as they are everywhere.
func (d *conflicts) NotifyConflict(existing, other *memberlist.Node) {
	c := d.c
	otherGen, _ := decodeMeta(other.Meta)
	fields := logrus.Fields{"peer": other.Name, "addr": other.Address(), "known_addr": existing.Address()}
	if other.Name != c.cfg.NodeName {
		if c.store.refuseGeneration(other.Name, otherGen) {
			c.signal()
		}
		if ok, _ := c.badLog.allow(c.now()); ok {
			c.log.WithFields(fields).WithField("reason", "a live member already has this name").
				Warn("refused a second process under a member's name")
		}
		return
	}
	self := c.generation.Load()
	selfAddr := net.JoinHostPort(existing.Addr.String(), strconv.Itoa(int(existing.Port)))
	if otherGen > self || (otherGen == self && other.Address() > selfAddr) {
		c.log.WithFields(fields).WithField("reason", "a process that started later tried to join under this node's name").
			Warn("refused a second process under this node's name; this one keeps it")
		return
	}
	err := fmt.Errorf("%w: %q is held by a live member at %s (started before this process, at %s): give every agent its own --node-name",
		ErrNameConflict, other.Name, other.Address(), existing.Address())
	c.mu.Lock()
	already := c.left
	c.left = true // nothing more may be published under this name
	c.mu.Unlock()
	if already {
		return
	}
	c.log.WithFields(fields).WithField("reason", err.Error()).Error("this node's name is taken; stopping gossip")
	select {
	case c.conflict <- err:
	default:
	}
	go func() { _ = c.Shutdown() }()
}

// NameConflict receives once (capacity 1) when another live member holds
// this node's name and this process is the later one; gossip has then
// stopped (as Shutdown) and publishes nothing more. The agent exits with
// the error.
func (c *Cluster) NameConflict() <-chan error { return c.conflict }

// refuseGeneration makes the store refuse node's records of generation gen:
// they are a second process's under a live member's name. It returns
// whether that is news.
func (s *store) refuseGeneration(node string, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused == nil {
		s.refused = make(map[string]uint64)
	}
	if s.refused[node] == gen {
		return false
	}
	s.refused[node] = gen
	if w, ok := s.want[node]; ok && w.version.Generation == gen {
		delete(s.want, node)
	}
	return true
}

// refusedLocked says whether node's records of generation gen are refused
// (refuseGeneration). s.mu is held.
func (s *store) refusedLocked(node string, gen uint64) bool {
	g, ok := s.refused[node]
	return ok && g == gen
}
