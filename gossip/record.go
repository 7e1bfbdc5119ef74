package gossip

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// Version orders the records one node publishes. Generation is fixed for the
// life of a process (the wall clock in nanoseconds when it started, raised
// above any older generation the cluster still remembers for this name);
// Seq counts the node's publications within that generation, from 1.
//
// Versions compare generation first, so a restarted node, whose Seq starts
// again from 1, still outranks everything its previous life published.
type Version struct {
	Generation uint64
	Seq        uint64
}

// Compare returns -1, 0 or +1 as v is older than, the same as, or newer
// than o.
func (v Version) Compare(o Version) int {
	if c := cmp.Compare(v.Generation, o.Generation); c != 0 {
		return c
	}
	return cmp.Compare(v.Seq, o.Seq)
}

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool { return v.Compare(o) < 0 }

// record is one node's full publication at one version, as a plain list:
// what tests build and what a full delta (base 0) carries.
type record struct {
	Node    string
	Version Version
	// Leaving is set on the last record a node publishes before a graceful
	// leave; such a record carries no registrations.
	Leaving bool
	// Restarting is set on the last record a node publishes before a
	// restart (Cluster.Restart): same registrations, kept visible by
	// peers for Config.RestartGrace while the node is gone.
	Restarting    bool
	Registrations []vip.Registration
}

// Page layout. A record's registrations are spread over 2^layout pages by
// the top bits of a hash of their vip.RegKey. The owner keeps, per page, the
// Seq at which it last changed, so that "what changed since version v" is
// the pages changed after v. The page count follows the record's size
// (amortised: it doubles past pageGrowAt registrations per page on average,
// halves under pageShrinkAt), so a page stays small whatever the record.
const (
	maxLayout     = 16 // 65,536 pages
	pageGrowAt    = 64
	pageShrinkAt  = 8
	pageTargetAvg = 24 // average aimed at when the layout changes
)

// layoutFor returns the layout a record of n registrations should have,
// given its current layout: the current one while the average page holds
// between pageShrinkAt and pageGrowAt registrations.
func layoutFor(cur uint8, n int) uint8 {
	pages := 1 << cur
	if n <= pages*pageGrowAt && (cur == 0 || n >= pages*pageShrinkAt) {
		return cur
	}
	l := uint8(0)
	for l < maxLayout && (1<<l)*pageTargetAvg < n {
		l++
	}
	return l
}

// regEntry is one registration held in a page with what is derived from its
// encoding: the hash of its key (which page), the hash of all of it (the
// record's content sum) and its encoded size (the record's size cap).
type regEntry struct {
	reg     vip.Registration
	keyHash uint64
	hash    uint64
	size    int
}

// newRegEntry encodes r (normalised) once and derives the entry.
func newRegEntry(r vip.Registration) regEntry {
	var buf [192]byte
	e := encoder{b: buf[:0]}
	e.regKey(r.Key())
	kh := fnv64(e.b)
	e.regRest(&r)
	return regEntry{reg: r, keyHash: kh, hash: fnv64(e.b), size: len(e.b)}
}

// keyHashOf returns the page hash of k.
func keyHashOf(k vip.RegKey) uint64 {
	var buf [128]byte
	e := encoder{b: buf[:0]}
	e.regKey(k)
	return fnv64(e.b)
}

// fnv64 is 64-bit FNV-1a: the same on every node (unlike maphash).
func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// pageOf returns the page of a key hash under layout.
func pageOf(keyHash uint64, layout uint8) int {
	if layout == 0 {
		return 0
	}
	return int(keyHash >> (64 - layout))
}

// page is one page of a record. Its registrations are a short unsorted
// list (a page holds about 24 on average, at most a few hundred), searched
// by key hash then key: a map per page cost eight slots of memory for a
// one-registration record, which with a thousand nodes each holding a
// thousand records was gigabytes for the garbage collector to scan.
type page struct {
	// seq is the Seq at which the page last changed (on the owner; on a
	// copy, the Seq that last brought it).
	seq  uint64
	regs []regEntry
}

// find returns the index of k in p, or -1.
func (p *page) find(k *vip.RegKey, keyHash uint64) int {
	for i := range p.regs {
		e := &p.regs[i]
		if e.keyHash == keyHash && e.reg.VIP == k.VIP && e.reg.Framework == k.Framework && e.reg.Backend == k.Backend {
			return i
		}
	}
	return -1
}

// nodeRecord is one node's registrations at one version, paged. The
// owner's record and every copy of a peer's have the same shape; all
// methods are called with store.mu held.
type nodeRecord struct {
	version Version
	leaving bool
	// restarting: the owner announced a restart (see store.leave).
	restarting bool
	layout     uint8
	pages      []page
	count      int
	bytes      int    // encoded size of every registration
	sum        uint64 // XOR of every registration's hash: the content digest
}

func newNodeRecord(v Version, layout uint8) *nodeRecord {
	return &nodeRecord{version: v, layout: layout, pages: make([]page, 1<<layout)}
}

func (r *nodeRecord) get(k vip.RegKey, keyHash uint64) (regEntry, bool) {
	p := &r.pages[pageOf(keyHash, r.layout)]
	if i := p.find(&k, keyHash); i >= 0 {
		return p.regs[i], true
	}
	return regEntry{}, false
}

