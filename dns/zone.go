package dns

import (
	"cmp"
	"hash/maphash"
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

// zoneShards is how many maps a zone's names are spread over, by a hash of
// the name. An update by difference copies only the maps it touches, so its
// cost follows the change, not the zone: at 10,000 VIPs a map holds about 40
// names.
const zoneShards = 1024

// zone is one immutable snapshot of the authoritative data. Records are kept
// under the primary apex only; a name under an alias is looked up by its
// primary twin and its records renamed on the way out. A published zone is
// never written: an update copies what it changes into a new zone (see
// zoneEdit) that shares everything else.
type zone struct {
	serial  uint32
	ttl     uint32
	apex    string   // primary apex, canonical
	aliases []string // other apexes, canonical
	apexes  []string // apex then aliases
	ra      bool     // recursion available: set RA in answers
	soa     *mdns.SOA
	ns      []mdns.RR
	// seed and shards hold the names: canonical owner under the primary
	// apex -> its node, in shards[hash(owner)%zoneShards].
	seed   maphash.Seed
	shards []map[string]*node
	// vipNames counts the VIP names answered (under the primary apex).
	vipNames int
	// rotation advances once per rotated answer so that clients spread.
	rotation atomic.Uint32
}

// node is one owner name in the zone; a node without records is an empty
// non-terminal (it exists, so NODATA, not NXDOMAIN). The records and the
// prepared answers are what queries read; the reference counts are what an
// update by difference needs, and are read by nothing else.
type node struct {
	a, aaaa, srv []mdns.RR
	// fast holds the prepared wire answers to the A, AAAA and SRV questions
	// for this name (under the primary apex); held in the node, not behind a
	// pointer, so that the prepared path follows one pointer less.
	fast fastNode
	// addrs are the addresses of the name, sorted, each with how many
	// serving VIPs (or the listen addresses, for ns.<apex>) give it.
	addrs []addrRef
	// srvs are the SRV records of the name (an SRV owner), sorted by port
	// then target, each with how many serving VIPs give it.
	srvs []srvRef
	// below counts the names with records at or below this one, itself
	// included. A node exists while below > 0 (the apex always).
	below int32
}

type addrRef struct {
	addr netip.Addr
	n    int32
}

type srvRef struct {
	srvKey
	n int32
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

func compareSrvKeys(x, y srvKey) int {
	return cmp.Or(cmp.Compare(x.port, y.port), cmp.Compare(x.target, y.target))
}

// srvOwner is the owner of the SRV records that point at name for proto:
// _<first label>._<proto>.<parent>.
func srvOwner(name string, proto vip.Protocol) string {
	label, parent, _ := strings.Cut(name, ".")
	return "_" + label + "._" + string(proto) + "." + parent
}

// buildZone builds the zone for a table of programmed VIPs from scratch: the
// first zone, the fallback when a table does not descend from the last one,
// and the oracle that updates by difference are tested against. Only VIPs
// with at least one backend of weight > 0 are answered. It never fails:
// names it cannot place are reported in buildStats.
func buildZone(in zoneInput, t *vip.Table) (*zone, buildStats) {
	z := newZone(in)
	var st buildStats
	addrs := make(map[string][]addrRef)
	srvs := make(map[string][]srvRef)
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
				addrs[name] = refAddr(addrs[name], v.Addr)
				owner := srvOwner(name, v.Protocol)
				srvs[owner] = refSrv(srvs[owner], srvKey{port: v.Port, target: name})
			}
		}
	}
	nsName := "ns." + z.apex
	for _, a := range in.nsAddrs {
		addrs[nsName] = refAddr(addrs[nsName], a)
	}
	for name, refs := range addrs {
		slices.SortFunc(refs, func(x, y addrRef) int { return x.addr.Compare(y.addr) })
		z.node(name).addrs = refs
	}
	for owner, refs := range srvs {
		slices.SortFunc(refs, func(x, y srvRef) int { return compareSrvKeys(x.srvKey, y.srvKey) })
		z.node(owner).srvs = refs
	}
	// Every name between an owner and the apex exists (RFC 8020).
	var owners []string
	z.each(func(name string, nd *node) {
		z.fill(name, nd)
		owners = append(owners, name)
	})
	for _, name := range owners {
		for p := name; p != ""; p = parentName(p) {
			z.node(p).below++
			if p == z.apex || !under(z.apex, p) {
				break
			}
		}
	}
	z.node(z.apex)
	z.vipNames = 0
	z.each(func(name string, nd *node) {
		if name != nsName && (len(nd.a) > 0 || len(nd.aaaa) > 0) {
			z.vipNames++
		}
		nd.fast = z.prepare(name, nd)
	})
	return z, st
}

