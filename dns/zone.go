package dns

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// maxFastRotations bounds the answers prepared per RRset: an RRset of n
// records gets n prepared rotations when n is at most this, and is rotated
// and packed per query otherwise.
const maxFastRotations = 16

// zone is one immutable build of the authoritative data. Records are kept
// under the primary apex only; a name under an alias is looked up by its
// primary twin and its records renamed on the way out.
type zone struct {
	serial  uint32
	ttl     uint32
	apex    string   // primary apex, canonical
	aliases []string // other apexes, canonical
	apexes  []string // apex then aliases
	ra      bool     // recursion available: set RA in answers
	soa     *mdns.SOA
	ns      []mdns.RR
	nodes   map[string]*node // canonical owner under apex -> records
	// fast holds prepared wire answers for A, AAAA and SRV questions for
	// names under the primary apex, keyed by canonical name.
	fast map[string]*fastNode
	// vipNames counts the VIP names answered (under the primary apex).
	vipNames int
	// rotation advances once per rotated answer so that clients spread.
	rotation atomic.Uint32
}

// node is one owner name in the zone; an empty node is an empty
// non-terminal (it exists, so NODATA, not NXDOMAIN).
type node struct {
	a, aaaa, srv []mdns.RR
}

// fastNode holds, per question type, the prepared answers of one name.
type fastNode struct {
	a, aaaa, srv [][]byte
}

func (f *fastNode) forType(qtype uint16) [][]byte {
	switch qtype {
	case mdns.TypeA:
		return f.a
	case mdns.TypeAAAA:
		return f.aaaa
	case mdns.TypeSRV:
		return f.srv
	}
	return nil
}

// zoneInput is what a zone is built from.
type zoneInput struct {
	apex    string
	aliases []string
	ttl     uint32
	ra      bool
	serial  uint32
	nsAddrs []netip.Addr // addresses of ns.<apex>: our specific listen addresses
}

// buildStats says, for logs and tests, what a build took and left out.
type buildStats struct {
	vips       int      // VIPs in the table
	named      int      // named VIPs answered
	notServing int      // named VIPs left out: no backend with weight > 0
	outside    []string // names left out: not under the apex
}

// srvKey identifies one SRV record of a node.
type srvKey struct {
	port   uint16
	target string
}