// put stores e (replacing what had its key) in a page changed at seq.
func (r *nodeRecord) put(e regEntry, seq uint64) {
	p := &r.pages[pageOf(e.keyHash, r.layout)]
	k := e.reg.Key()
	if i := p.find(&k, e.keyHash); i >= 0 {
		old := p.regs[i]
		r.bytes -= old.size
		r.sum ^= old.hash
		r.count--
		p.regs[i] = e
	} else {
		p.regs = append(p.regs, e)
	}
	p.seq = seq
	r.bytes += e.size
	r.sum ^= e.hash
	r.count++
}

// del drops the registration with key k, if held, in a page changed at seq.
func (r *nodeRecord) del(k vip.RegKey, keyHash uint64, seq uint64) (regEntry, bool) {
	p := &r.pages[pageOf(keyHash, r.layout)]
	i := p.find(&k, keyHash)
	if i < 0 {
		return regEntry{}, false
	}
	old := p.regs[i]
	last := len(p.regs) - 1
	p.regs[i] = p.regs[last]
	p.regs[last] = regEntry{}
	p.regs = p.regs[:last]
	if len(p.regs) == 0 {
		p.regs = nil
	}
	p.seq = seq
	r.bytes -= old.size
	r.sum ^= old.hash
	r.count--
	return old, true
}

// repage spreads the registrations over 2^layout pages, all changed at seq:
// a peer that asks what changed since an earlier version gets everything.
func (r *nodeRecord) repage(layout uint8, seq uint64) {
	old := r.pages
	r.layout = layout
	r.pages = make([]page, 1<<layout)
	for i := range r.pages {
		r.pages[i].seq = seq
	}
	for _, p := range old {
		for _, e := range p.regs {
			np := &r.pages[pageOf(e.keyHash, layout)]
			np.regs = append(np.regs, e)
		}
	}
}

// each calls f for every registration, in no particular order.
func (r *nodeRecord) each(f func(regEntry)) {
	for i := range r.pages {
		for _, e := range r.pages[i].regs {
			f(e)
		}
	}
}

// registrations returns every registration, sorted.
func (r *nodeRecord) registrations() []vip.Registration {
	if r.count == 0 {
		return nil
	}
	out := make([]vip.Registration, 0, r.count)
	r.each(func(e regEntry) { out = append(out, e.reg) })
	slices.SortFunc(out, compareRegistrations)
	return out
}

// wireBytes bounds the size of the full pages message for this record.
func (r *nodeRecord) wireBytes() int {
	return r.bytes + len(r.pages)*pageHeaderBytes + messageHeaderBytes
}

// normalizeRegistration puts every time in UTC without a monotonic clock
// reading, so that equal registrations compare equal and survive an
// encode/decode round trip unchanged.
func normalizeRegistration(r vip.Registration) vip.Registration {
	if !r.Claim.Since.IsZero() {
		r.Claim.Since = time.Unix(r.Claim.Since.Unix(), int64(r.Claim.Since.Nanosecond())).UTC()
	} else {
		r.Claim.Since = time.Time{}
	}
	return r
}

// normalizeRegistrations returns a sorted, normalised copy of regs (nil
// when empty).
func normalizeRegistrations(regs []vip.Registration) []vip.Registration {
	if len(regs) == 0 {
		return nil
	}
	out := make([]vip.Registration, len(regs))
	for i, r := range regs {
		out[i] = normalizeRegistration(r)
	}
	slices.SortStableFunc(out, compareRegistrations)
	return out
}

// compareRegistrations orders registrations by VIP, then backend, then every
// other field, so that the order is total and deterministic.
func compareRegistrations(a, b vip.Registration) int {
	return cmp.Or(
		compareKeys(a.Key(), b.Key()),
		cmp.Compare(a.Weight, b.Weight),
		cmp.Compare(a.Health, b.Health),
		cmp.Compare(a.Scheduler, b.Scheduler),
		cmp.Compare(a.Persistence, b.Persistence),
		compareBools(a.Public, b.Public),
		cmp.Compare(a.PublicPort, b.PublicPort),
		a.Claim.Addr.Compare(b.Claim.Addr),
		a.Claim.Since.Compare(b.Claim.Since),
	)
}

func compareBools(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// compareKeys orders registration keys by VIP, framework, then backend.
func compareKeys(a, b vip.RegKey) int {
	return cmp.Or(
		cmp.Compare(a.VIP.Protocol, b.VIP.Protocol),
		cmp.Compare(a.VIP.Name, b.VIP.Name),
		a.VIP.Addr.Compare(b.VIP.Addr),
		cmp.Compare(a.VIP.Port, b.VIP.Port),
		cmp.Compare(a.Framework, b.Framework),
		compareAddrPort(a.Backend, b.Backend),
	)
}

func compareAddrPort(a, b netip.AddrPort) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Port(), b.Port()))
}

// equalRegistrations reports whether two normalised lists hold the same
// registrations in the same order.
func equalRegistrations(a, b []vip.Registration) bool {
	return slices.EqualFunc(a, b, func(x, y vip.Registration) bool {
		return compareRegistrations(x, y) == 0
	})
}

// sameRegistration reports whether two normalised registrations are equal.
func sameRegistration(a, b vip.Registration) bool { return compareRegistrations(a, b) == 0 }

// dedupeByKey keeps, of registrations with the same key, the last one; the
// order is otherwise kept.
func dedupeByKey(regs []vip.Registration) []vip.Registration {
	last := make(map[vip.RegKey]int, len(regs))
	for i := range regs {
		last[regs[i].Key()] = i
	}
	if len(last) == len(regs) {
		return regs
	}
	out := regs[:0:0]
	for i := range regs {
		if last[regs[i].Key()] == i {
			out = append(out, regs[i])
		}
	}
	return out
}