// newZone returns a zone with its SOA and NS and no names yet.
func newZone(in zoneInput) *zone {
	z := &zone{
		serial:  in.serial,
		ttl:     in.ttl,
		apex:    in.apex,
		aliases: in.aliases,
		apexes:  append([]string{in.apex}, in.aliases...),
		ra:      in.ra,
		seed:    maphash.MakeSeed(),
		shards:  make([]map[string]*node, zoneShards),
	}
	z.soa = z.newSOA(in.serial)
	nsName := "ns." + z.apex
	z.ns = []mdns.RR{&mdns.NS{
		Hdr: mdns.RR_Header{Name: z.apex, Rrtype: mdns.TypeNS, Class: mdns.ClassINET, Ttl: z.ttl},
		Ns:  nsName,
	}}
	return z
}

func (z *zone) newSOA(serial uint32) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: z.apex, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: z.ttl},
		Ns:      "ns." + z.apex,
		Mbox:    "hostmaster." + z.apex,
		Serial:  serial,
		Refresh: 60,
		Retry:   30,
		Expire:  86400,
		Minttl:  z.ttl,
	}
}

// refAddr adds one reference to a in refs.
func refAddr(refs []addrRef, a netip.Addr) []addrRef {
	for i := range refs {
		if refs[i].addr == a {
			refs[i].n++
			return refs
		}
	}
	return append(refs, addrRef{addr: a, n: 1})
}

// refSrv adds one reference to k in refs.
func refSrv(refs []srvRef, k srvKey) []srvRef {
	for i := range refs {
		if refs[i].srvKey == k {
			refs[i].n++
			return refs
		}
	}
	return append(refs, srvRef{srvKey: k, n: 1})
}

// fill sets the records of a node from its references.
func (z *zone) fill(name string, nd *node) {
	nd.a, nd.aaaa, nd.srv = nil, nil, nil
	for _, r := range nd.addrs {
		hdr := mdns.RR_Header{Name: name, Class: mdns.ClassINET, Ttl: z.ttl}
		if r.addr.Is4() {
			hdr.Rrtype = mdns.TypeA
			nd.a = append(nd.a, &mdns.A{Hdr: hdr, A: r.addr.AsSlice()})
		} else {
			hdr.Rrtype = mdns.TypeAAAA
			nd.aaaa = append(nd.aaaa, &mdns.AAAA{Hdr: hdr, AAAA: r.addr.AsSlice()})
		}
	}
	for _, r := range nd.srvs {
		nd.srv = append(nd.srv, &mdns.SRV{
			Hdr:    mdns.RR_Header{Name: name, Rrtype: mdns.TypeSRV, Class: mdns.ClassINET, Ttl: z.ttl},
			Port:   r.port,
			Target: r.target,
		})
	}
}

func (nd *node) hasRecords() bool { return len(nd.a) > 0 || len(nd.aaaa) > 0 || len(nd.srv) > 0 }

// serving says whether a VIP may be answered: it takes new connections.
func serving(v *vip.VIP) bool {
	for _, b := range v.Backends {
		if b.Weight > 0 {
			return true
		}
	}
	return false
}

// shardOf returns the index of the map that holds name.
func (z *zone) shardOf(name string) int {
	return int(maphash.String(z.seed, name) % zoneShards)
}

// lookup returns the node of a canonical name under the primary apex.
func (z *zone) lookup(name string) *node {
	return z.shards[z.shardOf(name)][name]
}

// lookupKey is lookup for a name held in bytes, without allocating.
func (z *zone) lookupKey(key []byte) *node {
	return z.shards[maphash.Bytes(z.seed, key)%zoneShards][string(key)]
}

// each calls f for every node of the zone, in no particular order.
func (z *zone) each(f func(name string, nd *node)) {
	for _, sh := range z.shards {
		for name, nd := range sh {
			f(name, nd)
		}
	}
}

// node returns the node of name, made empty if missing. Only for a zone
// being built, never one that queries may see.
func (z *zone) node(name string) *node {
	i := z.shardOf(name)
	sh := z.shards[i]
	if sh == nil {
		sh = make(map[string]*node)
		z.shards[i] = sh
	}
	nd := sh[name]
	if nd == nil {
		nd = &node{}
		sh[name] = nd
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
// one per rotation. SRV answers carry their targets' addresses, so they are
// prepared after every node they point at is filled.
func (z *zone) prepare(name string, nd *node) fastNode {
	var f fastNode
	if strings.IndexByte(name, '\\') >= 0 {
		return f // escaped names go the slow way
	}
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
	return f
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
	nd := z.lookup(key)
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
		if gn := z.lookup(g); gn != nil {
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
		z.each(func(_ string, nd *node) {
			for _, rr := range slices.Concat(nd.a, nd.aaaa, nd.srv) {
				out = append(out, z.rename(rr, apex))
			}
		})
	}
	type keyed struct {
		text string
		rr   mdns.RR
	}
	ks := make([]keyed, len(out))
	for i, rr := range out {
		ks[i] = keyed{rr.String(), rr}
	}
	slices.SortFunc(ks, func(x, y keyed) int { return strings.Compare(x.text, y.text) })
	for i := range ks {
		out[i] = ks[i].rr
	}
	return out
}
