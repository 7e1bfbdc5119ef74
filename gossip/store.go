package gossip

import (
	"encoding/binary"
	"fmt"
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
// goodbye (Leave) before going. Restarting members announced a restart
// (Cluster.Restart) and are gone: their backends stay in State() for
// Config.RestartGrace from when they were seen gone, then they are dead.
const (
	MemberAlive      MemberState = "alive"
	MemberSuspect    MemberState = "suspect"
	MemberDead       MemberState = "dead"
	MemberLeft       MemberState = "left"
	MemberRestarting MemberState = "restarting"
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

// mergeOutcome says what merging one delta, pages reply or record did.
type mergeOutcome int

const (
	outcomeAccepted  mergeOutcome = iota // newer than what we held: applied
	outcomeDuplicate                     // same version, same content
	outcomeStale                         // older than what we hold, or from a past generation
	outcomeConflict                      // same version, different content (tie broken by content sum)
	outcomeSelfNewer                     // about this very node, newer than ours
	outcomeSelfOld                       // about this very node, not newer: ignored
	outcomeBehind                        // newer, but this node lacks its base: pull
)

func (o mergeOutcome) String() string {
	return [...]string{"accepted", "duplicate", "stale", "conflict", "self-newer", "self-old", "behind"}[o]
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
	// unconfirmedUntil is set while a death memberlist declared awaits
	// confirmation (confirm.go): the member shows as suspect meanwhile.
	unconfirmedUntil time.Time
}

// recordEntry is the record held for one node, and what TakeChanges has
// told the consumer about it.
type recordEntry struct {
	rec      *nodeRecord
	received time.Time
	// reported: the consumer of TakeChanges holds this node's keys (it
	// was visible at the last call). before holds, for every key changed
	// since that call, its value then.
	reported bool
	before   map[vip.RegKey]prior
}

// prior is a key's value at the last TakeChanges.
type prior struct {
	reg     vip.Registration
	keyHash uint64
	present bool
}

// wanted is a record version known to exist (from a delta this node could
// not apply, a notice, a digest, or a member's metadata) that this node does
// not hold yet.
type wanted struct {
	version   Version
	notBefore time.Time // do not pull before; gives gossip a chance first
	// full asks the owner for the whole record: what this node holds
	// disagrees with the owner's content sum.
	full bool
}

// store is the merged view: every record this node knows, and the
// membership as memberlist reported it. It has no goroutines and does no
// I/O; every method is safe for concurrent use and returns quickly, in
// time proportional to the change it applies (State and the first
// TakeChanges aside).
type store struct {
	self string
	// notify is called, under mu, whenever State() changes; it must not
	// block (Cluster.signal).
	notify func()

	mu sync.Mutex // guards every field below
	// records holds the newest record known per node, live or not, so
	// that ordering survives a death; pruned some time after a death.
	records map[string]*recordEntry
	members map[string]*memberEntry
	want    map[string]wanted
	// wantDue is no later than the earliest notBefore in want: before it,
	// pullTargets has nothing to do and returns at once (see setWantLocked).
	wantDue time.Time
	// live counts members other than self that are alive or suspect.
	live int
	// tracking is set by the first TakeChanges; pending lists the nodes
	// whose visible registrations may have changed since the last one.
	tracking bool
	pending  map[string]struct{}
	// restarting lists the members in state MemberRestarting, so that
	// expireRestarts looks at them alone.
	restarting map[string]struct{}
	// refused holds, per node, the generation of a second process under a
	// live member's name, whose records are refused (conflict.go).
	refused map[string]uint64
}

func newStore(self string) *store {
	return &store{
		self:       self,
		notify:     func() {},
		records:    make(map[string]*recordEntry),
		members:    make(map[string]*memberEntry),
		want:       make(map[string]wanted),
		pending:    make(map[string]struct{}),
		restarting: make(map[string]struct{}),
	}
}

// setSelf installs r as this node's whole record.
func (s *store) setSelf(r *record, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := fullDelta(r, layoutFor(0, len(r.Registrations)))
	e := s.records[s.self]
	wasVisible := s.visibleLocked(s.self)
	if e == nil {
		e = &recordEntry{rec: newNodeRecord(Version{}, d.Layout)}
		s.records[s.self] = e
	}
	s.applyLocked(e, d, entriesOf(d.Set), now)
	s.changedLocked(s.self, wasVisible, true)
}

// entriesOf derives the entries of registrations (encoding and hashing
// them), which callers do before taking s.mu.
func entriesOf(regs []vip.Registration) []regEntry {
	out := make([]regEntry, len(regs))
	for i, r := range regs {
		out[i] = newRegEntry(r)
	}
	return out
}

// selfRecord returns a copy of this node's own record (O(N); tests).
func (s *store) selfRecord() *record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.records[s.self]; e != nil {
		return &record{Node: s.self, Version: e.rec.version, Leaving: e.rec.leaving, Restarting: e.rec.restarting,
			Registrations: e.rec.registrations()}
	}
	return nil
}

// selfVersion returns the version of this node's own record.
func (s *store) selfVersion() Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.records[s.self]; e != nil {
		return e.rec.version
	}
	return Version{}
}

