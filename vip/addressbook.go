package vip

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
)

// identity is what a named VIP's address belongs to: all ports and both
// protocols of one (framework, name) share one address per family. Both
// strings are lower-cased.
type identity struct {
	framework string
	name      string
	v6        bool
}

// key is "framework/name", the string that is hashed and that orders names.
func (id identity) key() string { return id.framework + "/" + id.name }

// probeStart is where linear probing for id begins in a range of size
// usable addresses: FNV-1a 64 of "framework/name", modulo size.
func probeStart(id identity, size uint64) uint64 {
	// FNV-1a 64, as hash/fnv.New64a computes it, without allocating.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(id.framework); i++ {
		h = (h ^ uint64(id.framework[i])) * prime
	}
	h = (h ^ '/') * prime
	for i := 0; i < len(id.name); i++ {
		h = (h ^ uint64(id.name[i])) * prime
	}
	return h % size
}

// addrRange is the usable part of a prefix: every address but the first
// (the network address) and, for IPv4, the last (broadcast). Index i stands
// for the address base+1+i. An IPv6 range uses at most its first 2^64-1
// usable addresses.
type addrRange struct {
	prefix netip.Prefix
	size   uint64
}

func newAddrRange(p netip.Prefix) addrRange {
	p = p.Masked()
	r := addrRange{prefix: p}
	if !p.IsValid() {
		return r
	}
	hostBits := p.Addr().BitLen() - p.Bits()
	switch {
	case p.Addr().Is4() && hostBits >= 2:
		r.size = 1<<hostBits - 2
	case p.Addr().Is6() && hostBits >= 64:
		r.size = math.MaxUint64
	case p.Addr().Is6() && hostBits >= 1:
		r.size = 1<<hostBits - 1
	}
	return r
}

// index returns a's index in r, and whether a is a usable address of r.
func (r addrRange) index(a netip.Addr) (uint64, bool) {
	if r.size == 0 || !r.prefix.Contains(a) {
		return 0, false
	}
	aHi, aLo := split128(a)
	bHi, bLo := split128(r.prefix.Addr())
	lo, borrow := bits.Sub64(aLo, bLo, 0)
	hi, _ := bits.Sub64(aHi, bHi, borrow)
	if hi != 0 || lo == 0 || lo-1 >= r.size {
		return 0, false
	}
	return lo - 1, true
}

