package gossip

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// MemberState is what this node believes of a cluster member.
type MemberState string

// Member states. Alive and Suspect members are live: their backends are in
// State(). Dead members failed the failure detector; Left members said
// goodbye (Leave) before going.
const (
	MemberAlive   MemberState = "alive"
	MemberSuspect MemberState = "suspect"
	MemberDead    MemberState = "dead"
	MemberLeft    MemberState = "left"
)

// Member is one cluster member as this node sees it.
type Member struct {
	Name  string
	Addr  netip.AddrPort
	State MemberState
	// Generation is the process generation the member announced in its
	// memberlist metadata; records from older generations are ignored.
	Generation uint64
	// Version is the version of the member's record this node holds (zero
	// when it holds none).
	Version Version
	// Backends is how many registrations of this member are in State():
	// zero for members that are not live or whose record is not yet known.
	Backends int
	// Since is when this node last saw the member change state.
	Since time.Time
}

// mergeOutcome says what merging one record did.
type mergeOutcome int

const (
	outcomeAccepted  mergeOutcome = iota // newer than what we held: stored
	outcomeDuplicate                     // same version, same content
	outcomeStale                         // older than what we hold, or from a past generation
	outcomeConflict                      // same version, different content (tie broken by bytes)
	outcomeSelfNewer                     // a record for this very node, newer than ours
	outcomeSelfOld                       // a record for this very node, not newer: ignored
)

func (o mergeOutcome) String() string {
	return [...]string{"accepted", "duplicate", "stale", "conflict", "self-newer", "self-old"}[o]
}

type memberEntry struct {
	name       string
	addr       net.IP
	port       uint16
	state      MemberState
	generation uint64
	since      time.Time
	// suspectUntil bounds a local suspicion: memberlist reports when it
	// suspects a node but not when the node refutes, so a suspicion that
	// has not turned into a death by then is over.
	suspectUntil time.Time
}

type recordEntry struct {
	rec      *record
	received time.Time
}

// wanted is a record version known to exist (from a notice, or from a
// member's metadata) that this node does not hold yet.
type wanted struct {
	version   Version
	notBefore time.Time // do not pull before; gives gossip a chance first
}

// store is the merged view: every record this node knows, and the
// membership as memberlist reported it. It has no goroutines and does no
// I/O; every method is safe for concurrent use and returns quickly.
type store struct {
	self string

	mu sync.Mutex // guards every field below
	// records holds the newest record known per node, live or not, so
	// that ordering survives a death; pruned some time after a death.
	records map[string]*recordEntry
	members map[string]*memberEntry
	want    map[string]wanted
	// live counts members other than self that are alive or suspect.
	live int
}

func newStore(self string) *store {
	return &store{
		self:    self,
		records: make(map[string]*recordEntry),
		members: make(map[string]*memberEntry),
		want:    make(map[string]wanted),
	}
}

// setSelf installs this node's own record.
func (s *store) setSelf(r *record, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[s.self] = &recordEntry{rec: r, received: now}
}

// selfRecord returns this node's own record.
func (s *store) selfRecord() *record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.records[s.self]; e != nil {
		return e.rec
	}
	return nil
}

// merge applies one record received from a peer. visible says whether the
// change shows in State().
func (s *store) merge(r *record, now time.Time) (out mergeOutcome, visible bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.records[r.Node]
	if r.Node == s.self {
		if cur != nil && cur.rec.Version.Less(r.Version) {
			return outcomeSelfNewer, false
		}
		return outcomeSelfOld, false
	}
	if m := s.members[r.Node]; m != nil && r.Version.Generation < m.generation {
		return outcomeStale, false
	}
	switch {
	case cur == nil || cur.rec.Version.Less(r.Version):
		out = outcomeAccepted
	case cur.rec.Version == r.Version:
		if cur.rec.sameContent(r) {
			return outcomeDuplicate, false
		}
		// Two different records at one version mean two processes
		// published under one name and generation. Every node keeps
		// the one whose encoding sorts last, so all converge on it.
		if bytes.Compare(encodeRecord(r), encodeRecord(cur.rec)) <= 0 {
			return outcomeConflict, false
		}
		out = outcomeConflict
	default:
		return outcomeStale, false
	}
	s.records[r.Node] = &recordEntry{rec: r, received: now}
	// memberlist may deliver a leaver's goodbye before its leaving record
	// (both can ride in one packet, memberlist's messages first): a node
	// that said it was leaving left, it did not fail.
	if m := s.members[r.Node]; m != nil && m.state == MemberDead && r.Leaving && r.Version.Generation >= m.generation {
		m.state = MemberLeft
	}
	if w, ok := s.want[r.Node]; ok && !r.Version.Less(w.version) {
		delete(s.want, r.Node)
	}
	return out, s.visibleLocked(r.Node)
}