// buildZone builds the zone for a table of programmed VIPs. Only VIPs with at
// least one backend of weight > 0 are answered. It never fails: names it
// cannot place are reported in buildStats.
func buildZone(in zoneInput, t *vip.Table) (*zone, buildStats) {
	z := &zone{
		serial:  in.serial,
		ttl:     in.ttl,
		apex:    in.apex,
		aliases: in.aliases,
		apexes:  append([]string{in.apex}, in.aliases...),
		ra:      in.ra,
		nodes:   make(map[string]*node),
		fast:    make(map[string]*fastNode),
	}
	var st buildStats
	addrs := make(map[string][]netip.Addr)
	srvs := make(map[string][]srvKey)
	if t != nil {
		st.vips = len(t.VIPs)
		for i := range t.VIPs {
			v := &t.VIPs[i]
			if len(v.Names) == 0 {
				continue // an IP VIP has no name
			}
			if !serving(v) {
				st.notServing++
				continue
			}
			st.named++
			for _, n := range v.Names {
				name := strings.ToLower(mdns.Fqdn(n))
				if name == z.apex || !under(z.apex, name) {
					st.outside = append(st.outside, n)
					continue
				}
				if !slices.Contains(addrs[name], v.Addr) {
					addrs[name] = append(addrs[name], v.Addr)
				}
				label, parent, _ := strings.Cut(name, ".")
				owner := "_" + label + "._" + string(v.Protocol) + "." + parent
				k := srvKey{port: v.Port, target: name}
				if !slices.Contains(srvs[owner], k) {
					srvs[owner] = append(srvs[owner], k)
				}
			}
		}
	}
	nsName := "ns." + z.apex
	for _, a := range in.nsAddrs {
		if !slices.Contains(addrs[nsName], a) {
			addrs[nsName] = append(addrs[nsName], a)
		}
	}
	for name, as := range addrs {
		slices.SortFunc(as, netip.Addr.Compare)
		nd := z.node(name)
		for _, a := range as {
			hdr := mdns.RR_Header{Name: name, Class: mdns.ClassINET, Ttl: z.ttl}
			if a.Is4() {
				hdr.Rrtype = mdns.TypeA
				nd.a = append(nd.a, &mdns.A{Hdr: hdr, A: a.AsSlice()})
			} else {
				hdr.Rrtype = mdns.TypeAAAA
				nd.aaaa = append(nd.aaaa, &mdns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	for owner, ks := range srvs {
		slices.SortFunc(ks, func(x, y srvKey) int {
			return cmp.Or(cmp.Compare(x.port, y.port), cmp.Compare(x.target, y.target))
		})
		nd := z.node(owner)
		for _, k := range ks {
			nd.srv = append(nd.srv, &mdns.SRV{
				Hdr:    mdns.RR_Header{Name: owner, Rrtype: mdns.TypeSRV, Class: mdns.ClassINET, Ttl: z.ttl},
				Port:   k.port,
				Target: k.target,
			})
		}
	}
	// Every name between an owner and the apex exists (RFC 8020).
	for name := range z.nodes {
		for p := parentName(name); p != "" && p != z.apex && under(z.apex, p); p = parentName(p) {
			z.node(p)
		}
	}
	z.node(z.apex)
	z.soa = &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: z.apex, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: z.ttl},
		Ns:      nsName,
		Mbox:    "hostmaster." + z.apex,
		Serial:  z.serial,
		Refresh: 60,
		Retry:   30,
		Expire:  86400,
		Minttl:  z.ttl,
	}
	z.ns = []mdns.RR{&mdns.NS{
		Hdr: mdns.RR_Header{Name: z.apex, Rrtype: mdns.TypeNS, Class: mdns.ClassINET, Ttl: z.ttl},
		Ns:  nsName,
	}}
	z.vipNames = 0
	for name, nd := range z.nodes {
		if name != nsName && (len(nd.a) > 0 || len(nd.aaaa) > 0) {
			z.vipNames++
		}
		z.prepare(name, nd)
	}
	return z, st
}

// serving says whether a VIP may be answered: it takes new connections.
func serving(v *vip.VIP) bool {
	for _, b := range v.Backends {
		if b.Weight > 0 {
			return true
		}
	}
	return false
}

func (z *zone) node(name string) *node {
	nd := z.nodes[name]
	if nd == nil {
		nd = &node{}
		z.nodes[name] = nd
	}
	return nd
}

// under says whether name is apex or below it. Both are lower-case and
// fully qualified; names with escapes take miekg's label-by-label check.
func under(apex, name string) bool {
	if strings.IndexByte(name, '\\') >= 0 {
		return mdns.IsSubDomain(apex, name)
	}
	return name == apex || apex == "." ||
		(len(name) > len(apex) && name[len(name)-len(apex)-1] == '.' && name[len(name)-len(apex):] == apex)
}

// parentName returns name without its first label, "" for the root.
func parentName(name string) string {
	off, end := mdns.NextLabel(name, 0)
	if end {
		return ""
	}
	return name[off:]
}

// prepare packs the answers of one name for its A, AAAA and SRV questions,
// one per rotation.
func (z *zone) prepare(name string, nd *node) {
	if strings.IndexByte(name, '\\') >= 0 {
		return // escaped names go the slow way
	}
	var f fastNode
	build := func(qtype uint16, rrs []mdns.RR) [][]byte {
		if len(rrs) == 0 || len(rrs) > maxFastRotations {
			return nil
		}
		out := make([][]byte, len(rrs))
		for k := range rrs {
			m := z.answerMsg(name, qtype, uint32(k))
			wire, err := m.Pack()
			if err != nil {
				return nil // cannot happen for records we built; go the slow way
			}
			out[k] = wire
		}
		return out
	}
	f.a = build(mdns.TypeA, nd.a)
	f.aaaa = build(mdns.TypeAAAA, nd.aaaa)
	f.srv = build(mdns.TypeSRV, nd.srv)
	if f.a != nil || f.aaaa != nil || f.srv != nil {
		z.fast[name] = &f
	}
}

// answerMsg is the reply template for a question under the primary apex
// whose name is in the zone: header flags, the question (lower-case) and
// the records, with the given rotation. ID, RD, CD and EDNS are the
// caller's.
func (z *zone) answerMsg(name string, qtype uint16, rot uint32) *mdns.Msg {
	m := new(mdns.Msg)
	m.Response = true
	m.Authoritative = true
	m.RecursionAvailable = z.ra
	m.Compress = true
	m.Question = []mdns.Question{{Name: name, Qtype: qtype, Qclass: mdns.ClassINET}}
	res := z.resolve(name, qtype, rot)
	m.Rcode = res.rcode
	m.Answer, m.Ns, m.Extra = res.answer, res.ns, res.extra
	return m
}

// resolution is the zone's answer to one question.
type resolution struct {
	inZone bool
	rcode  int
	answer []mdns.RR
	ns     []mdns.RR
	extra  []mdns.RR
}

// apexOf returns the apex (primary or alias) that name is in, or "".
// The longest matching apex wins.
func (z *zone) apexOf(name string) string {
	best := ""
	for _, a := range z.apexes {
		if len(a) > len(best) && under(a, name) {
			best = a
		}
	}
	return best
}

// resolve answers a question of class IN from the zone. qname may be in any
// case; the answer's owner is qname as given. rot picks the rotation of the
// answer RRset.
func (z *zone) resolve(qname string, qtype uint16, rot uint32) resolution {
	lower := strings.ToLower(qname)
	apex := z.apexOf(lower)
	if apex == "" {
		return resolution{}
	}
	res := resolution{inZone: true, rcode: mdns.RcodeSuccess}
	key := lower
	if apex != z.apex {
		key = lower[:len(lower)-len(apex)] + z.apex
	}
	nd := z.nodes[key]
	if nd == nil {
		res.rcode = mdns.RcodeNameError
		res.ns = []mdns.RR{z.rename(z.soa, apex)}
		return res
	}
	var glue []string
	switch qtype {
	case mdns.TypeA:
		res.answer = rotate(nd.a, rot)
	case mdns.TypeAAAA:
		res.answer = rotate(nd.aaaa, rot)
	case mdns.TypeSRV:
		res.answer = rotate(nd.srv, rot)
		glue = srvTargets(nd.srv)
	case mdns.TypeSOA:
		if key == z.apex {
			res.answer = []mdns.RR{z.soa}
		}
	case mdns.TypeNS:
		if key == z.apex {
			res.answer = z.ns
			glue = []string{"ns." + z.apex}
		}
	case mdns.TypeANY:
		res.answer = slices.Concat(nd.a, nd.aaaa, nd.srv)
		if key == z.apex {
			res.answer = slices.Concat([]mdns.RR{z.soa}, z.ns, res.answer)
		}
	}
	for _, g := range glue {
		if gn := z.nodes[g]; gn != nil {
			res.extra = slices.Concat(res.extra, gn.a, gn.aaaa)
		}
	}
	if len(res.answer) == 0 {
		res.ns = []mdns.RR{z.rename(z.soa, apex)}
		return res
	}
	answer := make([]mdns.RR, len(res.answer))
	for i, rr := range res.answer {
		rr = z.rename(rr, apex)
		if h := rr.Header(); h.Name != qname && (h.Name == key || h.Name == lower) {
			if rr == res.answer[i] {
				rr = mdns.Copy(rr)
			}
			rr.Header().Name = qname
		}
		answer[i] = rr
	}
	res.answer = answer
	for i, rr := range res.extra {
		res.extra[i] = z.rename(rr, apex)
	}
	return res
}

// rotate returns rrs rotated left by rot (a new slice when it moves).
func rotate(rrs []mdns.RR, rot uint32) []mdns.RR {
	n := len(rrs)
	if n < 2 || rot%uint32(n) == 0 {
		return rrs
	}
	k := int(rot % uint32(n))
	return slices.Concat(rrs[k:], rrs[:k])
}

func srvTargets(srv []mdns.RR) []string {
	var out []string
	for _, rr := range srv {
		if t := rr.(*mdns.SRV).Target; !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// rename returns rr with every name under the primary apex moved under apex;
// rr itself when apex is the primary.
func (z *zone) rename(rr mdns.RR, apex string) mdns.RR {
	if apex == z.apex {
		return rr
	}
	move := func(n string) string {
		if under(z.apex, n) {
			return n[:len(n)-len(z.apex)] + apex
		}
		return n
	}
	rr = mdns.Copy(rr)
	h := rr.Header()
	h.Name = move(h.Name)
	switch r := rr.(type) {
	case *mdns.SRV:
		r.Target = move(r.Target)
	case *mdns.NS:
		r.Ns = move(r.Ns)
	case *mdns.SOA:
		r.Ns = move(r.Ns)
		r.Mbox = move(r.Mbox)
	}
	return rr
}

// records returns every record of the zone under every apex, sorted, for
// dumps and tests.
func (z *zone) records() []mdns.RR {
	var out []mdns.RR
	for _, apex := range z.apexes {
		out = append(out, z.rename(z.soa, apex))
		for _, ns := range z.ns {
			out = append(out, z.rename(ns, apex))
		}
		for _, nd := range z.nodes {
			for _, rr := range slices.Concat(nd.a, nd.aaaa, nd.srv) {
				out = append(out, z.rename(rr, apex))
			}
		}
	}
	slices.SortFunc(out, func(x, y mdns.RR) int { return strings.Compare(x.String(), y.String()) })
	return out
}
