package vip

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// RegKey identifies a registration within one node's record: a node
// publishes at most one registration per VIP spec (as written), framework
// and backend. A later registration with the same key replaces the earlier.
type RegKey struct {
	VIP       Spec
	Framework string
	Backend   netip.AddrPort
}

// Key returns r's RegKey.
func (r *Registration) Key() RegKey {
	return RegKey{VIP: r.VIP, Framework: r.Framework, Backend: r.Backend}
}

// NodeDelta is how one node's registrations changed: the registrations with
// the keys in Removed left; those in Set were added or replaced one with the
// same key. A key is in at most one of the two lists.
type NodeDelta struct {
	Node    string
	Removed []RegKey
	Set     []Registration
}

// NameKey identifies a named VIP's address in the address book: the
// framework (DefaultFramework when empty) and the app's path, both
// lower-cased, and the address family. All ports and both protocols of one
// name share one address per family.
type NameKey struct {
	Framework string
	Name      string
	V6        bool
}

// NameKeyOf returns the NameKey of a named VIP's registration; its family is
// the backend's. The name is normalised as Build files it: lower-cased, with
// its leading "/" ("App" and "/app" are one name).
func NameKeyOf(r *Registration) NameKey {
	fw := r.Framework
	if fw == "" {
		fw = DefaultFramework
	}
	name := r.VIP.Name
	if name != "" && !strings.HasPrefix(name, "/") {
		name = "/" + name
	}
	b := r.Backend.Addr()
	return NameKey{Framework: strings.ToLower(fw), Name: strings.ToLower(name), V6: b.Is6() && !b.Is4In6()}
}

// CompareServiceKeys orders service keys as a Table's VIPs are ordered: by
// address, port, then protocol.
func CompareServiceKeys(a, b ServiceKey) int { return compareServiceKeys(a, b) }

// changeLog records, for a lineage of tables derived one from the other,
// which service keys each derivation changed, so that a consumer holding an
// older table of the lineage can ask what differs in the newer one. It keeps
// the most recent entries only; a consumer further behind diffs in full.
// Each entry names the table it leads to and the table it came from, so a
// second table derived from the same base (a branch) cuts off the first
// branch's record instead of lending it the wrong keys.
type changeLog struct {
	mu      sync.Mutex // guards the fields below
	first   uint64     // generation that entries[0] leads to
	entries []changeEntry
	keys    int // keys held in entries
}

type changeEntry struct {
	id, parent uint64
	keys       []ServiceKey
}

// tableIDs numbers tables for their change logs.
var tableIDs atomic.Uint64

// Bounds of a changeLog: past either, the oldest entries are dropped.
const (
	changeLogEntries = 4096
	changeLogKeys    = 1 << 16
)

// append records the keys that lead from table parent to table id, of
// generation gen.
func (l *changeLog) append(gen uint64, e changeEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case len(l.entries) > 0 && gen > l.first && gen <= l.first+uint64(len(l.entries)):
		// Keep what leads up to gen-1; a branch drops what came after.
		for _, old := range l.entries[gen-l.first:] {
			l.keys -= len(old.keys)
		}
		clear(l.entries[gen-l.first:])
		l.entries = l.entries[:gen-l.first]
	default:
		clear(l.entries)
		l.entries, l.keys, l.first = l.entries[:0], 0, gen
	}
	l.entries = append(l.entries, e)
	l.keys += len(e.keys)
	for len(l.entries) > 1 && (len(l.entries) > changeLogEntries || l.keys > changeLogKeys) {
		l.keys -= len(l.entries[0].keys)
		l.entries[0] = changeEntry{}
		l.entries = l.entries[1:]
		l.first++
	}
}

// since returns the union of the keys that lead from table base to table t,
// and false when the log does not hold that whole path.
func (l *changeLog) since(base, t *Table) ([]ServiceKey, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if base.gen+1 < l.first || t.gen >= l.first+uint64(len(l.entries)) {
		return nil, false
	}
	var seen map[ServiceKey]bool
	var out []ServiceKey
	id := t.id
	for g := t.gen; g > base.gen; g-- {
		e := &l.entries[g-l.first]
		if e.id != id {
			return nil, false
		}
		if g == t.gen && g == base.gen+1 {
			out = slices.Clone(e.keys)
		} else {
			if seen == nil {
				seen = map[ServiceKey]bool{}
			}
			for _, k := range e.keys {
				if !seen[k] {
					seen[k] = true
					out = append(out, k)
				}
			}
		}
		id = e.parent
	}
	if id != base.id {
		return nil, false
	}
	return out, true
}

// ChangedSince returns the service keys at which t may differ from base,
// when t was derived (through Derive, directly or in steps) from base and
// the record of those steps is still kept: a consumer that applied base
// then does work in proportion to the change, not to the table. Every key
// at which the two differ (a VIP added, removed or changed) is in the list;
// a key whose VIP ended up equal may be too. ok is false when t does not
// descend from base or the record is gone: diff the two tables in full.
// The Errors of the two tables are not covered: compare them.
func (t *Table) ChangedSince(base *Table) (keys []ServiceKey, ok bool) {
	if t == base {
		return nil, t != nil
	}
	if t == nil || base == nil || t.log == nil || t.log != base.log || base.gen >= t.gen {
		return nil, false
	}
	return t.log.since(base, t)
}

// Derive returns a new table holding vips (sorted by service key, as in
// every Table) and errs (sorted), and records that it differs from base at
// most at the keys in changed, for ChangedSince. vips and errs are owned by
// the new table from then on. A nil base is the empty table.
func Derive(base *Table, vips []VIP, errs []string, changed []ServiceKey) *Table {
	t := &Table{VIPs: vips, Errors: errs, id: tableIDs.Add(1)}
	if base == nil {
		base = &Table{}
	}
	if base.log == nil {
		// A table built by Build (or by hand) starts no lineage; a new
		// one starts here.
		t.log, t.gen = &changeLog{}, 1
		return t
	}
	t.log, t.gen = base.log, base.gen+1
	t.log.append(t.gen, changeEntry{id: t.id, parent: base.id, keys: slices.Clone(changed)})
	return t
}

// lineage starts a change log at t, so that tables derived from it can say
// what changed.
func (t *Table) lineage() *Table {
	t.id = tableIDs.Add(1)
	t.log = &changeLog{}
	return t
}