// Record changes, tracked for TakeChanges. s.mu is held.

func (s *store) noteBefore(e *recordEntry, k vip.RegKey, keyHash uint64) {
	if !s.tracking || !e.reported {
		return
	}
	if _, ok := e.before[k]; ok {
		return
	}
	if e.before == nil {
		e.before = make(map[vip.RegKey]prior)
	}
	old, ok := e.rec.get(k, keyHash)
	e.before[k] = prior{reg: old.reg, keyHash: keyHash, present: ok}
}

func (s *store) putLocked(e *recordEntry, re regEntry, seq uint64) {
	s.noteBefore(e, re.reg.Key(), re.keyHash)
	e.rec.put(re, seq)
}

func (s *store) delLocked(e *recordEntry, k vip.RegKey, keyHash, seq uint64) bool {
	s.noteBefore(e, k, keyHash)
	_, ok := e.rec.del(k, keyHash, seq)
	return ok
}

// clearLocked empties e's record, keeping its version and layout.
func (s *store) clearLocked(e *recordEntry, seq uint64) {
	if s.tracking && e.reported {
		e.rec.each(func(re regEntry) { s.noteBefore(e, re.reg.Key(), re.keyHash) })
	}
	r := e.rec
	r.pages = make([]page, 1<<r.layout)
	for i := range r.pages {
		r.pages[i].seq = seq
	}
	r.count, r.bytes, r.sum = 0, 0, 0
}

// applyLocked applies d (set: the entries of d.Set) to e, which holds a
// version d may be applied to (checked by the caller), and reports whether
// the content sum matches.
func (s *store) applyLocked(e *recordEntry, d *deltaMsg, set []regEntry, now time.Time) bool {
	if d.Base == 0 || d.Leaving || e.rec.version.Generation != d.Gen {
		s.clearLocked(e, d.Seq)
	}
	if e.rec.layout != d.Layout {
		e.rec.repage(d.Layout, d.Seq)
	}
	for _, k := range d.Removed {
		s.delLocked(e, k, keyHashOf(k), d.Seq)
	}
	for _, re := range set {
		s.putLocked(e, re, d.Seq)
	}
	e.rec.version = Version{Generation: d.Gen, Seq: d.Seq}
	e.rec.leaving = d.Leaving
	e.rec.restarting = d.Restarting && !d.Leaving
	e.received = now
	return e.rec.sum == d.Sum
}

// changedLocked is called after anything that may have changed name's
// registrations in State(): wasVisible is whether it was in State()
// before, content whether its registrations changed.
func (s *store) changedLocked(name string, wasVisible, content bool) {
	vis := s.visibleLocked(name)
	if wasVisible != vis || (vis && content) {
		if s.tracking {
			s.pending[name] = struct{}{}
		}
		s.notify()
	}
}

