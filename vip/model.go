package vip

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Model is the cluster state held incrementally, with the desired table and
// address book kept up to date by difference. Not safe for concurrent use
// (one owner goroutine).
//
// Model computes exactly what Build computes for the same state (the
// property tests check Table().Equal(Build(cfg, State())) after random
// sequences of changes), with work in proportion to the change:
//
//   - registrations are kept by node and RegKey, filed in groups (one per
//     VIP before named VIPs have addresses); a change refills the backends
//     of the groups it touches only;
//   - the address book: while every name of a family holds a claim inside
//     the range that no other name claims, each name's address is its claim
//     and a change moves only the names it touches. Otherwise (colliding
//     claims, claims out of range, names without a claim, a full range) the
//     placement depends on the order of the names, and a change that adds or
//     removes a name of that family, changes its claim or adds or removes an
//     IP VIP in its range re-runs the placement of the family (O(names)) and
//     diffs the addresses;
//   - error lines are counted per source (registration, name, service key)
//     and the sorted list is rebuilt only when the set of lines changes.
type Model struct {
	cfg   Config
	b     *builder // checks, interned schedulers, fillBackends, DNS names
	fams  [2]*book
	nodes map[string]*modelNode

	groups  map[groupKey]*modelGroup
	entries map[identity]*modelEntry
	slots   map[ServiceKey]*slot

	errs map[string]int // error line -> sources that report it
	// The lines that appeared and went since the last table.
	errsAdded, errsRemoved map[string]bool

	dirtyGroups  []*modelGroup
	dirtyEntries []*modelEntry
	freeNodes    []int32 // indices of b.nodeNames free for reuse

	table *Table

	// Scratch, reused between calls.
	members []member
	keys    []ServiceKey
	changes []vipChange
	ents    []*nameEntry
	memo    map[specMemo]specCheck // per Apply: the specs already checked
}

// book is the address book of one address family.
type book struct {
	r    addrRange
	list []*modelEntry // names without a DNS error: the ones placed

	// The claims of the names in list: the address book is "clean" when
	// every name claims a usable address of r that no other name claims.
	claims     map[uint64]int32 // usable index -> names claiming it
	collisions int              // indices claimed by more than one name
	unclaimed  int              // names without a usable claim

	reserved map[uint64]int32 // index -> IP VIPs at that address
	occupied map[uint64]int32 // index -> names placed there + IP VIPs there

	dirty    bool          // names, claims or reservations changed since the last placement
	changed  []*modelEntry // names added or whose claim changed since then
	wasClean bool          // clean at the last placement
}

func (f *book) clean() bool { return f.unclaimed == 0 && f.collisions == 0 }

type modelNode struct {
	name  string
	index int32 // index into the builder's nodeNames (member.node)
	regs  []*modelReg
	// byKey files the registrations by regKeyHash: a map keyed by the
	// whole RegKey holds a 112-byte key per registration, this one 8; the
	// rare registrations whose keys share a hash are chained (modelReg.next).
	byKey map[uint64]*modelReg
}

// regKeySeed seeds regKeyHash (per process: the hashes never leave it).
var regKeySeed = maphash.MakeSeed()

// regKeyHash is where modelNode.byKey files the registration with key k
// (a variable so that a test can make keys collide).
var regKeyHash = func(k *RegKey) uint64 { return maphash.Comparable(regKeySeed, *k) }

// find returns the registration with key k, or nil.
func (n *modelNode) find(k *RegKey) *modelReg {
	for r := n.byKey[regKeyHash(k)]; r != nil; r = r.next {
		if r.r.VIP == k.VIP && r.r.Framework == k.Framework && r.r.Backend == k.Backend {
			return r
		}
	}
	return nil
}

// file adds mr, whose key n does not hold, to n.byKey.
func (n *modelNode) file(mr *modelReg) {
	k := mr.r.Key()
	h := regKeyHash(&k)
	mr.next = n.byKey[h]
	n.byKey[h] = mr
}