// addr returns the address at index i (i < r.size).
func (r addrRange) addr(i uint64) netip.Addr {
	hi, lo := split128(r.prefix.Addr())
	lo, carry := bits.Add64(lo, i, 0)
	hi += carry
	lo, carry = bits.Add64(lo, 1, 0)
	hi += carry
	var b [16]byte
	for k := 0; k < 8; k++ {
		b[7-k] = byte(hi >> (8 * k))
		b[15-k] = byte(lo >> (8 * k))
	}
	a := netip.AddrFrom16(b)
	if r.prefix.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

func split128(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for k := 0; k < 8; k++ {
		hi = hi<<8 | uint64(b[k])
		lo = lo<<8 | uint64(b[8+k])
	}
	return hi, lo
}

// allocator hands out the addresses of one range. Occupied indices (held by a
// name, or reserved because an IP VIP uses them) form a sparse "next free"
// forest: next[i] points to an index j such that every index from i up to j
// (exclusive, wrapping around) is occupied, so finding the first free address
// from any start costs amortised near-constant time even in a full range.
type allocator struct {
	r     addrRange
	next  map[uint64]uint64 // occupied index -> a later candidate
	owner map[uint64]bool   // indices held by names
}

func newAllocator(p netip.Prefix) *allocator {
	return &allocator{r: newAddrRange(p), next: map[uint64]uint64{}, owner: map[uint64]bool{}}
}

func (a *allocator) full() bool { return uint64(len(a.next)) >= a.r.size }

func (a *allocator) occupy(i uint64) {
	if _, ok := a.next[i]; !ok {
		a.next[i] = (i + 1) % a.r.size
	}
}

// reserve keeps addr (an IP VIP's) from being handed out by probing.
func (a *allocator) reserve(addr netip.Addr) {
	if i, ok := a.r.index(addr); ok {
		a.occupy(i)
	}
}

// claim gives addr to a name if it is usable and no name holds it yet.
func (a *allocator) claim(addr netip.Addr) bool {
	i, ok := a.r.index(addr)
	if !ok || a.owner[i] {
		return false
	}
	a.owner[i] = true
	a.occupy(i)
	return true
}

// firstFree returns the first unoccupied index from start, wrapping around,
// without taking it; false when the range is full.
func (a *allocator) firstFree(start uint64) (uint64, bool) {
	if a.full() {
		return 0, false
	}
	root := start
	for {
		n, ok := a.next[root]
		if !ok {
			break
		}
		root = n
	}
	for i := start; i != root; {
		n := a.next[i]
		a.next[i] = root
		i = n
	}
	return root, true
}

// probe gives the name id the first free address from its hash.
func (a *allocator) probe(id identity) (netip.Addr, bool) {
	if a.r.size == 0 {
		return netip.Addr{}, false
	}
	i, ok := a.firstFree(probeStart(id, a.r.size))
	if !ok {
		return netip.Addr{}, false
	}
	a.owner[i] = true
	a.occupy(i)
	return a.r.addr(i), true
}

// nameEntry is one named identity in the address book.
type nameEntry struct {
	id identity
	// display is the name as written (the smallest spelling seen), used in
	// labels and messages.
	display string
	names   []string // path name, then flattened name when it differs
	dnsErr  error

	claimed   bool // claim is a claim of the right family
	claim     Claim
	claimNode string

	addr   netip.Addr
	placed bool
}

// offerClaim keeps the earliest claim by (Since, Addr, node).
func (e *nameEntry) offerClaim(c Claim, node string) {
	c.Addr = c.Addr.Unmap()
	if !c.Addr.IsValid() || c.Addr.Is6() != e.id.v6 || c.Addr.Zone() != "" {
		return
	}
	if e.claimed {
		d := c.Since.Compare(e.claim.Since)
		if d == 0 {
			d = c.Addr.Compare(e.claim.Addr)
		}
		if d == 0 {
			d = cmp.Compare(node, e.claimNode)
		}
		if d >= 0 {
			return
		}
	}
	e.claimed, e.claim, e.claimNode = true, c, node
}

// placementOrder orders names as the address book places them: names with a
// claim by (Since, framework/name), then names without one by framework/name.
func placementOrder(a, b *nameEntry) int {
	if a.claimed != b.claimed {
		if a.claimed {
			return -1
		}
		return 1
	}
	if a.claimed {
		if d := a.claim.Since.Compare(b.claim.Since); d != 0 {
			return d
		}
	}
	if d := cmp.Compare(a.id.framework, b.id.framework); d != 0 {
		return d
	}
	return cmp.Compare(a.id.name, b.id.name)
}

// placeNames gives each entry of one family its address, in placement order,
// and returns an error line for each entry that did not fit.
func placeNames(alloc *allocator, entries []*nameEntry) []string {
	slices.SortFunc(entries, placementOrder)
	var errs []string
	for _, e := range entries {
		if e.claimed && alloc.claim(e.claim.Addr) {
			e.addr, e.placed = e.claim.Addr, true
			continue
		}
		if addr, ok := alloc.probe(e.id); ok {
			e.addr, e.placed = addr, true
			continue
		}
		errs = append(errs, fullError(alloc.r.prefix, e))
	}
	return errs
}

func fullError(p netip.Prefix, e *nameEntry) string {
	return fmt.Sprintf("range %s is full: %s (%s) not placed", p, e.display, e.id.framework)
}