// publish changes this node's own record: removed keys dropped, then set
// registrations (normalised, one per key) added or replaced, at the next
// seq. It returns the keys that actually changed (nil: nothing did) or
// ErrRecordFull, in which case nothing changed.
func (s *store) publish(set []vip.Registration, removed []vip.RegKey, now time.Time) (changed []vip.RegKey, v Version, err error) {
	entries := make([]regEntry, len(set))
	for i := range set {
		entries[i] = newRegEntry(normalizeRegistration(set[i]))
	}
	removedHashes := make([]uint64, len(removed))
	for i, k := range removed {
		removedHashes[i] = keyHashOf(k)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[s.self]
	r := e.rec
	// Work out the real changes first, so that a refusal changes nothing.
	type op struct {
		key vip.RegKey
		kh  uint64
		put *regEntry
	}
	ops := make([]op, 0, len(set)+len(removed))
	final := make(map[vip.RegKey]int, len(set)+len(removed)) // key -> index in ops
	bytes, count := r.bytes, r.count
	sizeOf := func(k vip.RegKey, kh uint64) (int, bool) {
		if i, ok := final[k]; ok {
			if p := ops[i].put; p != nil {
				return p.size, true
			}
			return 0, false
		}
		old, ok := r.get(k, kh)
		return old.size, ok
	}
	record := func(o op) {
		oldSize, had := sizeOf(o.key, o.kh)
		if had {
			bytes -= oldSize
			count--
		}
		if o.put != nil {
			bytes += o.put.size
			count++
		}
		if i, ok := final[o.key]; ok {
			ops[i] = o
			return
		}
		final[o.key] = len(ops)
		ops = append(ops, o)
	}
	for i, k := range removed {
		record(op{key: k, kh: removedHashes[i]})
	}
	for i := range entries {
		record(op{key: entries[i].reg.Key(), kh: entries[i].keyHash, put: &entries[i]})
	}
	// Drop no-ops: a removal of an absent key, a set of an equal value.
	ops = slices.DeleteFunc(ops, func(o op) bool {
		old, had := r.get(o.key, o.kh)
		if o.put == nil {
			return !had
		}
		return had && sameRegistration(old.reg, o.put.reg)
	})
	if len(ops) == 0 {
		return nil, r.version, nil
	}
	if count > MaxRegistrations {
		return nil, r.version, fmt.Errorf("%w: %d registrations, over %d", ErrRecordFull, count, MaxRegistrations)
	}
	layout := layoutFor(r.layout, count)
	if wire := bytes + (1<<layout)*pageHeaderBytes + messageHeaderBytes; wire > MaxRecordBytes {
		return nil, r.version, fmt.Errorf("%w: %d registrations would take %d bytes on the wire, over %d",
			ErrRecordFull, count, wire, MaxRecordBytes)
	}
	seq := r.version.Seq + 1
	wasVisible := s.visibleLocked(s.self)
	changed = make([]vip.RegKey, 0, len(ops))
	for _, o := range ops {
		if o.put != nil {
			s.putLocked(e, *o.put, seq)
		} else {
			s.delLocked(e, o.key, o.kh, seq)
		}
		changed = append(changed, o.key)
	}
	if layout != r.layout {
		r.repage(layout, seq)
	}
	r.version.Seq = seq
	e.received = now
	s.changedLocked(s.self, wasVisible, true)
	return changed, r.version, nil
}

// leaveSelf replaces this node's record with an empty, leaving one at the
// next seq, and returns the delta that says so.
func (s *store) leaveSelf(now time.Time) *deltaMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[s.self]
	d := &deltaMsg{Node: s.self, Gen: e.rec.version.Generation, Seq: e.rec.version.Seq + 1, Layout: 0, Leaving: true}
	wasVisible := s.visibleLocked(s.self)
	s.applyLocked(e, d, nil, now)
	s.changedLocked(s.self, wasVisible, true)
	return d
}

// restartSelf moves this node's record to the next seq, same content,
// marked restarting, and returns its version.
func (s *store) restartSelf(now time.Time) Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[s.self]
	r := e.rec
	r.version.Seq++
	r.restarting = true
	e.received = now
	return r.version
}

// fenceSelf moves this node's record to generation gen, seq 1, same
// content, and returns its version.
func (s *store) fenceSelf(gen uint64, now time.Time) Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[s.self]
	r := e.rec
	r.version = Version{Generation: gen, Seq: 1}
	for i := range r.pages {
		r.pages[i].seq = 1
	}
	e.received = now
	return r.version
}

// selfDelta returns the delta that takes a peer from any version in
// [base, current] to the current one: keys is every key changed after
// base (the caller keeps that log); base 0 gives the whole record.
func (s *store) selfDelta(base uint64, keys []vip.RegKey) *deltaMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.records[s.self].rec
	d := &deltaMsg{Node: s.self, Gen: r.version.Generation, Base: base, Seq: r.version.Seq, Layout: r.layout,
		Leaving: r.leaving, Restarting: r.restarting, Sum: r.sum}
	if r.leaving {
		d.Base = 0
		return d
	}
	if base == 0 {
		d.Set = make([]vip.Registration, 0, r.count)
		r.each(func(e regEntry) { d.Set = append(d.Set, e.reg) })
		slices.SortFunc(d.Set, compareRegistrations)
		return d
	}
	seen := make(map[vip.RegKey]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		if e, ok := r.get(k, keyHashOf(k)); ok {
			d.Set = append(d.Set, e.reg)
		} else {
			d.Removed = append(d.Removed, k)
		}
	}
	return d
}

// selfSize returns the number of registrations and the encoded bytes of
// this node's record.
func (s *store) selfSize() (count, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.records[s.self].rec
	return r.count, r.bytes
}

