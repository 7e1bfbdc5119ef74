package gossip

import (
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// A death that memberlist declares is confirmed before the node's backends
// leave State(). memberlist declares a node dead when it has answered no
// probe for the whole suspicion; a process that is only starved of CPU for
// a few seconds (a loaded host, a guest whose host is busy) answers no probe
// either, and every node would withdraw its backends although they serve.
// What tells the two apart is the node's kernel: it completes a TCP
// handshake on the gossip port for a live process, however starved, and
// refuses it at once once the process is gone (a crash, SIGKILL); a host that
// is down or cut off does not answer within DeathCheckTimeout.
//
// So a declared death of a member that did not say goodbye and is not
// restarting leaves it "suspect" and its record visible while this node
// dials its gossip port: a refused or timed-out dial confirms the death at
// once; a dial that connects keeps the member suspect, and the dial is
// repeated every second until memberlist sees the member alive again (it
// refutes its death once it runs) or DeathReprieve has passed, when the
// death is confirmed whatever the dial says (a process that is stopped, not
// starved, keeps its port open).

// deathCheck is one declared death awaiting confirmation.
type deathCheck struct {
	name  string
	addr  string // gossip address, host:port
	until time.Time
}

// declaredDead is leave for a member memberlist declared dead. A member
// that left or is restarting goes as leave says; otherwise, when until is
// set, the member stays suspect and visible until confirmDead or a join,
// and unconfirmed is true with its gossip address. changed says whether
// the member's record left State() (leave's result).
func (s *store) declaredDead(name string, now, until time.Time) (unconfirmed bool, addr string, changed bool) {
	s.mu.Lock()
	m := s.members[name]
	cur := s.records[name]
	if until.IsZero() || m == nil || name == s.self || len(m.addr) == 0 ||
		(m.state != MemberAlive && m.state != MemberSuspect) ||
		(cur != nil && cur.rec.version.Generation >= m.generation && (cur.rec.leaving || cur.rec.restarting)) {
		s.mu.Unlock()
		return false, "", s.leave(name, now)
	}
	m.state = MemberSuspect
	m.since = now
	m.suspectUntil = until
	m.unconfirmedUntil = until
	addr = net.JoinHostPort(net.IP(m.addr).String(), strconv.Itoa(int(m.port)))
	s.mu.Unlock()
	return true, addr, false
}

// unconfirmed says whether name's declared death still awaits confirmation
// (no join since).
func (s *store) unconfirmed(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[name]
	return m != nil && !m.unconfirmedUntil.IsZero()
}

// confirmDead makes name's declared death final, if it still awaits
// confirmation: the member is dead and its record leaves State(). It
// reports whether State() changed.
func (s *store) confirmDead(name string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[name]
	if m == nil || m.unconfirmedUntil.IsZero() {
		return false
	}
	before := s.visibleLocked(name)
	m.unconfirmedUntil, m.suspectUntil = time.Time{}, time.Time{}
	if m.state == MemberAlive || m.state == MemberSuspect {
		s.live--
	}
	m.state = MemberDead
	m.since = now
	delete(s.want, name)
	s.changedLocked(name, before, false)
	return before
}

// noteDeclaredDead handles memberlist's declaration that n died: the death
// is confirmed by a dial of its gossip port (see above) unless confirmation
// is off, the member left or is restarting. It reports whether the member
// is gone from State() now.
func (c *Cluster) noteDeclaredDead(n *memberlist.Node) bool {
	now := c.now()
	var until time.Time
	if c.timing.DeathReprieve > 0 {
		until = now.Add(c.timing.DeathReprieve)
	}
	unconfirmed, addr, changed := c.store.declaredDead(n.Name, now, until)
	if !unconfirmed {
		return changed
	}
	select {
	case c.deaths <- deathCheck{name: n.Name, addr: addr, until: until}:
		c.log.WithFields(logrus.Fields{"peer": n.Name, "addr": addr}).
			Info("member declared failed by the failure detector; its backends stay until its gossip port confirms the death")
	default:
		// More declared deaths at once than the queue holds: no time to
		// check them one by one.
		if c.store.confirmDead(n.Name, now) {
			c.signal()
		}
		c.log.WithField("peer", n.Name).Warn("member declared failed; too many deaths at once to confirm: taken as dead")
		return true
	}
	return false
}

// confirmDeaths runs the dials of declared deaths until Shutdown: one
// dial per member at a time, again every second while the port answers.
func (c *Cluster) confirmDeaths() {
	defer c.wg.Done()
	type result struct {
		check deathCheck
		err   error
	}
	results := make(chan result, 16)
	pending := map[string]deathCheck{} // members whose dial is under way
	dial := func(d deathCheck) {
		pending[d.name] = d
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			conn, err := c.transport.DialTimeout(d.addr, c.timing.DeathCheckTimeout)
			if err == nil {
				// A label header, then EOF: memberlist on the other side
				// reads an empty stream and says nothing.
				if c.cfg.Label != "" {
					_ = memberlist.AddLabelHeaderToStream(conn, c.cfg.Label)
				}
				_ = conn.Close()
			}
			select {
			case results <- result{d, err}:
			case <-c.stop:
			}
		}()
	}
	again := time.NewTicker(time.Second)
	defer again.Stop()
	alive := map[string]deathCheck{} // dialled and connected: dial again
	told := map[string]bool{}        // logged as slow, not dead
	for {
		select {
		case <-c.stop:
			return
		case d := <-c.deaths:
			delete(alive, d.name)
			if _, busy := pending[d.name]; !busy {
				dial(d)
			}
		case r := <-results:
			delete(pending, r.check.name)
			log := c.log.WithFields(logrus.Fields{"peer": r.check.name, "addr": r.check.addr})
			switch {
			case !c.store.unconfirmed(r.check.name):
				// Alive again (or its death was settled otherwise).
				delete(told, r.check.name)
			case r.err != nil:
				if c.store.confirmDead(r.check.name, c.now()) {
					c.signal()
				}
				c.recountPeers()
				delete(told, r.check.name)
				log.WithField("reason", "failed, and its gossip port: "+r.err.Error()).Info("member gone; its backends leave the cluster state")
			case !c.now().Before(r.check.until):
				if c.store.confirmDead(r.check.name, c.now()) {
					c.signal()
				}
				c.recountPeers()
				delete(told, r.check.name)
				log.WithField("reason", "its gossip port accepts connections but it has answered no probe for "+c.timing.DeathReprieve.String()).
					Warn("member gone; its backends leave the cluster state")
			default:
				if !told[r.check.name] {
					told[r.check.name] = true
					log.Info("member declared failed answers on its gossip port: taken as slow, not dead; its backends stay")
				}
				alive[r.check.name] = r.check
			}
		case <-again.C:
			for name, d := range alive {
				if !c.store.unconfirmed(name) {
					delete(alive, name)
					delete(told, name)
					continue
				}
				if _, busy := pending[name]; !busy {
					delete(alive, name)
					dial(d)
				}
			}
		}
	}
}