// noteVersion records that node has published version v (a notice). It
// returns whether this node should pull the record, and whether v is newer
// than this node's own record (when node is this node).
func (s *store) noteVersion(node string, v Version, now time.Time) (pull, selfNewer bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.records[node]
	if node == s.self {
		return false, cur != nil && cur.rec.Version.Less(v)
	}
	if m := s.members[node]; m != nil && v.Generation < m.generation {
		return false, false
	}
	if cur != nil && !cur.rec.Version.Less(v) {
		return false, false
	}
	if w, ok := s.want[node]; ok && !w.version.Less(v) {
		return false, false // already wanted; the pull is under way
	}
	s.want[node] = wanted{version: v, notBefore: now}
	return true, false
}

// join records that memberlist reports node alive (a join, a rejoin, or
// new metadata). It returns whether State() may have changed.
func (s *store) join(name string, addr net.IP, port uint16, meta []byte, now time.Time, pullGrace time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen, _ := decodeMeta(meta)
	m := s.members[name]
	if m == nil {
		m = &memberEntry{name: name}
		s.members[name] = m
	}
	before := s.visibleLocked(name)
	if m.state != MemberAlive {
		m.since = now
	}
	if name != s.self && m.state != MemberAlive && m.state != MemberSuspect {
		s.live++
	}
	m.addr, m.port, m.state, m.generation = slices.Clone(addr), port, MemberAlive, gen
	m.suspectUntil = time.Time{}
	if name != s.self {
		if cur := s.records[name]; cur == nil || cur.rec.Version.Generation < gen {
			need := Version{Generation: gen}
			if w, ok := s.want[name]; !ok || w.version.Less(need) {
				s.want[name] = wanted{version: need, notBefore: now.Add(pullGrace)}
			}
		}
	}
	return before || s.visibleLocked(name)
}

// leave records that memberlist reports node dead or gone. It returns
// whether State() changed.
func (s *store) leave(name string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[name]
	if m == nil {
		return false
	}
	before := s.visibleLocked(name)
	if name != s.self && (m.state == MemberAlive || m.state == MemberSuspect) {
		s.live--
	}
	m.state = MemberDead
	if cur := s.records[name]; cur != nil && cur.rec.Leaving && cur.rec.Version.Generation >= m.generation {
		m.state = MemberLeft
	}
	m.since = now
	delete(s.want, name)
	return before
}

// suspect records that this node's failure detector suspects node.
func (s *store) suspect(name string, now time.Time, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[name]; m != nil && m.state == MemberAlive {
		m.state = MemberSuspect
		m.since = now
		m.suspectUntil = until
	}
}

// visibleLocked reports whether node's record is in State(). s.mu is held.
func (s *store) visibleLocked(name string) bool {
	e := s.records[name]
	if e == nil || e.rec.Leaving {
		return false
	}
	if name == s.self {
		return true
	}
	m := s.members[name]
	if m == nil || (m.state != MemberAlive && m.state != MemberSuspect) {
		return false
	}
	return e.rec.Version.Generation >= m.generation
}

// state returns the live nodes' records, sorted by node name.
func (s *store) state() vip.ClusterState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(vip.ClusterState, 0, len(s.members)+1)
	for name, e := range s.records {
		if !s.visibleLocked(name) {
			continue
		}
		out = append(out, vip.NodeState{Node: name, Backends: slices.Clone(e.rec.Registrations)})
	}
	slices.SortFunc(out, func(a, b vip.NodeState) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// holds reports whether node's record at version v or newer is in State().
func (s *store) holds(node string, v Version) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[node]
	return e != nil && !e.rec.Version.Less(v) && s.visibleLocked(node)
}

