package dns

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// srvProtocols are the protocols whose SRV owners point at a name: when a
// name's addresses change, the prepared SRV answers of these owners carry
// them as glue and are prepared again.
var srvProtocols = [...]vip.Protocol{vip.TCP, vip.UDP}

// diffStats says, for logs and tests, what an update by difference did.
type diffStats struct {
	keys    int      // service keys the table lineage said may have changed
	changed int      // VIPs whose answers changed (added, removed or changed)
	names   int      // owner names whose records changed
	outside []string // names of added VIPs left out: not under the apex
}

// update returns the zone for table t made from z, the zone of table prev,
// by difference: keys are the service keys at which t may differ from prev
// (vip.Table.ChangedSince). Only the names of the VIPs at those keys, in
// prev and in t, are touched; their maps and nodes are copied and the rest
// is shared, so the cost follows the change, not the zone. z itself is not
// written: queries may go on reading it. An error says that z's counts do
// not match prev (a bug); the caller then builds in full.
func (z *zone) update(serial uint32, prev, t *vip.Table, keys []vip.ServiceKey) (*zone, diffStats, error) {
	nz := &zone{
		serial:   serial,
		ttl:      z.ttl,
		apex:     z.apex,
		aliases:  z.aliases,
		apexes:   z.apexes,
		ra:       z.ra,
		ns:       z.ns,
		seed:     z.seed,
		shards:   z.shards,
		vipNames: z.vipNames,
	}
	nz.soa = nz.newSOA(serial)
	e := zoneEdit{
		z:          nz,
		own:        make(map[int]bool),
		nodes:      make(map[string]*node),
		addrsMoved: make(map[string]bool),
		srvsMoved:  make(map[string]bool),
	}
	// A key may be listed more than once (changed in several steps, or
	// twice in one); each must be applied once.
	keys = slices.Clone(keys)
	slices.SortFunc(keys, vip.CompareServiceKeys)
	keys = slices.Compact(keys)
	st := diffStats{keys: len(keys)}
	for _, k := range keys {
		was, inPrev := prev.Find(k)
		is, inNext := t.Find(k)
		if inPrev && inNext && sameAnswers(&was, &is) {
			continue
		}
		if inPrev {
			if err := e.apply(&was, -1); err != nil {
				return nil, st, fmt.Errorf("remove %s: %w", k.Addr, err)
			}
		}
		if inNext {
			if err := e.apply(&is, 1); err != nil {
				return nil, st, fmt.Errorf("add %s: %w", k.Addr, err)
			}
		}
		st.changed++
	}
	names, err := e.finish()
	if err != nil {
		return nil, st, err
	}
	st.names, st.outside = names, e.outside
	return nz, st, nil
}

// sameAnswers says whether two VIPs at one service key give the same
// records: the same names, and both serving or both not.
func sameAnswers(a, b *vip.VIP) bool {
	return a.ServiceKey == b.ServiceKey && serving(a) == serving(b) && slices.Equal(a.Names, b.Names)
}

// zoneEdit is a zone being made from a published one. The first write to a
// map or a node copies it into the new zone; the published zone is only
// read.
type zoneEdit struct {
	z          *zone
	ownShards  bool             // z.shards is no longer the published zone's slice
	own        map[int]bool     // maps already copied
	nodes      map[string]*node // nodes copied or made by this edit
	addrsMoved map[string]bool  // names whose set of addresses changed
	srvsMoved  map[string]bool  // owners whose set of SRV records changed
	outside    []string
}

// apply adds (delta 1) or removes (delta -1) what a VIP gives the zone: its
// address under each of its names and one SRV record per name, as buildZone
// does.
func (e *zoneEdit) apply(v *vip.VIP, delta int32) error {
	if len(v.Names) == 0 || !serving(v) {
		return nil
	}
	z := e.z
	for _, n := range v.Names {
		name := strings.ToLower(mdns.Fqdn(n))
		if name == z.apex || !under(z.apex, name) {
			if delta > 0 {
				e.outside = append(e.outside, n)
			}
			continue
		}
		nd := e.writable(name, delta > 0)
		if nd == nil {
			return fmt.Errorf("name %s is not in the zone", name)
		}
		moved, err := nd.countAddr(v.Addr, delta)
		if err != nil {
			return fmt.Errorf("name %s: %w", name, err)
		}
		if moved {
			e.addrsMoved[name] = true
		}
		owner := srvOwner(name, v.Protocol)
		od := e.writable(owner, delta > 0)
		if od == nil {
			return fmt.Errorf("SRV owner %s is not in the zone", owner)
		}
		moved, err = od.countSrv(srvKey{port: v.Port, target: name}, delta)
		if err != nil {
			return fmt.Errorf("SRV owner %s: %w", owner, err)
		}
		if moved {
			e.srvsMoved[owner] = true
		}
	}
	return nil
}