// unfile takes mr out of n.byKey.
func (n *modelNode) unfile(mr *modelReg) {
	k := mr.r.Key()
	h := regKeyHash(&k)
	p := n.byKey[h]
	if p == mr {
		if mr.next == nil {
			delete(n.byKey, h)
		} else {
			n.byKey[h] = mr.next
		}
		mr.next = nil
		return
	}
	for ; p != nil; p = p.next {
		if p.next == mr {
			p.next, mr.next = mr.next, nil
			return
		}
	}
}

// modelReg is one registration of one node.
type modelReg struct {
	r        Registration
	node     *modelNode
	next     *modelReg   // the next registration of node.byKey with the same key hash
	nodeSlot int         // index in node.regs
	group    *modelGroup // nil when the registration is invalid
	slot     int         // index in group.regs
	member   member
	name     string // the spec's name as validate normalised it
	errLine  string // why the registration is left out
}

// modelGroup is one VIP before named VIPs have addresses.
type modelGroup struct {
	key   groupKey
	entry *modelEntry // named VIPs only
	slot  int         // index in entry.groups
	regs  []*modelReg

	vip   VIP        // as it stands in the table at `at`, when shown
	at    ServiceKey // where the table holds it
	shown bool       // whether it is in a slot
	dirty bool       // queued in Model.dirtyGroups
	dead  bool       // no registration left
}

// modelEntry is one name of the address book.
type modelEntry struct {
	nameEntry
	fam       *book // nil when the name has a DNS error (never placed)
	famSlot   int   // index in fam.list
	groups    []*modelGroup
	spellings []spelling // the names as written, for display
	errLine   string     // DNS error or range full

	// The claim as counted in fam (claims or unclaimed).
	countedUsable bool
	countedIndex  uint64

	prevAddr   netip.Addr // scratch of a full placement
	prevPlaced bool

	dirty   bool // queued in Model.dirtyEntries
	changed bool // queued in fam.changed
	dead    bool
}

type spelling struct {
	name  string
	count int
}

// slot is one service key of the table: at most one named VIP and one IP VIP
// can be filed there; the named VIP wins.
type slot struct {
	named, ip *modelGroup
	line      string // the IP VIP's "left out" line
}

type specCheck struct {
	key  groupKey
	name string
	err  error
}

type vipChange struct {
	key     ServiceKey
	vip     VIP
	present bool
}

// NewModel returns an empty model for cfg (zero fields take the defaults).
func NewModel(cfg Config) *Model {
	m := &Model{
		b:       newBuilder(cfg),
		nodes:   map[string]*modelNode{},
		groups:  map[groupKey]*modelGroup{},
		entries: map[identity]*modelEntry{},
		slots:   map[ServiceKey]*slot{},
		errs:    map[string]int{},

		errsAdded:   map[string]bool{},
		errsRemoved: map[string]bool{},
	}
	m.cfg = m.b.cfg
	for i, a := range []*allocator{m.b.v4, m.b.v6} {
		m.fams[i] = &book{r: a.r, claims: map[uint64]int32{}, reserved: map[uint64]int32{}, occupied: map[uint64]int32{}, wasClean: true}
	}
	for _, line := range m.b.errs {
		m.addErr(line)
	}
	return m
}

func (m *Model) book(v6 bool) *book {
	if v6 {
		return m.fams[1]
	}
	return m.fams[0]
}

// Apply applies per-node changes (a node that disappears = all its keys in
// Removed). Cost O(size of the deltas) amortised, plus the VIPs they touch.
//
// Within one NodeDelta the keys in Removed go first, then the registrations
// in Set, in order: a later registration with the same key replaces an
// earlier one. Removing a key the node does not hold does nothing; setting a
// registration equal to the one held does nothing.
func (m *Model) Apply(deltas []NodeDelta) {
	for i := range deltas {
		d := &deltas[i]
		n := m.nodes[d.Node]
		if n != nil {
			for j := range d.Removed {
				if r := n.find(&d.Removed[j]); r != nil {
					m.removeReg(r)
				}
			}
		}
		if n == nil && len(d.Set) > 0 {
			n = m.addNode(d.Node, len(d.Set))
		}
		for j := range d.Set {
			m.setReg(n, &d.Set[j])
		}
		if n != nil && len(n.regs) == 0 {
			m.dropNode(n)
		}
	}
	if len(m.memo) > 1024 {
		m.memo = nil
	} else {
		clear(m.memo)
	}
}