// pagesSince returns this node's answer to a peer that holds version since
// of its record in layout: the pages changed after since, or everything
// when the peer holds another generation or layout (or nothing).
func (s *store) pagesSince(since Version, layout uint8) *pagesMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.records[s.self].rec
	p := &pagesMsg{Node: s.self, Gen: r.version.Generation, Seq: r.version.Seq, Layout: r.layout,
		Leaving: r.leaving, Restarting: r.restarting, Sum: r.sum}
	full := r.leaving || since.Generation != r.version.Generation || since.Seq == 0 ||
		layout != r.layout || since.Seq > r.version.Seq
	if full {
		p.Full = true
	} else {
		p.Base = since.Seq
	}
	if r.leaving {
		return p
	}
	for i := range r.pages {
		pg := &r.pages[i]
		if (full && len(pg.regs) == 0) || (!full && pg.seq <= since.Seq) {
			continue
		}
		pm := pageMsg{Index: uint32(i), Seq: pg.seq, Regs: make([]vip.Registration, 0, len(pg.regs))}
		for _, e := range pg.regs {
			pm.Regs = append(pm.Regs, e.reg)
		}
		p.Pages = append(p.Pages, pm)
	}
	return p
}

// merge applies a whole record received from a peer (a full delta).
func (s *store) merge(r *record, now time.Time) (mergeOutcome, bool) {
	return s.applyDelta(fullDelta(r, layoutFor(0, len(r.Registrations))), now)
}

// precheckLocked compares a message about node at version v with what is
// held. done says the outcome is final; otherwise the message is to be
// applied. whole says the message carries the whole content (which alone
// can win a conflict).
func (s *store) precheckLocked(node string, v Version, leaving bool, sum uint64, whole bool) (out mergeOutcome, done bool) {
	cur := s.records[node]
	if node == s.self {
		if cur != nil && cur.rec.version.Less(v) {
			return outcomeSelfNewer, true
		}
		return outcomeSelfOld, true
	}
	if m := s.members[node]; (m != nil && v.Generation < m.generation) || s.refusedLocked(node, v.Generation) {
		return outcomeStale, true
	}
	if cur == nil {
		return outcomeAccepted, false
	}
	switch c := cur.rec.version.Compare(v); {
	case c > 0:
		return outcomeStale, true
	case c == 0:
		if cur.rec.sum == sum && cur.rec.leaving == leaving {
			return outcomeDuplicate, true
		}
		// Two different records at one version mean two processes
		// published under one name and generation. Every node keeps
		// the one whose content sum is larger, so all converge on it;
		// only whole content can replace what is held.
		if !whole || sum <= cur.rec.sum {
			return outcomeConflict, true
		}
		return outcomeConflict, false
	}
	return outcomeAccepted, false
}

// applyDelta applies a delta from gossip. visible says whether the change
// shows in State(); outcomeBehind means this node lacks the delta's base
// and now wants the version (pullTargets).
func (s *store) applyDelta(d *deltaMsg, now time.Time) (out mergeOutcome, visible bool) {
	set := entriesOf(d.Set)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyDeltaLocked(d, set, now)
}

func (s *store) applyDeltaLocked(d *deltaMsg, set []regEntry, now time.Time) (mergeOutcome, bool) {
	v := Version{Generation: d.Gen, Seq: d.Seq}
	whole := d.Base == 0 || d.Leaving
	out, done := s.precheckLocked(d.Node, v, d.Leaving, d.Sum, whole)
	if done {
		return out, false
	}
	e := s.records[d.Node]
	canApply := whole || (e != nil && e.rec.version.Generation == d.Gen && !e.rec.leaving && d.Base <= e.rec.version.Seq)
	if !canApply {
		if !s.wantLocked(d.Node, v, now, false) {
			return outcomeDuplicate, false // already wanted: no news
		}
		return outcomeBehind, false
	}
	if e == nil {
		e = &recordEntry{rec: newNodeRecord(Version{}, d.Layout)}
		s.records[d.Node] = e
	}
	wasVisible := s.visibleLocked(d.Node)
	ok := s.applyLocked(e, d, set, now)
	s.afterApplyLocked(d.Node, v, d.Leaving, ok || whole, now)
	s.changedLocked(d.Node, wasVisible, true)
	return out, wasVisible || s.visibleLocked(d.Node)
}