// visibleRecords returns the records this node vouches for in push/pull:
// its own and every live node's.
func (s *store) visibleRecords() []*record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*record, 0, len(s.records))
	for name, e := range s.records {
		if name == s.self || s.visibleLocked(name) {
			out = append(out, e.rec)
		}
	}
	slices.SortFunc(out, func(a, b *record) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// pullTarget is a member to ask for its record.
type pullTarget struct {
	name    string
	addr    net.IP
	port    uint16
	version Version // the version wanted
}

// pullTargets returns the live members whose wanted record is due.
func (s *store) pullTargets(now time.Time) []pullTarget {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []pullTarget
	for name, w := range s.want {
		if cur := s.records[name]; cur != nil && !cur.rec.Version.Less(w.version) {
			delete(s.want, name)
			continue
		}
		m := s.members[name]
		if m == nil || (m.state != MemberAlive && m.state != MemberSuspect) || now.Before(w.notBefore) {
			continue
		}
		out = append(out, pullTarget{name: name, addr: m.addr, port: m.port, version: w.version})
	}
	slices.SortFunc(out, func(a, b pullTarget) int { return strings.Compare(a.name, b.name) })
	return out
}

// member returns where to reach a member, if it is live.
func (s *store) member(name string) (pullTarget, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[name]
	if m == nil || (m.state != MemberAlive && m.state != MemberSuspect) {
		return pullTarget{}, false
	}
	return pullTarget{name: name, addr: m.addr, port: m.port}, true
}

// deadMembers returns the addresses of members that failed (not those that
// left), for reconnection.
func (s *store) deadMembers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.members {
		if m.state == MemberDead {
			out = append(out, net.JoinHostPort(m.addr.String(), strconv.Itoa(int(m.port))))
		}
	}
	slices.Sort(out)
	return out
}

// livePeerCount returns the number of live members other than this node.
func (s *store) livePeerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// sweep ends suspicions that outlived their bound and forgets members that
// have been dead or gone for longer than forget, with their records; and
// records of nodes never seen as members for as long.
func (s *store) sweep(now time.Time, forget time.Duration) (forgotten int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, m := range s.members {
		switch m.state {
		case MemberSuspect:
			if !m.suspectUntil.IsZero() && now.After(m.suspectUntil) {
				m.state = MemberAlive
				m.since = now
			}
		case MemberDead, MemberLeft:
			if name != s.self && now.Sub(m.since) > forget {
				delete(s.members, name)
				delete(s.records, name)
				delete(s.want, name)
				forgotten++
			}
		}
	}
	for name, e := range s.records {
		if name != s.self && s.members[name] == nil && now.Sub(e.received) > forget {
			delete(s.records, name)
			forgotten++
		}
	}
	return forgotten
}

// memberList returns every member this node knows, sorted by name.
func (s *store) memberList(now time.Time) []Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Member, 0, len(s.members))
	for name, m := range s.members {
		mm := Member{Name: name, State: m.state, Generation: m.generation, Since: m.since}
		if a, ok := netip.AddrFromSlice(m.addr); ok {
			mm.Addr = netip.AddrPortFrom(a.Unmap(), m.port)
		}
		if m.state == MemberSuspect && !m.suspectUntil.IsZero() && now.After(m.suspectUntil) {
			mm.State = MemberAlive
		}
		if e := s.records[name]; e != nil {
			mm.Version = e.rec.Version
			if s.visibleLocked(name) {
				mm.Backends = len(e.rec.Registrations)
			}
		}
		out = append(out, mm)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Node metadata: format version byte, then the generation as 8 bytes big
// endian. It travels with memberlist's alive messages, so every node learns
// a restarted peer's new generation with its rejoin, before its record.
const metaLen = 9

func encodeMeta(generation uint64) []byte {
	b := make([]byte, metaLen)
	b[0] = formatVersion
	binary.BigEndian.PutUint64(b[1:], generation)
	return b
}

func decodeMeta(b []byte) (uint64, bool) {
	if len(b) != metaLen || b[0] != formatVersion {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[1:]), true
}

// visibleCount returns how many nodes State() would hold, without copying.
func (s *store) visibleCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.records {
		if s.visibleLocked(name) {
			n++
		}
	}
	return n
}

// shows reports whether node is in State().
func (s *store) shows(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.visibleLocked(node)
}

// backendCounts returns, per node in State(), how many registrations it has.
func (s *store) backendCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int)
	for name, e := range s.records {
		if s.visibleLocked(name) {
			out[name] = len(e.rec.Registrations)
		}
	}
	return out
}
