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

// record is one node's full publication: every registration it owns, at one
// version. Records are immutable once built: a change builds a new record.
type record struct {
	Node    string
	Version Version
	// Leaving is set on the last record a node publishes before a graceful
	// leave; such a record carries no registrations.
	Leaving       bool
	Registrations []vip.Registration
}

// normalizeRegistrations returns a sorted copy of regs (nil when empty) with every time in UTC
// and without monotonic clock readings, so that equal sets of registrations
// compare equal and survive an encode/decode round trip unchanged.
func normalizeRegistrations(regs []vip.Registration) []vip.Registration {
	if len(regs) == 0 {
		return nil
	}
	out := make([]vip.Registration, len(regs))
	for i, r := range regs {
		if !r.Claim.Since.IsZero() {
			r.Claim.Since = time.Unix(r.Claim.Since.Unix(), int64(r.Claim.Since.Nanosecond())).UTC()
		} else {
			r.Claim.Since = time.Time{}
		}
		out[i] = r
	}
	slices.SortStableFunc(out, compareRegistrations)
	return out
}

// compareRegistrations orders registrations by VIP, then backend, then every
// other field, so that the order is total and deterministic.
func compareRegistrations(a, b vip.Registration) int {
	return cmp.Or(
		cmp.Compare(a.VIP.Protocol, b.VIP.Protocol),
		cmp.Compare(a.VIP.Name, b.VIP.Name),
		a.VIP.Addr.Compare(b.VIP.Addr),
		cmp.Compare(a.VIP.Port, b.VIP.Port),
		cmp.Compare(a.Framework, b.Framework),
		compareAddrPort(a.Backend, b.Backend),
		cmp.Compare(a.Weight, b.Weight),
		cmp.Compare(a.Health, b.Health),
		cmp.Compare(a.Scheduler, b.Scheduler),
		cmp.Compare(a.Persistence, b.Persistence),
		a.Claim.Addr.Compare(b.Claim.Addr),
		a.Claim.Since.Compare(b.Claim.Since),
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

// sameContent reports whether two records say the same thing.
func (r *record) sameContent(o *record) bool {
	return r.Node == o.Node && r.Leaving == o.Leaving &&
		equalRegistrations(r.Registrations, o.Registrations)
}
