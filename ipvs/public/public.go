// Package public derives a public node's published services from the
// desired table: for every VIP with a public port, one virtual service at
// each of the node's public addresses of the VIP's family, at that port,
// over the same backends with the same scheduler and persistence. Both data
// planes (ipvs and ipvs/nftables) program the expanded table it returns.
//
// The rules, the same on every public node since they depend on the table
// alone:
//   - a VIP's public port is vip.VIP.PublicPort (0: not public), settled by
//     package vip across the VIP's registrations;
//   - two VIPs of one family asking for the same public port and protocol:
//     the VIP with the smaller service key holds it; the other is left out,
//     with a line in the expanded table's Errors;
//   - a VIP of the table on the same service key as a public service (an IP
//     VIP registered at the node's own address): the VIP keeps the key.
//
// Expander keeps the expansion up to date by difference (the input table's
// ChangedSince); Build is the same expansion from scratch, the test oracle.
// It owns no I/O.
package public

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/l4lb/l4lb/vip"
)

// slot is what two public VIPs may not share: address family, public port
// and protocol.
type slot struct {
	v6    bool
	port  uint16
	proto vip.Protocol
}

func slotOf(v *vip.VIP) slot {
	return slot{v6: v.Addr.Is6(), port: v.PublicPort, proto: v.Protocol}
}

// Service returns the public service of VIP v at address a: v's backends,
// scheduler and persistence at a and v's public port; no names (DNS does
// not answer it), no public port of its own.
func Service(v *vip.VIP, a netip.Addr) vip.VIP {
	return vip.VIP{
		ServiceKey:  vip.ServiceKey{Addr: a, Port: v.PublicPort, Protocol: v.Protocol},
		Label:       v.Label,
		Scheduler:   v.Scheduler,
		Persistence: v.Persistence,
		Backends:    v.Backends,
	}
}

// leftOutLine is the Errors line of a VIP that asks for a public port
// another VIP holds.
func leftOutLine(v, holder *vip.VIP) string {
	return fmt.Sprintf("public port %d/%s: %s (%s) left out: %s (%s) holds it",
		v.PublicPort, v.Protocol, v.Label, v.Addr, holder.Label, holder.Addr)
}

// Build returns the expansion of t for public addresses addrs from scratch:
// t's VIPs and the public services, sorted by service key, and t's Errors
// with the lines of VIPs left out of a public port, sorted.
func Build(t *vip.Table, addrs []netip.Addr) ([]vip.VIP, []string) {
	holders := map[slot]int{}
	var errs []string
	for i := range t.VIPs {
		v := &t.VIPs[i]
		if v.PublicPort == 0 {
			continue
		}
		s := slotOf(v)
		if j, ok := holders[s]; ok {
			// t is sorted by key: the first VIP of a slot holds it.
			errs = append(errs, leftOutLine(v, &t.VIPs[j]))
			continue
		}
		holders[s] = i
	}
	var pub []vip.VIP
	for _, i := range holders {
		v := &t.VIPs[i]
		for _, a := range addrs {
			if a.Is6() == v.Addr.Is6() {
				pub = append(pub, Service(v, a))
			}
		}
	}
	return merge(t.VIPs, sortVIPs(pub)), mergeErrors(t.Errors, errs)
}