// afterApplyLocked settles membership and wants after node's record moved
// to v; sumOK false (the content disagrees with the owner's sum) asks for
// the whole record.
func (s *store) afterApplyLocked(node string, v Version, leaving, sumOK bool, now time.Time) {
	// memberlist may deliver a leaver's goodbye before its leaving record
	// (both can ride in one packet, memberlist's messages first): a node
	// that said it was leaving left, it did not fail.
	if m := s.members[node]; m != nil && m.state == MemberDead && leaving && v.Generation >= m.generation {
		m.state = MemberLeft
	}
	// Likewise a restarting record that arrives after the failure
	// detector declared its owner dead: the grace counts from then. And
	// one of a node memberlist has not told this node of (this node
	// joined while it was gone: memberlist passes on no dead member):
	// gone and restarting, from now.
	if e := s.records[node]; e != nil && e.rec.restarting && node != s.self {
		switch m := s.members[node]; {
		case m == nil:
			s.members[node] = &memberEntry{name: node, state: MemberRestarting, generation: v.Generation, since: now}
			s.restarting[node] = struct{}{}
		case m.state == MemberDead && v.Generation >= m.generation:
			m.state = MemberRestarting
			s.restarting[node] = struct{}{}
		}
	}
	if !sumOK {
		s.setWantLocked(node, wanted{version: v, notBefore: now, full: true})
		return
	}
	if w, ok := s.want[node]; ok && !v.Less(w.version) {
		delete(s.want, node)
	}
}

// applyPages applies a pull reply.
func (s *store) applyPages(p *pagesMsg, now time.Time) (mergeOutcome, bool) {
	entries := make([][]regEntry, len(p.Pages))
	for i := range p.Pages {
		entries[i] = entriesOf(p.Pages[i].Regs)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := Version{Generation: p.Gen, Seq: p.Seq}
	out, done := s.precheckLocked(p.Node, v, p.Leaving, p.Sum, p.Full)
	if done {
		return out, false
	}
	e := s.records[p.Node]
	if !p.Full && (e == nil || e.rec.version.Generation != p.Gen || e.rec.leaving ||
		e.rec.layout != p.Layout || p.Base > e.rec.version.Seq) {
		// What this node held changed since it asked (or the reply is
		// not for it): ask for everything.
		s.setWantLocked(p.Node, wanted{version: v, notBefore: now, full: true})
		return outcomeBehind, false
	}
	if e == nil {
		e = &recordEntry{rec: newNodeRecord(Version{}, p.Layout)}
		s.records[p.Node] = e
	}
	wasVisible := s.visibleLocked(p.Node)
	if p.Full {
		s.clearLocked(e, p.Seq)
		if e.rec.layout != p.Layout {
			e.rec.repage(p.Layout, p.Seq)
		}
	}
	for i, pm := range p.Pages {
		pg := &e.rec.pages[pm.Index]
		if !p.Full {
			keys := make([]vip.RegKey, 0, len(pg.regs))
			hashes := make([]uint64, 0, len(pg.regs))
			for _, re := range pg.regs {
				keys = append(keys, re.reg.Key())
				hashes = append(hashes, re.keyHash)
			}
			for i, k := range keys {
				s.delLocked(e, k, hashes[i], pm.Seq)
			}
		}
		for _, re := range entries[i] {
			s.putLocked(e, re, pm.Seq)
		}
		pg.seq = pm.Seq
	}
	e.rec.version, e.rec.leaving, e.received = v, p.Leaving, now
	e.rec.restarting = p.Restarting && !p.Leaving
	s.afterApplyLocked(p.Node, v, p.Leaving, e.rec.sum == p.Sum || p.Full, now)
	s.changedLocked(p.Node, wasVisible, true)
	return out, wasVisible || s.visibleLocked(p.Node)
}

// setWantLocked records w as the version wanted of node, and brings
// wantDue forward to w's notBefore. Every write of a wanted version goes
// through it, so that pullTargets may skip its scan until wantDue.
func (s *store) setWantLocked(node string, w wanted) {
	s.want[node] = w
	if s.wantDue.IsZero() || w.notBefore.Before(s.wantDue) {
		s.wantDue = w.notBefore
	}
}

// wantLocked notes that node has published v, to be pulled from notBefore.
// It returns whether that is news (not already held or wanted).
func (s *store) wantLocked(node string, v Version, notBefore time.Time, full bool) bool {
	if cur := s.records[node]; cur != nil && !cur.rec.version.Less(v) {
		return false
	}
	if w, ok := s.want[node]; ok && !w.version.Less(v) {
		return false // already wanted; the pull is under way
	}
	s.setWantLocked(node, wanted{version: v, notBefore: notBefore, full: full})
	return true
}

// noteVersion records that node has published version v (a notice). It
// returns whether this node should pull the record, and whether v is newer
// than this node's own record (when node is this node).
func (s *store) noteVersion(node string, v Version, now time.Time) (pull, selfNewer bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if node == s.self {
		cur := s.records[node]
		return false, cur != nil && cur.rec.version.Less(v)
	}
	if m := s.members[node]; (m != nil && v.Generation < m.generation) || s.refusedLocked(node, v.Generation) {
		return false, false
	}
	return s.wantLocked(node, v, now, false), false
}

// noteDigest compares a peer's digest with what this node holds: newer
// versions are wanted, from now+grace (the gossip that brings them may be
// on its way; a leaving one is applied at once, it carries no content),
// and a newer version of this node's own record is returned (fence). It
// returns whether there is anything to pull.
func (s *store) noteDigest(entries []digestEntry, now time.Time, grace time.Duration) (pull bool, selfNewer Version) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range entries {
		if d.Node == s.self {
			if cur := s.records[d.Node]; cur != nil && cur.rec.version.Less(d.Version) && selfNewer.Less(d.Version) {
				selfNewer = d.Version
			}
			continue
		}
		if m := s.members[d.Node]; (m != nil && d.Version.Generation < m.generation) || s.refusedLocked(d.Node, d.Version.Generation) {
			continue
		}
		if d.Leaving {
			s.applyDeltaLocked(&deltaMsg{Node: d.Node, Gen: d.Version.Generation, Seq: d.Version.Seq, Leaving: true}, nil, now)
			continue
		}
		cur := s.records[d.Node]
		if d.Restarting && cur != nil && !cur.rec.leaving && cur.rec.version.Generation == d.Version.Generation &&
			cur.rec.version.Seq < d.Version.Seq && cur.rec.sum == d.Sum {
			// A restart announcement this node missed, about the content
			// it holds: its owner may be gone already, so apply it from
			// the digest (it changes no registration).
			s.applyDeltaLocked(&deltaMsg{Node: d.Node, Gen: d.Version.Generation, Base: cur.rec.version.Seq,
				Seq: d.Version.Seq, Layout: cur.rec.layout, Restarting: true, Sum: d.Sum}, nil, now)
			continue
		}
		if cur != nil && cur.rec.version == d.Version && !cur.rec.leaving && cur.rec.sum < d.Sum {
			// A conflict this node loses (see precheckLocked).
			s.setWantLocked(d.Node, wanted{version: d.Version, notBefore: now, full: true})
			pull = true
			continue
		}
		if s.wantLocked(d.Node, d.Version, now.Add(grace), false) {
			pull = true
		}
	}
	return pull, selfNewer
}