func (m *Model) addNode(name string, size int) *modelNode {
	n := &modelNode{name: name, byKey: make(map[uint64]*modelReg, size), regs: make([]*modelReg, 0, size)}
	if k := len(m.freeNodes); k > 0 {
		n.index = m.freeNodes[k-1]
		m.freeNodes = m.freeNodes[:k-1]
		m.b.nodeNames[n.index] = name
	} else {
		n.index = int32(len(m.b.nodeNames))
		m.b.nodeNames = append(m.b.nodeNames, name)
	}
	m.nodes[name] = n
	return n
}

func (m *Model) dropNode(n *modelNode) {
	delete(m.nodes, n.name)
	m.b.nodeNames[n.index] = ""
	m.freeNodes = append(m.freeNodes, n.index)
}

func (m *Model) setReg(n *modelNode, r *Registration) {
	k := r.Key()
	if old := n.find(&k); old != nil {
		if old.r == *r {
			return
		}
		m.removeReg(old)
	}
	mr := &modelReg{r: *r, node: n, nodeSlot: len(n.regs)}
	n.file(mr)
	n.regs = append(n.regs, mr)

	backendAddr, err := checkBackend(&mr.r)
	var c specCheck
	if err == nil {
		mk := specMemo{spec: r.VIP, framework: r.Framework, v6: backendAddr.Is6()}
		var ok bool
		if c, ok = m.memo[mk]; !ok {
			c.key, c.name, c.err = checkSpec(r.VIP, r.Framework, backendAddr)
			if m.memo == nil {
				m.memo = map[specMemo]specCheck{}
			}
			m.memo[mk] = c
		}
		err = c.err
	}
	if err != nil {
		mr.errLine = fmt.Sprintf("node %q: %s backend %s: %v", n.name, r.VIP, r.Backend, err)
		m.addErr(mr.errLine)
		return
	}

	g := m.groups[c.key]
	if g == nil {
		g = m.addGroup(c.key)
	}
	mr.group, mr.slot, mr.name = g, len(g.regs), c.name
	mr.member = m.b.newMember(int(n.index), &mr.r)
	g.regs = append(g.regs, mr)
	m.markGroup(g)
	if e := g.entry; e != nil {
		m.addSpelling(e, c.name)
		before := e.claimKey()
		e.offerClaim(mr.r.Claim, n.name)
		m.claimMayHaveChanged(e, before)
	}
}

func (m *Model) removeReg(mr *modelReg) {
	n := mr.node
	n.unfile(mr)
	last := n.regs[len(n.regs)-1]
	n.regs[mr.nodeSlot], last.nodeSlot = last, mr.nodeSlot
	n.regs[len(n.regs)-1] = nil
	n.regs = n.regs[:len(n.regs)-1]

	g := mr.group
	if g == nil {
		m.delErr(mr.errLine)
		return
	}
	last = g.regs[len(g.regs)-1]
	g.regs[mr.slot], last.slot = last, mr.slot
	g.regs[len(g.regs)-1] = nil
	g.regs = g.regs[:len(g.regs)-1]
	m.markGroup(g)
	if e := g.entry; e != nil {
		m.removeSpelling(e, mr.name)
		c := mr.r.Claim
		c.Addr = c.Addr.Unmap()
		if e.claimed && c.Addr == e.claim.Addr && c.Since.Equal(e.claim.Since) && n.name == e.claimNode {
			// The registration that gave the name its claim went: find
			// the earliest of the others.
			before := e.claimKey()
			e.claimed, e.claim, e.claimNode = false, Claim{}, ""
			for _, og := range e.groups {
				for _, r := range og.regs {
					e.offerClaim(r.r.Claim, r.node.name)
				}
			}
			m.claimMayHaveChanged(e, before)
		}
	}
	if len(g.regs) == 0 {
		m.dropGroup(g)
	}
}

