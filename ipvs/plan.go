package ipvs

import (
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// plan returns the kernel writes that take what is applied to what is
// desired, in the order they must run: addresses first, then services and
// their real servers, then the removal of services and addresses; and the
// keys of the services it looked at. Equal objects produce no write.
//
// With all, it looks at every desired and applied service (after a full
// resync or a failed write); otherwise only at the services whose VIP
// differs from the previous table's, that left it, or that have draining
// backends, so that a one-backend change costs the same on any table size.
//
// A backend that left the table is drained (weight 0) before it is deleted:
// it is deleted when a count of its active connections read after its drain
// began is zero, or DrainTimeout after it left; UDP backends and services
// are deleted at once.
func (r *Reconciler) plan(desired *vip.Table, now time.Time, all bool) ([]Op, []vip.ServiceKey) {
	cand := make(map[vip.ServiceKey]bool)
	addrCand := make(map[netip.Addr]bool)
	// The usual case: desired descends from the previous table, which
	// says which keys changed; nothing else is looked at.
	var changed []vip.ServiceKey
	incremental := false
	if !all && r.prev != nil {
		changed, incremental = desired.ChangedSince(r.prev)
	}
	var idx map[vip.ServiceKey]int // only when diffing in full
	switch {
	case incremental:
		for _, k := range changed {
			cand[k] = true
		}
	case all || r.prev == nil:
		idx = indexOf(desired)
		for k := range idx {
			cand[k] = true
			addrCand[k.Addr] = true
		}
		for k := range r.applied {
			cand[k] = true
		}
		for a := range r.addrs {
			addrCand[a] = true
		}
	default:
		idx = indexOf(desired)
		prevIdx := indexOf(r.prev)
		for k, i := range idx {
			if j, ok := prevIdx[k]; !ok || !sameVIP(&r.prev.VIPs[j], &desired.VIPs[i]) {
				cand[k] = true
			}
		}
		for k := range prevIdx {
			if _, ok := idx[k]; !ok {
				cand[k] = true
			}
		}
	}
	if !all && r.prev != nil {
		for k := range r.drainingSvcs {
			cand[k] = true
		}
		for k := range cand {
			addrCand[k.Addr] = true
		}
	}
	for _, a := range r.cfg.LocalAddrs {
		addrCand[a] = true
	}
	find := func(k vip.ServiceKey) (int, bool) {
		if idx != nil {
			i, ok := idx[k]
			return i, ok
		}
		return findVIP(desired, k)
	}
	// How many users each address to look at has: desired VIPs, local
	// addresses, and (below) services kept while they drain.
	addrUse := make(map[netip.Addr]int, len(addrCand))
	for a := range addrCand {
		if n := vipsAt(desired, a); n > 0 {
			addrUse[a] = n
		}
	}
	for _, a := range r.cfg.LocalAddrs {
		addrUse[a]++
	}
	keys := make([]vip.ServiceKey, 0, len(cand))
	for k := range cand {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, vip.CompareServiceKeys)

	// Room for the writes of every looked-at VIP, so that a table
	// programmed from empty does not grow the slice log(n) times.
	room := 0
	for _, k := range keys {
		if i, ok := find(k); ok {
			room += 1 + len(desired.VIPs[i].Backends)
		}
	}
	svcOps := make([]Op, 0, room)
	var delSvcs []Op
	for _, k := range keys {
		if r.foreign[k] {
			continue // an operator's service holds a public service's key
		}
		if i, ok := find(k); ok {
			svcOps = r.planService(svcOps, &desired.VIPs[i], now)
			continue
		}
		as := r.applied[k]
		if as == nil {
			continue
		}
		if as.svc.Protocol == vip.UDP || len(as.dests) == 0 {
			delSvcs = append(delSvcs, Op{Kind: DeleteService, Service: as.svc})
			continue
		}
		left := 0
		svcOps, left = r.planDrain(svcOps, as, nil, now)
		if left == 0 {
			delSvcs = append(delSvcs, Op{Kind: DeleteService, Service: as.svc})
			continue
		}
		addrUse[k.Addr]++ // the address stays while backends drain
	}

	var addAddrs, delAddrs []Op
	for a := range addrCand {
		if r.nodeAddr(a) {
			continue // the node's own address: never on the dummy interface
		}
		switch want, have := addrUse[a] > 0, r.addrs[a]; {
		case want && !have:
			addAddrs = append(addAddrs, Op{Kind: AddAddress, Addr: a})
		case !want && have:
			delAddrs = append(delAddrs, Op{Kind: DeleteAddress, Addr: a})
		}
	}
	sort.Slice(addAddrs, func(i, j int) bool { return addAddrs[i].Addr.Less(addAddrs[j].Addr) })
	sort.Slice(delAddrs, func(i, j int) bool { return delAddrs[i].Addr.Less(delAddrs[j].Addr) })
	ops := make([]Op, 0, len(addAddrs)+len(svcOps)+len(delSvcs)+len(delAddrs))
	ops = append(ops, addAddrs...)
	ops = append(ops, svcOps...)
	ops = append(ops, delSvcs...)
	ops = append(ops, delAddrs...)
	return ops, keys
}

// indexOf maps each desired VIP's key to its index in t.
func indexOf(t *vip.Table) map[vip.ServiceKey]int {
	idx := make(map[vip.ServiceKey]int, len(t.VIPs))
	for i := range t.VIPs {
		if v := &t.VIPs[i]; v.Addr.IsValid() {
			idx[v.ServiceKey] = i
		}
	}
	return idx
}

// findVIP finds the VIP of key k in t (its VIPs are sorted by key).
func findVIP(t *vip.Table, k vip.ServiceKey) (int, bool) {
	if !k.Addr.IsValid() {
		return 0, false
	}
	return slices.BinarySearchFunc(t.VIPs, k, func(v vip.VIP, k vip.ServiceKey) int { return vip.CompareServiceKeys(v.ServiceKey, k) })
}

// vipsAt counts the VIPs of t at address a: they are adjacent in t.
func vipsAt(t *vip.Table, a netip.Addr) int {
	if !a.IsValid() {
		return 0
	}
	lo := sort.Search(len(t.VIPs), func(i int) bool { return t.VIPs[i].Addr.Compare(a) >= 0 })
	hi := lo
	for hi < len(t.VIPs) && t.VIPs[hi].Addr == a {
		hi++
	}
	return hi - lo
}

// sameVIP reports whether two desired VIPs of the same key program the same
// kernel state.
func sameVIP(a, b *vip.VIP) bool {
	if a.Scheduler != b.Scheduler || a.Persistence != b.Persistence || len(a.Backends) != len(b.Backends) {
		return false
	}
	for i := range a.Backends {
		if a.Backends[i].Addr != b.Backends[i].Addr || a.Backends[i].Weight != b.Backends[i].Weight {
			return false
		}
	}
	return true
}

// serviceOf is the virtual service l4lb programs for a VIP.
func serviceOf(v *vip.VIP) Service {
	s := Service{ServiceKey: v.ServiceKey, Scheduler: v.Scheduler, Persistence: v.Persistence}
	if s.Scheduler == "" {
		s.Scheduler = vip.DefaultScheduler
	}
	return s
}

// planService appends the writes for one desired VIP.
func (r *Reconciler) planService(ops []Op, v *vip.VIP, now time.Time) []Op {
	want := serviceOf(v)
	as := r.applied[v.ServiceKey]
	switch {
	case as == nil:
		ops = append(ops, Op{Kind: AddService, Service: want})
	case as.svc.Scheduler != want.Scheduler || as.svc.Persistence != want.Persistence:
		ops = append(ops, Op{Kind: UpdateService, Service: want})
	}
	matched := 0
	for _, b := range v.Backends {
		if b.Addr.Addr().Is4() != v.Addr.Is4() {
			r.log.WithFields(map[string]any{"vip": keyString(v.ServiceKey), "backend": b.Addr.String(), "reason": "address families differ"}).Warn("backend left out: IPVS masquerading cannot mix IPv4 and IPv6")
			continue
		}
		d := Destination{Addr: b.Addr, Weight: b.Weight, Forward: Masq}
		var ad *appliedDest
		if as != nil {
			ad = as.dests[b.Addr]
		}
		switch {
		case ad == nil:
			ops = append(ops, Op{Kind: AddDestination, Service: want, Destination: d})
			continue
		case ad.Weight != d.Weight || ad.Forward != d.Forward || !ad.drainingSince.IsZero():
			ops = append(ops, Op{Kind: UpdateDestination, Service: want, Destination: d})
		}
		matched++
	}
	if as != nil && len(as.dests) > matched {
		keep := make(map[netip.AddrPort]bool, len(v.Backends))
		for _, b := range v.Backends {
			keep[b.Addr] = true
		}
		ops, _ = r.planDrain(ops, as, keep, now)
	}
	return ops
}

// planDrain appends the writes for the real servers of as that are not in
// keep, and returns how many of them stay in the kernel after those writes.
func (r *Reconciler) planDrain(ops []Op, as *appliedService, keep map[netip.AddrPort]bool, now time.Time) ([]Op, int) {
	left := 0
	for _, a := range sortedDests(as.dests) {
		if keep[a] {
			continue
		}
		ad := as.dests[a]
		del := Op{Kind: DeleteDestination, Service: as.svc, Destination: ad.Destination}
		switch {
		case as.svc.Protocol == vip.UDP:
			ops = append(ops, del)
		case ad.drainingSince.IsZero():
			// Leaving now: weight 0 first. A real server already at
			// weight 0 needs no write; it is marked in place.
			left++
			if ad.Weight != 0 || ad.Forward != Masq {
				d := ad.Destination
				d.Weight, d.Forward = 0, Masq
				ops = append(ops, Op{Kind: UpdateDestination, Service: as.svc, Destination: d, drain: true})
			} else {
				ad.drainingSince, ad.drainSeq = now, r.seq
			}
		case (ad.ActiveConns == 0 && ad.connsSeq > ad.drainSeq) || now.Sub(ad.drainingSince) >= r.cfg.DrainTimeout:
			ops = append(ops, del)
		default:
			left++
		}
	}
	return ops, left
}

func sortedDests(m map[netip.AddrPort]*appliedDest) []netip.AddrPort {
	as := make([]netip.AddrPort, 0, len(m))
	for a := range m {
		as = append(as, a)
	}
	sort.Slice(as, func(i, j int) bool { return as[i].Compare(as[j]) < 0 })
	return as
}