// finish makes the records of the names whose references changed, counts
// the names at or below each of their ancestors (creating and dropping
// empty non-terminals), and prepares the answers that changed: those of the
// changed names, and the SRV answers that carry a changed name's addresses
// as glue. It returns how many names changed.
func (e *zoneEdit) finish() (int, error) {
	z := e.z
	nsName := "ns." + z.apex
	touched := make([]string, 0, len(e.addrsMoved)+len(e.srvsMoved))
	for name := range e.addrsMoved {
		touched = append(touched, name)
	}
	for name := range e.srvsMoved {
		if !e.addrsMoved[name] {
			touched = append(touched, name)
		}
	}
	for _, name := range touched {
		nd := e.nodes[name]
		had, hadAddr := nd.hasRecords(), len(nd.a) > 0 || len(nd.aaaa) > 0
		z.fill(name, nd)
		has, hasAddr := nd.hasRecords(), len(nd.a) > 0 || len(nd.aaaa) > 0
		if name != nsName && hadAddr != hasAddr {
			if hasAddr {
				z.vipNames++
			} else {
				z.vipNames--
			}
		}
		if had == has {
			continue
		}
		delta := int32(1)
		if !has {
			delta = -1
		}
		for p := name; p != ""; p = parentName(p) {
			e.writable(p, true).below += delta
			if p == z.apex || !under(z.apex, p) {
				break
			}
		}
	}
	// Drop the nodes with nothing left at or below them.
	for name, nd := range e.nodes {
		switch {
		case nd.below < 0:
			return 0, fmt.Errorf("name %s: %d names below it", name, nd.below)
		case nd.below == 0 && name != z.apex:
			delete(z.shards[z.shardOf(name)], name) // a map this edit owns
			delete(e.nodes, name)
		}
	}
	prep := make(map[string]bool, 2*len(touched))
	for _, name := range touched {
		prep[name] = true
	}
	for name := range e.addrsMoved {
		for _, proto := range srvProtocols {
			prep[srvOwner(name, proto)] = true
		}
	}
	for name := range prep {
		if nd := e.writable(name, false); nd != nil {
			nd.fast = z.prepare(name, nd)
		}
	}
	return len(touched), nil
}

// writable returns the new zone's own copy of the node of name, copying it
// (and its map) on first use; a new empty node when there is none and
// create is set; nil otherwise.
func (e *zoneEdit) writable(name string, create bool) *node {
	if nd := e.nodes[name]; nd != nil {
		return nd
	}
	i := e.z.shardOf(name)
	old := e.z.shards[i][name]
	if old == nil && !create {
		return nil
	}
	if !e.ownShards {
		e.z.shards = slices.Clone(e.z.shards)
		e.ownShards = true
	}
	if !e.own[i] {
		if sh := e.z.shards[i]; sh != nil {
			e.z.shards[i] = maps.Clone(sh)
		} else {
			e.z.shards[i] = make(map[string]*node)
		}
		e.own[i] = true
	}
	nd := &node{}
	if old != nil {
		*nd = *old
		nd.addrs = slices.Clone(old.addrs)
		nd.srvs = slices.Clone(old.srvs)
	}
	e.z.shards[i][name] = nd
	e.nodes[name] = nd
	return nd
}

// countAddr adds delta (1 or -1) references to a; it says whether the set
// of addresses changed.
func (nd *node) countAddr(a netip.Addr, delta int32) (bool, error) {
	i, found := slices.BinarySearchFunc(nd.addrs, a, func(r addrRef, a netip.Addr) int { return r.addr.Compare(a) })
	switch {
	case found:
		nd.addrs[i].n += delta
		if nd.addrs[i].n > 0 {
			return false, nil
		}
		nd.addrs = slices.Delete(nd.addrs, i, i+1)
		return true, nil
	case delta > 0:
		nd.addrs = slices.Insert(nd.addrs, i, addrRef{addr: a, n: delta})
		return true, nil
	}
	return false, fmt.Errorf("no reference to address %s", a)
}

// countSrv adds delta (1 or -1) references to k; it says whether the set of
// SRV records changed.
func (nd *node) countSrv(k srvKey, delta int32) (bool, error) {
	i, found := slices.BinarySearchFunc(nd.srvs, k, func(r srvRef, k srvKey) int { return compareSrvKeys(r.srvKey, k) })
	switch {
	case found:
		nd.srvs[i].n += delta
		if nd.srvs[i].n > 0 {
			return false, nil
		}
		nd.srvs = slices.Delete(nd.srvs, i, i+1)
		return true, nil
	case delta > 0:
		nd.srvs = slices.Insert(nd.srvs, i, srvRef{srvKey: k, n: delta})
		return true, nil
	}
	return false, fmt.Errorf("no reference to SRV %d %s", k.port, k.target)
}