func (m *Model) addGroup(k groupKey) *modelGroup {
	g := &modelGroup{key: k}
	m.groups[k] = g
	if k.named() {
		e := m.entries[k.id]
		if e == nil {
			e = m.addEntry(k.id)
		}
		g.entry, g.slot = e, len(e.groups)
		e.groups = append(e.groups, g)
	} else {
		f := m.book(k.addr.Is6())
		if i, ok := f.r.index(k.addr); ok {
			if f.reserved[i]++; f.reserved[i] == 1 {
				f.dirty = true
			}
			f.occupied[i]++
		}
	}
	return g
}

func (m *Model) dropGroup(g *modelGroup) {
	g.dead = true
	delete(m.groups, g.key)
	if e := g.entry; e != nil {
		last := e.groups[len(e.groups)-1]
		e.groups[g.slot], last.slot = last, g.slot
		e.groups[len(e.groups)-1] = nil
		e.groups = e.groups[:len(e.groups)-1]
		if len(e.groups) == 0 {
			m.dropEntry(e)
		}
		return
	}
	f := m.book(g.key.addr.Is6())
	if i, ok := f.r.index(g.key.addr); ok {
		if f.reserved[i]--; f.reserved[i] == 0 {
			delete(f.reserved, i)
			f.dirty = true
		}
		f.unoccupy(i)
	}
}

func (f *book) unoccupy(i uint64) {
	if f.occupied[i]--; f.occupied[i] <= 0 {
		delete(f.occupied, i)
	}
}

func (m *Model) addEntry(id identity) *modelEntry {
	e := &modelEntry{nameEntry: nameEntry{id: id}}
	m.entries[id] = e
	if err := m.b.setNames(&e.nameEntry); err != nil {
		e.dnsErr = err
	} else {
		f := m.book(id.v6)
		e.fam, e.famSlot = f, len(f.list)
		f.list = append(f.list, e)
		f.count(e)
		f.dirty = true
		f.markChanged(e)
	}
	m.markEntry(e)
	return e
}

func (m *Model) dropEntry(e *modelEntry) {
	e.dead = true
	delete(m.entries, e.id)
	if e.errLine != "" {
		m.delErr(e.errLine)
		e.errLine = ""
	}
	f := e.fam
	if f == nil {
		return
	}
	f.uncount(e)
	last := f.list[len(f.list)-1]
	f.list[e.famSlot], last.famSlot = last, e.famSlot
	f.list[len(f.list)-1] = nil
	f.list = f.list[:len(f.list)-1]
	if e.placed {
		if i, ok := f.r.index(e.addr); ok {
			f.unoccupy(i)
		}
		e.placed = false
	}
	f.dirty = true
}

func (f *book) markChanged(e *modelEntry) {
	if !e.changed {
		e.changed = true
		f.changed = append(f.changed, e)
	}
}

// count adds e's claim to the family's tally.
func (f *book) count(e *modelEntry) {
	if e.claimed {
		if i, ok := f.r.index(e.claim.Addr); ok {
			e.countedUsable, e.countedIndex = true, i
			if f.claims[i]++; f.claims[i] == 2 {
				f.collisions++
			}
			return
		}
	}
	e.countedUsable = false
	f.unclaimed++
}

// uncount takes e's claim, as counted, out of the family's tally.
func (f *book) uncount(e *modelEntry) {
	if !e.countedUsable {
		f.unclaimed--
		return
	}
	i := e.countedIndex
	switch f.claims[i]--; f.claims[i] {
	case 1:
		f.collisions--
	case 0:
		delete(f.claims, i)
	}
}

// claimKey is what of a name's claim the placement depends on.
type claimKey struct {
	claimed bool
	addr    netip.Addr
	since   time.Time
}

func (e *modelEntry) claimKey() claimKey {
	return claimKey{claimed: e.claimed, addr: e.claim.Addr, since: e.claim.Since}
}