func sortVIPs(vs []vip.VIP) []vip.VIP {
	slices.SortFunc(vs, func(a, b vip.VIP) int { return vip.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return vs
}

// merge returns the VIPs and the public services (both sorted) in one
// sorted slice; a VIP keeps its key over a public service.
func merge(vips, pub []vip.VIP) []vip.VIP {
	out := make([]vip.VIP, 0, len(vips)+len(pub))
	i, j := 0, 0
	for i < len(vips) || j < len(pub) {
		switch {
		case j == len(pub):
			out = append(out, vips[i:]...)
			i = len(vips)
		case i == len(vips):
			out = append(out, pub[j:]...)
			j = len(pub)
		default:
			switch d := vip.CompareServiceKeys(vips[i].ServiceKey, pub[j].ServiceKey); {
			case d < 0:
				out = append(out, vips[i])
				i++
			case d > 0:
				out = append(out, pub[j])
				j++
			default:
				out = append(out, vips[i])
				i++
				j++
			}
		}
	}
	return out
}

func mergeErrors(errs, more []string) []string {
	if len(more) == 0 {
		return errs
	}
	out := append(slices.Clone(errs), more...)
	slices.Sort(out)
	return slices.Compact(out)
}

// Expander expands a lineage of desired tables by difference. Not safe for
// concurrent use: the data plane's sync goroutine owns it.
type Expander struct {
	addrs []netip.Addr
	in    *vip.Table // the last table expanded
	out   *vip.Table // its expansion
	// claims lists, per slot, the keys of the VIPs of in that ask for it,
	// sorted: the first holds the slot.
	claims map[slot][]vip.ServiceKey
	// pub are the public services of out, sorted by key.
	pub []vip.VIP
	// errs are the left-out lines, by the key of the VIP left out.
	errs map[vip.ServiceKey]string
}

// NewExpander returns an Expander for the node's public addresses.
func NewExpander(addrs []netip.Addr) *Expander {
	return &Expander{addrs: slices.Clone(addrs)}
}

// Addrs returns the public addresses.
func (e *Expander) Addrs() []netip.Addr { return e.addrs }

// IsPublic reports whether a is one of the public addresses.
func (e *Expander) IsPublic(a netip.Addr) bool { return slices.Contains(e.addrs, a) }

// Expand returns t expanded with the public services. Without public
// addresses it is t itself. Otherwise it is a table of the Expander's own
// lineage (vip.Derive from the previous expansion), so that ChangedSince
// between two expansions lists the keys that changed, public ones
// included, when t descends from the previously expanded table; the work is
// then in proportion to the change, plus one copy of the VIP slice.
func (e *Expander) Expand(t *vip.Table) *vip.Table {
	if len(e.addrs) == 0 || t == nil {
		return t
	}
	if t == e.in && e.out != nil {
		return e.out
	}
	changed, ok := t.ChangedSince(e.in)
	if !ok || e.in == nil {
		return e.rebuild(t)
	}
	touched := map[slot]bool{}
	for _, k := range changed {
		old, hadOld := e.in.Find(k)
		cur, hasCur := t.Find(k)
		if hadOld && old.PublicPort != 0 {
			s := slotOf(&old)
			e.unclaim(s, k)
			touched[s] = true
		}
		if hasCur && cur.PublicPort != 0 {
			s := slotOf(&cur)
			e.claim(s, k)
			touched[s] = true
		}
	}
	outChanged := slices.Clone(changed)
	if len(touched) > 0 {
		drop := map[vip.ServiceKey]bool{}
		var add []vip.VIP
		for s := range touched {
			for _, a := range e.addrs {
				if a.Is6() != s.v6 {
					continue
				}
				k := vip.ServiceKey{Addr: a, Port: s.port, Protocol: s.proto}
				drop[k] = true
				outChanged = append(outChanged, k)
			}
			ks := e.claims[s]
			for i, k := range ks {
				v, _ := t.Find(k)
				if i == 0 {
					delete(e.errs, k)
					for _, a := range e.addrs {
						if a.Is6() == s.v6 {
							add = append(add, Service(&v, a))
						}
					}
					continue
				}
				holder, _ := t.Find(ks[0])
				if e.errs == nil {
					e.errs = map[vip.ServiceKey]string{}
				}
				e.errs[k] = leftOutLine(&v, &holder)
			}
		}
		// VIPs that no longer ask for a slot have no line.
		for _, k := range changed {
			if cur, ok := t.Find(k); !ok || cur.PublicPort == 0 {
				delete(e.errs, k)
			}
		}
		pub := make([]vip.VIP, 0, len(e.pub)+len(add))
		for _, p := range e.pub {
			if !drop[p.ServiceKey] {
				pub = append(pub, p)
			}
		}
		e.pub = sortVIPs(append(pub, add...))
	}
	e.in = t
	e.out = vip.Derive(e.out, merge(t.VIPs, e.pub), mergeErrors(t.Errors, e.errLines()), outChanged)
	return e.out
}

func (e *Expander) errLines() []string {
	if len(e.errs) == 0 {
		return nil
	}
	out := make([]string, 0, len(e.errs))
	for _, l := range e.errs {
		out = append(out, l)
	}
	return out
}

func (e *Expander) claim(s slot, k vip.ServiceKey) {
	ks := e.claims[s]
	i, found := slices.BinarySearchFunc(ks, k, vip.CompareServiceKeys)
	if !found {
		if e.claims == nil {
			e.claims = map[slot][]vip.ServiceKey{}
		}
		e.claims[s] = slices.Insert(ks, i, k)
	}
}

func (e *Expander) unclaim(s slot, k vip.ServiceKey) {
	ks := e.claims[s]
	if i, found := slices.BinarySearchFunc(ks, k, vip.CompareServiceKeys); found {
		ks = slices.Delete(ks, i, i+1)
		if len(ks) == 0 {
			delete(e.claims, s)
		} else {
			e.claims[s] = ks
		}
	}
}

// rebuild expands t from scratch (t does not descend from the last table).
func (e *Expander) rebuild(t *vip.Table) *vip.Table {
	e.claims = map[slot][]vip.ServiceKey{}
	e.errs = nil
	e.pub = nil
	for i := range t.VIPs {
		if v := &t.VIPs[i]; v.PublicPort != 0 {
			e.claim(slotOf(v), v.ServiceKey)
		}
	}
	for s, ks := range e.claims {
		holder, _ := t.Find(ks[0])
		for _, a := range e.addrs {
			if a.Is6() == s.v6 {
				e.pub = append(e.pub, Service(&holder, a))
			}
		}
		for _, k := range ks[1:] {
			v, _ := t.Find(k)
			if e.errs == nil {
				e.errs = map[vip.ServiceKey]string{}
			}
			e.errs[k] = leftOutLine(&v, &holder)
		}
	}
	sortVIPs(e.pub)
	vips := merge(t.VIPs, e.pub)
	// Every key of the previous and the new expansion may have changed.
	var changed []vip.ServiceKey
	if e.out != nil {
		for i := range e.out.VIPs {
			changed = append(changed, e.out.VIPs[i].ServiceKey)
		}
	}
	for i := range vips {
		changed = append(changed, vips[i].ServiceKey)
	}
	e.in = t
	e.out = vip.Derive(e.out, vips, mergeErrors(t.Errors, e.errLines()), changed)
	return e.out
}

// Published returns, per VIP of t that holds its public port, the
// addresses and port at which a node with public addresses addrs serves it
// (the same rules as Build).
func Published(t *vip.Table, addrs []netip.Addr) map[vip.ServiceKey][]netip.AddrPort {
	if len(addrs) == 0 {
		return nil
	}
	out := map[vip.ServiceKey][]netip.AddrPort{}
	held := map[slot]bool{}
	for i := range t.VIPs {
		v := &t.VIPs[i]
		if v.PublicPort == 0 || held[slotOf(v)] {
			continue
		}
		held[slotOf(v)] = true
		for _, a := range addrs {
			k := vip.ServiceKey{Addr: a, Port: v.PublicPort, Protocol: v.Protocol}
			if _, taken := t.Find(k); a.Is6() == v.Addr.Is6() && !taken {
				out[v.ServiceKey] = append(out[v.ServiceKey], netip.AddrPortFrom(a, v.PublicPort))
			}
		}
	}
	return out
}

// Origin returns the key of the VIP whose public service is at k in the
// last expansion; false when k is not a public service.
func (e *Expander) Origin(k vip.ServiceKey) (vip.ServiceKey, bool) {
	if !e.IsPublic(k.Addr) || e.in == nil {
		return vip.ServiceKey{}, false
	}
	if _, ok := e.in.Find(k); ok {
		return vip.ServiceKey{}, false // a VIP of the table holds the key
	}
	ks := e.claims[slot{v6: k.Addr.Is6(), port: k.Port, proto: k.Protocol}]
	if len(ks) == 0 {
		return vip.ServiceKey{}, false
	}
	return ks[0], true
}