// digest returns the versions this node vouches for in push/pull: its own
// and every live node's. With wholeUpTo > 0 (the exchange that joins a
// node), records of at most that many bytes travel whole, up to
// MaxStateBytes/2 in all.
func (s *store) digest(wholeUpTo int) []digestEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]digestEntry, 0, len(s.records))
	budget := MaxStateBytes / 2
	for name, e := range s.records {
		if name == s.self || s.visibleLocked(name) {
			d := digestEntry{Node: name, Version: e.rec.version, Leaving: e.rec.leaving, Restarting: e.rec.restarting, Sum: e.rec.sum}
			if r := e.rec; !r.leaving && r.bytes <= wholeUpTo && r.bytes <= budget {
				budget -= r.bytes
				d.Whole, d.Layout = true, r.layout
				d.Regs = make([]vip.Registration, 0, r.count)
				r.each(func(re regEntry) { d.Regs = append(d.Regs, re.reg) })
			}
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b digestEntry) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// join records that memberlist reports node alive (a join, a rejoin, or
// new metadata): a record of its generation not yet held is wanted from
// now + pullGrace, or not at all when pullGrace is negative (gossip and
// push/pull bring it). It returns whether State() may have changed.
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
	m.suspectUntil, m.unconfirmedUntil = time.Time{}, time.Time{}
	delete(s.restarting, name)
	if name != s.self {
		if cur := s.records[name]; pullGrace >= 0 && (cur == nil || cur.rec.version.Generation < gen) {
			need := Version{Generation: gen}
			if w, ok := s.want[name]; !ok || w.version.Less(need) {
				s.setWantLocked(name, wanted{version: need, notBefore: now.Add(pullGrace)})
			}
		}
		if w, ok := s.want[name]; ok {
			s.setWantLocked(name, w) // pullTargets skipped it while it was not live
		}
	}
	s.changedLocked(name, before, false)
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
	cur := s.records[name]
	switch {
	case cur == nil || cur.rec.version.Generation < m.generation:
	case cur.rec.leaving:
		m.state = MemberLeft
	case cur.rec.restarting && name != s.self:
		// A restart is not a leave: its backends keep serving, so they
		// stay in State() for the grace (expireRestarts).
		m.state = MemberRestarting
		s.restarting[name] = struct{}{}
	}
	m.since = now
	delete(s.want, name)
	s.changedLocked(name, before, false)
	return before
}