func (m *Model) claimMayHaveChanged(e *modelEntry, before claimKey) {
	now := e.claimKey()
	if now.claimed == before.claimed && now.addr == before.addr && now.since.Equal(before.since) {
		return
	}
	if f := e.fam; f != nil {
		f.uncount(e)
		f.count(e)
		f.dirty = true
		f.markChanged(e)
	}
}

func (m *Model) addSpelling(e *modelEntry, name string) {
	for i := range e.spellings {
		if e.spellings[i].name == name {
			e.spellings[i].count++
			return
		}
	}
	e.spellings = append(e.spellings, spelling{name: name, count: 1})
	if e.display == "" || name < e.display {
		e.display = name
		m.markEntry(e)
	}
}

func (m *Model) removeSpelling(e *modelEntry, name string) {
	for i := range e.spellings {
		if e.spellings[i].name != name {
			continue
		}
		if e.spellings[i].count--; e.spellings[i].count > 0 {
			return
		}
		e.spellings = slices.Delete(e.spellings, i, i+1)
		if name == e.display {
			e.display = ""
			for _, s := range e.spellings {
				if e.display == "" || s.name < e.display {
					e.display = s.name
				}
			}
			m.markEntry(e)
		}
		return
	}
}

func (m *Model) markGroup(g *modelGroup) {
	if !g.dirty {
		g.dirty = true
		m.dirtyGroups = append(m.dirtyGroups, g)
	}
}

func (m *Model) markEntry(e *modelEntry) {
	if !e.dirty {
		e.dirty = true
		m.dirtyEntries = append(m.dirtyEntries, e)
	}
}

func (m *Model) addErr(line string) {
	if m.errs[line]++; m.errs[line] == 1 {
		if m.errsRemoved[line] {
			delete(m.errsRemoved, line)
		} else {
			m.errsAdded[line] = true
		}
	}
}

func (m *Model) delErr(line string) {
	if m.errs[line]--; m.errs[line] <= 0 {
		delete(m.errs, line)
		if m.errsAdded[line] {
			delete(m.errsAdded, line)
		} else {
			m.errsRemoved[line] = true
		}
	}
}

func (m *Model) errsChanged() bool { return len(m.errsAdded)+len(m.errsRemoved) > 0 }

// place brings the address book up to date with the names and claims.
func (m *Model) place() {
	for _, f := range m.fams {
		if !f.dirty {
			continue
		}
		clean := f.clean()
		if clean && f.wasClean {
			// Every name is at its claim: only the names whose claim
			// changed (or that are new) move.
			for _, e := range f.changed {
				if !e.dead {
					m.setPlacement(f, e, e.claim.Addr, true)
				}
			}
		} else {
			m.placeAll(f)
		}
		for _, e := range f.changed {
			e.changed = false
		}
		clear(f.changed)
		f.changed = f.changed[:0]
		f.wasClean, f.dirty = clean, false
	}
}

// placeAll places every name of f as Build does, and moves the names whose
// address changed.
func (m *Model) placeAll(f *book) {
	a := &allocator{r: f.r, next: make(map[uint64]uint64, len(f.reserved)+len(f.list)), owner: make(map[uint64]bool, len(f.list))}
	for i := range f.reserved {
		a.occupy(i)
	}
	ents := m.ents[:0]
	for _, e := range f.list {
		e.prevAddr, e.prevPlaced = e.addr, e.placed
		e.addr, e.placed = netip.Addr{}, false
		ents = append(ents, &e.nameEntry)
	}
	placeNames(a, ents)
	clear(ents)
	m.ents = ents[:0]
	for _, e := range f.list {
		addr, placed := e.addr, e.placed
		if addr == e.prevAddr && placed == e.prevPlaced {
			continue
		}
		e.addr, e.placed = e.prevAddr, e.prevPlaced
		m.setPlacement(f, e, addr, placed)
	}
}

func (m *Model) setPlacement(f *book, e *modelEntry, addr netip.Addr, placed bool) {
	if e.addr == addr && e.placed == placed {
		return
	}
	if e.placed {
		if i, ok := f.r.index(e.addr); ok {
			f.unoccupy(i)
		}
	}
	if placed {
		if i, ok := f.r.index(addr); ok {
			f.occupied[i]++
		}
	}
	e.addr, e.placed = addr, placed
	m.markEntry(e)
}

