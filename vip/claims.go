package vip

import "time"

// ClaimRequest asks ProposeClaims for the claim of one named VIP: the
// registration of a backend of family V6 (IPv6 when true) for Spec, started
// by Framework (DefaultFramework when empty).
type ClaimRequest struct {
	Spec      Spec
	Framework string
	V6        bool
}

// ProposeClaims returns for each request what ProposeClaim(cfg, state',
// spec, framework, v6, now) would return, where state' is the current state
// plus, for every earlier request of the batch, a registration of this
// batch carrying the claim proposed for it (so two new names of one batch
// never get the same address, and a name asked twice gets one claim). A
// request that fails adds no registration. One pass: O(k) amortised for k
// requests, never a full build per request (plus, in a crowded range, the
// addresses probing walks over, each at most once per batch).
//
// Why no placement is re-run within a batch: a new name's claim is an
// address that no name holds and no probe passed over (a probe stops at the
// first free address), so placing the name there moves no other name; a
// name the state places already is proposed the address it holds, which
// again moves nobody. So state' places every name of the state where the
// model does, and each new name at its proposed address.
func (m *Model) ProposeClaims(reqs []ClaimRequest, now time.Time) ([]Claim, []error) {
	m.place()
	claims := make([]Claim, len(reqs))
	errs := make([]error, len(reqs))
	var probers [2]*prober
	var proposed map[identity]Claim // new names of this batch
	for i, q := range reqs {
		spec, id, err := checkClaimRequest(m.cfg.Domain, q.Spec, q.Framework, q.V6)
		if err != nil {
			errs[i] = err
			continue
		}
		f := m.book(id.v6)
		if e := m.entries[id]; e != nil && e.dnsErr == nil {
			claims[i], errs[i] = claimOfPlaced(spec, &e.nameEntry, f.r, now)
			continue
		}
		if c, ok := proposed[id]; ok {
			claims[i] = c
			continue
		}
		fi := 0
		if id.v6 {
			fi = 1
		}
		p := probers[fi]
		if p == nil {
			p = &prober{f: f, next: map[uint64]uint64{}}
			probers[fi] = p
		}
		c, at, err := claimOfNew(spec, id, f.r, p.firstFree, now)
		if err != nil {
			errs[i] = err
			continue
		}
		p.take(at)
		if proposed == nil {
			proposed = map[identity]Claim{}
		}
		proposed[id] = c
		claims[i] = c
	}
	return claims, errs
}

// prober finds free addresses of one family for a batch of ProposeClaims:
// an address is taken when a name is placed there, an IP VIP uses it, or
// an earlier request of the batch was proposed it. next is a "next free"
// forest with path compression over the taken addresses seen so far, as in
// allocator, built as probing walks.
type prober struct {
	f     *book
	next  map[uint64]uint64 // taken index -> a later candidate
	taken int               // indices proposed in this batch
}

func (p *prober) full() bool { return uint64(len(p.f.occupied)+p.taken) >= p.f.r.size }

// firstFree returns the first index from start, wrapping around, that is
// not taken; false when the range is full.
func (p *prober) firstFree(start uint64) (uint64, bool) {
	if p.full() {
		return 0, false
	}
	root := start
	for {
		if n, ok := p.next[root]; ok {
			root = n
			continue
		}
		if p.f.occupied[root] > 0 {
			n := (root + 1) % p.f.r.size
			p.next[root] = n
			root = n
			continue
		}
		break
	}
	for i := start; i != root; {
		n := p.next[i]
		p.next[i] = root
		i = n
	}
	return root, true
}

// take marks index i (free until now) as proposed.
func (p *prober) take(i uint64) {
	p.next[i] = (i + 1) % p.f.r.size
	p.taken++
}