// expireRestarts declares dead the restarting members gone for grace or
// longer: their backends leave State(), as on a death. It returns how many
// it expired; the cost is in proportion to the restarting members.
func (s *store) expireRestarts(now time.Time, grace time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.restarting {
		m := s.members[name]
		if m == nil || m.state != MemberRestarting {
			delete(s.restarting, name)
			continue
		}
		if now.Sub(m.since) < grace {
			continue
		}
		before := s.visibleLocked(name)
		m.state = MemberDead
		delete(s.restarting, name)
		s.changedLocked(name, before, false)
		n++
	}
	return n
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
	if e == nil || e.rec.leaving {
		return false
	}
	if name == s.self {
		return true
	}
	m := s.members[name]
	if m == nil {
		return false
	}
	switch m.state {
	case MemberAlive, MemberSuspect:
		// A restarted member's previous record, marked restarting, stays
		// until its new generation's record replaces it in one step.
		return e.rec.version.Generation >= m.generation || e.rec.restarting
	case MemberRestarting:
		// Its new generation's record may arrive before memberlist
		// reports it alive again: that one shows too.
		return e.rec.restarting || e.rec.version.Generation > m.generation
	}
	return false
}

// state returns the live nodes' registrations, sorted by node name, each
// node's sorted.
func (s *store) state() vip.ClusterState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(vip.ClusterState, 0, len(s.members)+1)
	for name, e := range s.records {
		if !s.visibleLocked(name) {
			continue
		}
		out = append(out, vip.NodeState{Node: name, Backends: e.rec.registrations()})
	}
	slices.SortFunc(out, func(a, b vip.NodeState) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// takeChanges returns, per node, how its registrations in State() changed
// since the previous call (the first call: everything in State()).
func (s *store) takeChanges() []vip.NodeDelta {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []vip.NodeDelta
	if !s.tracking {
		s.tracking = true
		for name, e := range s.records {
			e.before = nil
			e.reported = s.visibleLocked(name)
			if e.reported && e.rec.count > 0 {
				out = append(out, vip.NodeDelta{Node: name, Set: e.rec.registrations()})
			}
		}
		clear(s.pending)
	} else {
		for name := range s.pending {
			e := s.records[name]
			if e == nil {
				continue
			}
			if nd := s.nodeChangesLocked(name, e); len(nd.Set)+len(nd.Removed) > 0 {
				out = append(out, nd)
			}
		}
		clear(s.pending)
	}
	slices.SortFunc(out, func(a, b vip.NodeDelta) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// nodeChangesLocked computes one node's changes and marks them taken.
func (s *store) nodeChangesLocked(name string, e *recordEntry) vip.NodeDelta {
	nd := vip.NodeDelta{Node: name}
	vis := s.visibleLocked(name)
	switch {
	case vis && e.reported:
		for k, p := range e.before {
			cur, ok := e.rec.get(k, p.keyHash)
			switch {
			case ok && (!p.present || !sameRegistration(p.reg, cur.reg)):
				nd.Set = append(nd.Set, cur.reg)
			case !ok && p.present:
				nd.Removed = append(nd.Removed, k)
			}
		}
		slices.SortFunc(nd.Set, compareRegistrations)
		slices.SortFunc(nd.Removed, compareKeys)
	case vis:
		nd.Set = e.rec.registrations()
	case e.reported:
		// The consumer holds the record as it was at the last call: what
		// is held now, corrected by the values then of what changed.
		e.rec.each(func(re regEntry) {
			k := re.reg.Key()
			if p, ok := e.before[k]; !ok || p.present {
				nd.Removed = append(nd.Removed, k)
			}
		})
		for k, p := range e.before {
			if _, ok := e.rec.get(k, p.keyHash); !ok && p.present {
				nd.Removed = append(nd.Removed, k)
			}
		}
		slices.SortFunc(nd.Removed, compareKeys)
	}
	e.reported, e.before = vis, nil
	return nd
}

// heldVersion returns the version of node's record this node holds.
func (s *store) heldVersion(node string) Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.records[node]; e != nil {
		return e.rec.version
	}
	return Version{}
}

// pullTarget is a member to ask for what changed in its record.
type pullTarget struct {
	name    string
	addr    net.IP
	port    uint16
	version Version // the version wanted
	since   Version // the version held (zero: ask for everything)
	layout  uint8   // the layout of the version held
}

// pullTargets returns the live members whose wanted record is due. It
// scans the wanted versions only once one is due (wantDue), so that the
// wake-ups of a busy node (every notice and digest may wake the puller)
// cost O(1) while nothing is due, not O(wanted).
func (s *store) pullTargets(now time.Time) []pullTarget {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.wantDue) || len(s.want) == 0 {
		return nil
	}
	var out []pullTarget
	var next time.Time // the earliest notBefore still ahead
	for name, w := range s.want {
		cur := s.records[name]
		if cur != nil && !cur.rec.version.Less(w.version) && !w.full {
			delete(s.want, name)
			continue
		}
		m := s.members[name]
		if m == nil || (m.state != MemberAlive && m.state != MemberSuspect) {
			continue // join brings wantDue forward when it is back
		}
		if now.Before(w.notBefore) {
			if next.IsZero() || w.notBefore.Before(next) {
				next = w.notBefore
			}
			continue
		}
		t := pullTarget{name: name, addr: m.addr, port: m.port, version: w.version}
		if cur != nil && !w.full && !cur.rec.leaving {
			t.since, t.layout = cur.rec.version, cur.rec.layout
		}
		out = append(out, t)
	}
	s.wantDue = next
	if len(out) > 0 {
		// Due until pullStarted defers them: scan again at the next wake.
		s.wantDue = now
	}
	slices.SortFunc(out, func(a, b pullTarget) int { return strings.Compare(a.name, b.name) })
	return out
}

// pullStarted notes that a pull of node's record at version v is under way
// (sent, or already in flight): the want is not due again before retryAt,
// unless a newer version is wanted meanwhile.
func (s *store) pullStarted(node string, v Version, retryAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.want[node]; ok && !v.Less(w.version) {
		w.notBefore = retryAt
		s.want[node] = w
	}
}

// stateOf returns the state of member name ("" when unknown).
func (s *store) stateOf(name string) MemberState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[name]; m != nil {
		return m.state
	}
	return ""
}