// entryLine is the error line of a name: its DNS error, or the range full.
func (m *Model) entryLine(e *modelEntry) string {
	switch {
	case e.dnsErr != nil:
		return fmt.Sprintf("%s (%s): %v", e.display, e.id.framework, e.dnsErr)
	case !e.placed:
		return fullError(e.fam.r.prefix, &e.nameEntry)
	}
	return ""
}

// Table returns the desired table for the current state:
// Equal(Build(cfg, m.State())) always (same VIPs, same Errors). When
// something changed since the previous call it returns a new table made
// with Derive from the previous one, listing the changed keys; otherwise
// the same pointer. Cost O(changed VIPs) plus at most a copy of the VIP
// slice.
//
// The changed keys are exactly the service keys at which the new table's
// VIPs differ from the previous table's; a change that leaves every VIP and
// every error line as it was returns the previous table.
func (m *Model) Table() *Table {
	m.place()
	for _, e := range m.dirtyEntries {
		e.dirty = false
		if e.dead {
			continue
		}
		if line := m.entryLine(e); line != e.errLine {
			if e.errLine != "" {
				m.delErr(e.errLine)
			}
			if line != "" {
				m.addErr(line)
			}
			e.errLine = line
		}
		for _, g := range e.groups {
			m.markGroup(g)
		}
	}
	clear(m.dirtyEntries)
	m.dirtyEntries = m.dirtyEntries[:0]
	if m.table != nil && len(m.dirtyGroups) == 0 && !m.errsChanged() {
		return m.table
	}

	// Take every changed group out of its slot, then file the living ones
	// where they now stand: two names can swap addresses in one change.
	keys := m.keys[:0]
	for _, g := range m.dirtyGroups {
		if !g.shown {
			continue
		}
		s := m.slots[g.at]
		if s.named == g {
			s.named = nil
		} else {
			s.ip = nil
		}
		g.shown = false
		keys = append(keys, g.at)
	}
	for _, g := range m.dirtyGroups {
		g.dirty = false
		if g.dead {
			continue
		}
		k := ServiceKey{Addr: g.key.addr, Port: g.key.port, Protocol: g.key.proto}
		var e *nameEntry
		if g.entry != nil {
			if !g.entry.placed {
				continue
			}
			e = &g.entry.nameEntry
			k.Addr = e.addr
		}
		m.fill(g, k, e)
		s := m.slots[k]
		if s == nil {
			s = &slot{}
			m.slots[k] = s
		}
		if g.entry != nil {
			s.named = g
		} else {
			s.ip = g
		}
		g.at, g.shown = k, true
		keys = append(keys, k)
	}
	clear(m.dirtyGroups)
	m.dirtyGroups = m.dirtyGroups[:0]

	// What each touched key now holds.
	slices.SortFunc(keys, compareServiceKeys)
	keys = slices.Compact(keys)
	var old []VIP
	if m.table != nil {
		old = m.table.VIPs
	}
	changes := m.changes[:0]
	for _, k := range keys {
		c := vipChange{key: k}
		line := ""
		s := m.slots[k]
		if s != nil {
			switch {
			case s.named != nil:
				c.vip, c.present = s.named.vip, true
				if s.ip != nil {
					line = leftOutLine(s.ip.key, &c.vip)
				}
			case s.ip != nil:
				c.vip, c.present = s.ip.vip, true
			}
			if line != s.line {
				if s.line != "" {
					m.delErr(s.line)
				}
				if line != "" {
					m.addErr(line)
				}
				s.line = line
			}
			if !c.present {
				delete(m.slots, k)
			}
		}
		i, had := slices.BinarySearchFunc(old, k, func(v VIP, k ServiceKey) int { return compareServiceKeys(v.ServiceKey, k) })
		if had == c.present && (!had || equalVIPs(old[i], c.vip)) {
			continue
		}
		changes = append(changes, c)
	}
	m.keys = keys[:0]

	errs, errsSame := m.errorList()
	if m.table != nil && len(changes) == 0 && errsSame {
		m.changes = changes[:0]
		return m.table
	}

	// The new VIPs: the old ones, with the changes merged in.
	added := 0
	for _, c := range changes {
		if c.present {
			added++
		}
	}
	vips := make([]VIP, 0, len(old)+added)
	changed := make([]ServiceKey, len(changes))
	i := 0
	for n, c := range changes {
		changed[n] = c.key
		j, found := slices.BinarySearchFunc(old[i:], c.key, func(v VIP, k ServiceKey) int { return compareServiceKeys(v.ServiceKey, k) })
		vips = append(vips, old[i:i+j]...)
		i += j
		if found {
			i++
		}
		if c.present {
			vips = append(vips, c.vip)
		}
	}
	vips = append(vips, old[i:]...)
	clear(changes)
	m.changes = changes[:0]
	m.table = Derive(m.table, vips, errs, changed)
	return m.table
}

