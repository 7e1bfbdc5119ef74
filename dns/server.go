package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// Server answers the names of the programmed VIPs and forwards the rest.
// ServeDNS, Update and Stats may be called concurrently.
type Server struct {
	cfg   settled
	fwd   *forwarder
	zone  atomic.Pointer[zone]
	stats counters
	// inFlight counts queries inside ServeDNS.
	inFlight atomic.Int64
	// replyBufs holds buffers for prepared replies on the handler path.
	replyBufs sync.Pool

	// updateMu serialises zone updates; it guards serial and applied.
	updateMu sync.Mutex
	serial   uint32
	// applied is the table the zone in use was made from.
	applied *vip.Table

	// mu guards the listeners' lifecycle: running, servers, udpConns,
	// addrs.
	mu       sync.Mutex
	running  bool
	servers  []*mdns.Server // TCP, and UDP on unspecified addresses
	udpConns []*net.UDPConn // UDP on specific addresses, read by serveUDP
	addrs    []netip.AddrPort
	serving  sync.WaitGroup
	// ctx bounds forwarded exchanges; stop cancels it on Shutdown.
	ctx  context.Context
	stop context.CancelFunc
}

// NewServer checks cfg, fills in its defaults and returns a server that
// answers an empty zone (SOA and NS only) until the first Update.
func NewServer(cfg Config) (*Server, error) {
	st, err := settle(cfg)
	if err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	s := &Server{cfg: st, fwd: newForwarder(st.upstreams, st.timeout)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.replyBufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	s.Update(nil)
	if st.forward {
		st.log.WithField("reason", "configured").Infof("forwarding names outside %s to %v", st.apex, st.upstreams)
	}
	return s, nil
}

// Update makes t the table whose VIPs are answered. t must hold only the VIPs
// programmed in this node's kernel; a VIP is answered only if one of its
// backends has weight > 0. The new zone is made here, off the query path,
// and swapped in atomically: a query sees either the old zone or the new
// one. When t descends from the table of the last Update (vip.Derive) and
// the lineage still says where they differ (vip.Table.ChangedSince), only
// the names of the VIPs at those keys are redone, at a cost that follows the
// change; otherwise the zone is built in full. Every Update moves the SOA
// serial. nil means no VIPs.
func (s *Server) Update(t *vip.Table) {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	serial := uint32(time.Now().Unix())
	if serial <= s.serial {
		serial = s.serial + 1
	}
	s.serial = serial
	start := time.Now()
	if keys, ok := t.ChangedSince(s.applied); ok {
		z, st, err := s.zone.Load().update(serial, s.applied, t, keys)
		if err == nil {
			s.zone.Store(z)
			s.applied = t
			s.stats.zoneUpdates.Add(1)
			s.warnOutside(st.outside)
			s.cfg.log.WithFields(logrus.Fields{
				"serial": serial, "keys": st.keys, "changed": st.changed, "changed_names": st.names,
				"names": z.vipNames, "took": time.Since(start).Round(time.Microsecond),
			}).Debug("zone updated by difference")
			return
		}
		s.cfg.log.WithField("reason", err.Error()).Error("zone update by difference failed; building the zone in full")
	}
	z, st := buildZone(s.zoneInput(serial), t)
	s.zone.Store(z)
	s.applied = t
	s.stats.zoneRebuilds.Add(1)
	s.warnOutside(st.outside)
	if t != nil {
		s.cfg.log.WithFields(logrus.Fields{
			"serial": serial, "vips": st.vips, "named": st.named, "not_serving": st.notServing,
			"names": z.vipNames, "took": time.Since(start).Round(time.Microsecond),
		}).Debug("zone rebuilt")
	}
}

// zoneInput is what every zone of this server is made from.
func (s *Server) zoneInput(serial uint32) zoneInput {
	return zoneInput{
		apex:    s.cfg.apex,
		aliases: s.cfg.aliases,
		ttl:     s.cfg.ttl,
		ra:      s.cfg.forward,
		serial:  serial,
		nsAddrs: nsAddrs(s.cfg.listen),
	}
}

// warnOutside logs the VIP names an update left out of the zone: one line
// per update, not one per name, or a misconfigured domain would log every
// VIP on every update.
func (s *Server) warnOutside(outside []string) {
	if len(outside) > 0 {
		s.cfg.log.WithFields(logrus.Fields{"vip": outside[0], "reason": "not under " + s.cfg.apex}).
			Warnf("%d VIP names left out of the zone", len(outside))
	}
}

// nsAddrs are the addresses given to ns.<apex>: the specific listen
// addresses.
func nsAddrs(listen []netip.AddrPort) []netip.Addr {
	var out []netip.Addr
	for _, l := range listen {
		if a := l.Addr().Unmap(); !a.IsUnspecified() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Records returns every record the server answers from its zone right now,
// under the domain and every alias, sorted by their text form.
func (s *Server) Records() []mdns.RR { return s.zone.Load().records() }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := s.stats.snapshot()
	z := s.zone.Load()
	st.ZoneSerial, st.ZoneNames = z.serial, z.vipNames
	return st
}

// ServeDNS answers one query: from the zone for names under the domain or an
// alias, from an upstream for the others (REFUSED when forwarding is off).
// It is the handler the listeners use and can be driven by any
// ResponseWriter; a reply goes over TCP limits when w's remote address is a
// *net.TCPAddr, UDP limits otherwise.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	if r == nil || r.Response {
		s.stats.dropped.Add(1) // never answer an answer: it could be a reflection
		return
	}
	if n := s.inFlight.Add(1); n > s.cfg.maxInFlight {
		s.inFlight.Add(-1)
		s.stats.inFlightHits.Add(1)
		s.replyCode(w, r, mdns.RcodeRefused)
		return
	}
	defer s.inFlight.Add(-1)

	tcp := isTCP(w)
	z := s.zone.Load()
	var key [256]byte
	var q query
	if queryOf(r, tcp, &q, key[:]) {
		q.key = key[:len(q.name)]
		bp := s.replyBufs.Get().(*[]byte)
		out, ok := z.fastReply(*bp, &q)
		if ok {
			if _, err := w.Write(out); err != nil {
				s.cfg.log.WithField("reason", err.Error()).Debug("write reply")
			}
			s.stats.reply(mdns.RcodeSuccess)
			s.stats.authoritative.Add(1)
			s.stats.prepared.Add(1)
			*bp = out[:0]
		}
		s.replyBufs.Put(bp)
		if ok {
			return
		}
	}
	s.serveSlow(w, r, z, tcp)
}

