package dns

import (
	"strconv"
	"sync/atomic"

	mdns "github.com/miekg/dns"
)

// Stats counts what the server did since it was made.
type Stats struct {
	// Replies counts replies sent, by rcode name ("NOERROR", "NXDOMAIN",
	// "BADVERS", ...; "RCODE12" for a code without a name).
	Replies map[string]uint64
	// Authoritative counts replies answered from the zone.
	Authoritative uint64
	// Prepared counts authoritative replies served from prepared answers.
	Prepared uint64
	// Forwarded counts queries answered by an upstream.
	Forwarded uint64
	// UpstreamFailures counts failed exchanges with one upstream (timeout,
	// network error, SERVFAIL/REFUSED/NOTIMP); a query that fails over to
	// the next upstream counts one per failed upstream.
	UpstreamFailures uint64
	// ForwardFailures counts queries that every upstream failed (SERVFAIL).
	ForwardFailures uint64
	// Loops counts queries that carried our own forwarding marker.
	Loops uint64
	// FormErr counts malformed queries answered with FORMERR; Dropped those
	// not answered at all (too short to answer, or not a query).
	FormErr uint64
	Dropped uint64
	// InFlightCapHits counts queries refused because MaxInFlight queries
	// were already being handled.
	InFlightCapHits uint64
	// Truncated counts replies cut to fit the client's buffer (TC set).
	Truncated uint64
	// ZoneSerial and ZoneNames describe the zone in use: its SOA serial and
	// how many names of VIPs it answers (under the primary apex).
	ZoneSerial uint32
	ZoneNames  int
	// ZoneUpdates counts the Updates applied by difference; ZoneRebuilds
	// those that built the zone in full (the first, and any table that does
	// not descend from the last one applied).
	ZoneUpdates  uint64
	ZoneRebuilds uint64
}

// counters are the live, lock-free form of Stats.
type counters struct {
	rcodes                                [24]atomic.Uint64 // by rcode, 0..23
	authoritative, prepared, forwarded    atomic.Uint64
	upstreamFailures, forwardFailures     atomic.Uint64
	loops, formErr, dropped, inFlightHits atomic.Uint64
	truncated                             atomic.Uint64
	zoneUpdates, zoneRebuilds             atomic.Uint64
}

func (c *counters) reply(rcode int) {
	if rcode >= 0 && rcode < len(c.rcodes) {
		c.rcodes[rcode].Add(1)
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Replies:          make(map[string]uint64),
		Authoritative:    c.authoritative.Load(),
		Prepared:         c.prepared.Load(),
		Forwarded:        c.forwarded.Load(),
		UpstreamFailures: c.upstreamFailures.Load(),
		ForwardFailures:  c.forwardFailures.Load(),
		Loops:            c.loops.Load(),
		FormErr:          c.formErr.Load(),
		Dropped:          c.dropped.Load(),
		InFlightCapHits:  c.inFlightHits.Load(),
		Truncated:        c.truncated.Load(),
		ZoneUpdates:      c.zoneUpdates.Load(),
		ZoneRebuilds:     c.zoneRebuilds.Load(),
	}
	for rc := range c.rcodes {
		if n := c.rcodes[rc].Load(); n > 0 {
			s.Replies[rcodeName(rc)] += n
		}
	}
	return s
}

// rcodeName names a reply code as Stats.Replies counts it. Code 16 is
// BADVERS: miekg names it BADSIG, its TSIG meaning, but we send it only for
// an EDNS version we do not speak, and sign nothing.
func rcodeName(rc int) string {
	if rc == mdns.RcodeBadVers {
		return "BADVERS"
	}
	if name, ok := mdns.RcodeToString[rc]; ok {
		return name
	}
	return "RCODE" + strconv.Itoa(rc)
}