// errorList returns the sorted error lines, and whether they are those of
// the current table (then it returns the current table's slice). It merges
// the lines that appeared since the last table into that table's lines,
// less the lines that went: O(lines) to copy, O(a log a) to sort the a new
// ones.
func (m *Model) errorList() ([]string, bool) {
	var current []string
	if m.table != nil {
		current = m.table.Errors
	}
	if !m.errsChanged() {
		return current, m.table != nil
	}
	added := make([]string, 0, len(m.errsAdded))
	for line := range m.errsAdded {
		added = append(added, line)
	}
	slices.Sort(added)
	n := len(current) + len(added) - len(m.errsRemoved)
	var errs []string
	if n > 0 {
		errs = make([]string, 0, n)
	}
	i := 0
	for _, line := range current {
		if m.errsRemoved[line] {
			continue
		}
		for i < len(added) && added[i] < line {
			errs = append(errs, added[i])
			i++
		}
		errs = append(errs, line)
	}
	errs = append(errs, added[i:]...)
	clear(m.errsAdded)
	clear(m.errsRemoved)
	return errs, false
}

// fill computes the VIP of g at service key k (e is g's name entry).
func (m *Model) fill(g *modelGroup, k ServiceKey, e *nameEntry) {
	g.vip = groupVIP(k, g.key, e)
	ms := m.members[:0]
	for _, r := range g.regs {
		ms = append(ms, r.member)
	}
	m.members = ms[:0]
	// Each VIP's backends get an array of their own (fillBackends carves
	// from an array sized by backendsLeft).
	m.b.backends, m.b.backendsLeft = nil, len(ms)
	m.b.fillBackends(&g.vip, ms)
	m.b.backends = nil
}

// State returns the state as a ClusterState (sorted by node; O(N): for
// tests and the API, not the hot path). Nodes without registrations are
// not in it.
func (m *Model) State() ClusterState {
	out := make(ClusterState, 0, len(m.nodes))
	for _, n := range m.nodes {
		ns := NodeState{Node: n.name, Backends: make([]Registration, len(n.regs))}
		for i, r := range n.regs {
			ns.Backends[i] = r.r
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeState) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// Placed returns the address the current table gives the named key, if
// placed: the address Table would give the name now, whether or not Table
// has been called since the last Apply. The key's name may be written
// without its leading "/" and in any case, an empty framework is
// DefaultFramework.
func (m *Model) Placed(k NameKey) (netip.Addr, bool) {
	m.place()
	e := m.entries[k.identity()]
	if e == nil || !e.placed {
		return netip.Addr{}, false
	}
	return e.addr, true
}

// identity is the address-book identity of k, normalised.
func (k NameKey) identity() identity {
	fw := k.Framework
	if fw == "" {
		fw = DefaultFramework
	}
	name := k.Name
	if !strings.HasPrefix(name, "/") {
		name = "/" + name
	}
	return identity{framework: strings.ToLower(fw), name: strings.ToLower(name), v6: k.V6}
}