// serveSlow answers what has no prepared answer: negative answers, other
// types, aliases, answers that need truncation, EDNS errors, forwarding.
func (s *Server) serveSlow(w mdns.ResponseWriter, r *mdns.Msg, z *zone, tcp bool) {
	if r.Opcode != mdns.OpcodeQuery {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeNotImplemented)
		m.Opcode = r.Opcode
		m.RecursionAvailable = s.cfg.forward
		s.reply(w, r, m, tcp)
		return
	}
	if len(r.Question) != 1 {
		s.stats.formErr.Add(1)
		s.replyCode(w, r, mdns.RcodeFormatError)
		return
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		s.replyCode(w, r, mdns.RcodeBadVers)
		return
	}
	q := r.Question[0]
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		// CHAOS (version.bind and the like), HESIOD, NONE: we hold no such
		// data and forward none of it, in the zone or not.
		s.replyCode(w, r, mdns.RcodeRefused)
		return
	}
	res := z.resolve(q.Name, q.Qtype, z.rotation.Add(1))
	if res.inZone {
		if q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR {
			s.replyCode(w, r, mdns.RcodeRefused)
			return
		}
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		m.RecursionAvailable = z.ra
		m.Rcode = res.rcode
		m.Answer, m.Ns, m.Extra = res.answer, res.ns, res.extra
		s.stats.authoritative.Add(1)
		s.reply(w, r, m, tcp)
		return
	}
	switch {
	case s.fwd.looped(r):
		s.stats.loops.Add(1)
		s.cfg.log.WithField("reason", "query carries our own forwarding marker").
			Warnf("forwarding loop for %s", q.Name)
		s.replyCode(w, r, mdns.RcodeServerFailure)
	case !s.cfg.forward || q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR:
		s.replyCode(w, r, mdns.RcodeRefused)
	default:
		s.forward(w, r, tcp)
	}
}

func (s *Server) forward(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
	resp, err := s.fwd.exchange(s.ctx, r, tcp, func(up string, err error) {
		s.stats.upstreamFailures.Add(1)
		s.cfg.log.WithFields(logrus.Fields{"upstream": up, "reason": err.Error()}).Debug("upstream failed")
	})
	if err != nil {
		s.stats.forwardFailures.Add(1)
		s.cfg.log.WithField("reason", err.Error()).Debug("forwarding failed")
		s.replyCode(w, r, mdns.RcodeServerFailure)
		return
	}
	s.stats.forwarded.Add(1)
	resp.Id = r.Id
	resp.Question = r.Question
	resp.RecursionAvailable = true // we recurse for the client, whatever the upstream said
	s.reply(w, r, resp, tcp)
}

// replyCode answers r with an empty reply of the given rcode; RA says, as in
// every reply, whether forwarding is on.
func (s *Server) replyCode(w mdns.ResponseWriter, r *mdns.Msg, rcode int) {
	m := new(mdns.Msg)
	m.SetRcode(r, rcode)
	m.RecursionAvailable = s.cfg.forward
	if len(r.Question) > 1 {
		m.Question = nil
	}
	s.reply(w, r, m, isTCP(w))
}

// reply fits m to what the client of r accepts (EDNS0 or not, its buffer
// size, TC when it does not fit) and writes it.
func (s *Server) reply(w mdns.ResponseWriter, r, m *mdns.Msg, tcp bool) {
	// Our OPT replaces any the answer carried (an upstream's).
	extra := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	size := mdns.MinMsgSize
	if ro := r.IsEdns0(); ro != nil {
		m.SetEdns0(ednsSize, ro.Do())
		size = max(size, int(ro.UDPSize()))
	} else if m.Rcode > 0xf {
		m.Rcode = mdns.RcodeServerFailure // cannot be said without EDNS
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	m.Truncate(size)
	if m.Truncated {
		s.stats.truncated.Add(1)
	}
	if err := w.WriteMsg(m); err != nil {
		s.cfg.log.WithField("reason", err.Error()).Debug("write reply")
		return
	}
	s.stats.reply(m.Rcode)
}

func isTCP(w mdns.ResponseWriter) bool {
	_, ok := w.RemoteAddr().(*net.TCPAddr)
	return ok
}

// errNotRunning is returned by Shutdown on a server that is not running.
var errNotRunning = errors.New("dns server is not running")