// known says whether name is a member this node still remembers (in any
// state; sweep forgets the long-gone ones).
func (s *store) known(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.members[name]
	return ok
}

// liveTargets returns where to reach every live member but this node.
func (s *store) liveTargets() []pullTarget {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]pullTarget, 0, s.live)
	for name, m := range s.members {
		if name != s.self && (m.state == MemberAlive || m.state == MemberSuspect) {
			out = append(out, pullTarget{name: name, addr: m.addr, port: m.port})
		}
	}
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
		if m.state == MemberDead && m.addr != nil {
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
// records of nodes never seen as members for as long. A record whose keys
// the TakeChanges consumer still holds is kept until it has been told.
func (s *store) sweep(now time.Time, forget time.Duration) (forgotten int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	told := func(name string) bool {
		e := s.records[name]
		return e == nil || !s.tracking || !e.reported
	}
	for name, m := range s.members {
		switch m.state {
		case MemberSuspect:
			if m.unconfirmedUntil.IsZero() && !m.suspectUntil.IsZero() && now.After(m.suspectUntil) {
				m.state = MemberAlive
				m.since = now
			}
		case MemberDead, MemberLeft:
			if name != s.self && now.Sub(m.since) > forget && told(name) {
				delete(s.members, name)
				delete(s.records, name)
				delete(s.want, name)
				delete(s.pending, name)
				forgotten++
			}
		}
	}
	for name, e := range s.records {
		if name != s.self && s.members[name] == nil && now.Sub(e.received) > forget && told(name) {
			delete(s.records, name)
			delete(s.pending, name)
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
		if m.state == MemberSuspect && m.unconfirmedUntil.IsZero() && !m.suspectUntil.IsZero() && now.After(m.suspectUntil) {
			mm.State = MemberAlive
		}
		if e := s.records[name]; e != nil {
			mm.Version = e.rec.version
			if s.visibleLocked(name) {
				mm.Backends = e.rec.count
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

// backendCounts returns, per node in State(), how many registrations it has.
func (s *store) backendCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int)
	for name, e := range s.records {
		if s.visibleLocked(name) {
			out[name] = e.rec.count
		}
	}
	return out
}

// selfKeys returns the keys of this node's registrations.
func (s *store) selfKeys() []vip.RegKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.records[s.self].rec
	out := make([]vip.RegKey, 0, r.count)
	r.each(func(e regEntry) { out = append(out, e.reg.Key()) })
	return out
}
