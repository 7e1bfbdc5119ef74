package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// Wire format, version 2 (the README has the full reference). Every message
// starts with two bytes: the format version (formatVersion) and the message
// kind. Integers are unsigned varints unless said otherwise; a string is a
// varint length (at most maxStringBytes) and its bytes; an address is one
// byte (0 invalid, 4 IPv4, 6 IPv6) then its 4 or 16 bytes, and for IPv6 a
// zone string; a sum is 8 bytes big endian.
//
//	delta:   node, generation, base, seq, layout (1 byte), flags (1 byte;
//	         bit 0 leaving, bit 1 restarting), sum, count, count × key (removed),
//	         count, count × registration (set)
//	notice:  node, generation, seq
//	pull:    requester, node, since generation, since seq, since layout
//	digest:  count, count × (node, generation, seq, flags (bit 0 leaving,
//	         bit 1 whole, bit 2 restarting), sum [, layout, count, count × registration
//	         when whole])
//	pages:   node, generation, base, seq, layout, flags (bit 0 leaving,
//	         bit 1 full, bit 2 restarting), sum, count, count × (page index, page seq,
//	         count, count × registration)
//
// A key is: protocol, name, VIP address, VIP port (2 bytes, big endian),
// framework, backend address, backend port (2 bytes). A registration is its
// key then weight, health, scheduler, persistence, claim address, claim time
// (1 byte 0 for none, or 1 then signed varint seconds and varint
// nanoseconds, UTC), public (1 byte, 0 or 1), public port (2 bytes, big
// endian; format 3).
//
// The decoder trusts nothing: every count is checked against what is left
// of the buffer before anything is allocated; unknown versions, kinds and
// flags, duplicate keys, pages out of order or out of the layout, a
// registration in a page its key does not hash to, and trailing bytes are
// errors; a message larger than its cap is refused before it is read.
const formatVersion = 3

// msgKind says what a message carries.
type msgKind byte

const (
	kindDelta  msgKind = 1 // a change of a node's record from base to seq (gossip)
	kindNotice msgKind = 2 // "node X is now at version V" (change too large to gossip)
	kindPull   msgKind = 3 // "send me what changed since my version" (TCP)
	kindDigest msgKind = 4 // every node's version (push/pull anti-entropy)
	kindPages  msgKind = 5 // the pages that changed since a version (TCP reply)
	// kindApplied is a part of a node's report of what its kernel
	// programmed (gossip); part of format 3.
	kindApplied msgKind = 6
	// kindAppliedQuery asks a node for its report (TCP); it answers with
	// its kind-6 parts, to the asker alone.
	kindAppliedQuery msgKind = 7
)

func (k msgKind) String() string {
	switch k {
	case kindDelta:
		return "delta"
	case kindNotice:
		return "notice"
	case kindPull:
		return "pull"
	case kindDigest:
		return "digest"
	case kindPages:
		return "pages"
	case kindApplied:
		return "applied"
	case kindAppliedQuery:
		return "applied query"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Size caps. MaxRegistrations is the most registrations one node may
// publish (PublishDelta refuses more: ErrRecordFull); MaxMessageBytes
// bounds a gossip message or pull request;
// MaxRecordBytes bounds one node's record as carried whole in a pages reply
// (PublishDelta refuses to grow a record past it: ErrRecordFull);
// MaxStreamBytes bounds any message read from TCP, below memberlist's own
// 20 MiB; MaxStateBytes bounds a push/pull digest.
const (
	MaxRegistrations = 200_000
	MaxMessageBytes  = 1 << 20
	MaxRecordBytes   = 16 << 20
	MaxStreamBytes   = MaxRecordBytes + 1<<16
	MaxStateBytes    = 16 << 20
	maxStringBytes   = 1024
	// minKeyBytes and minRegistrationBytes are the fewest bytes one key or
	// registration can take on the wire; a count larger than what is left
	// divided by this is a lie.
	minKeyBytes          = 9
	minRegistrationBytes = 15
	// minDigestEntryBytes, minPageBytes: the same bound for digest
	// entries and pages.
	minDigestEntryBytes = 13
	minPageBytes        = 3
	// pageHeaderBytes bounds a page's index, seq and count on the wire;
	// messageHeaderBytes a pages message's header (node name included).
	pageHeaderBytes    = 24
	messageHeaderBytes = 64 + maxStringBytes
)

// Decoding errors, for tests and counters.
var (
	ErrOversized = errors.New("message over size cap")
	ErrMalformed = errors.New("malformed message")
)

// deltaMsg is a change of Node's record from version (Gen, Base) to (Gen,
// Seq): the final value of every key that changed in between. A peer that
// holds any version from Base to Seq of that generation can apply it. Base
// 0 means the whole record (Set is everything): anyone can apply it. A
// leaving delta empties the record. A restarting delta says the owner is
// restarting: peers keep its record visible while it is gone (see
// store.leave); it never goes with leaving.
type deltaMsg struct {
	Node           string
	Gen, Base, Seq uint64
	Layout         uint8
	Leaving        bool
	Restarting     bool
	Sum            uint64
	Removed        []vip.RegKey
	Set            []vip.Registration
}

// pagesMsg is the reply to a pull: the pages of Node's record at (Gen,
// Seq) that changed after Base, each whole; or, when Full, every non-empty
// page (the receiver drops what it held).
type pagesMsg struct {
	Node           string
	Gen, Base, Seq uint64
	Layout         uint8
	Leaving, Full  bool
	Restarting     bool
	Sum            uint64
	Pages          []pageMsg
}

// pageMsg is one page of a pages reply.
type pageMsg struct {
	Index uint32
	Seq   uint64
	Regs  []vip.Registration
}

// digestEntry is one node's version in a push/pull digest. In the
// exchange that joins a node, small records also travel whole (Whole,
// Layout, Regs), so that a joiner does not pull each of them.
type digestEntry struct {
	Node       string
	Version    Version
	Leaving    bool
	Restarting bool
	Sum        uint64
	Whole      bool
	Layout     uint8
	Regs       []vip.Registration
}

// message is one decoded message; which fields are set depends on Kind.
type message struct {
	Kind  msgKind
	Delta *deltaMsg
	Pages *pagesMsg
	// Node and Version are set for kindNotice; Node, Requester, Version
	// (since) and Layout for kindPull.
	Node      string
	Version   Version
	Layout    uint8
	Requester string
	Digest    []digestEntry
	Applied   *appliedMsg
}

// encoder appends to a byte slice.
type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) byte1(v byte)     { e.b = append(e.b, v) }
func (e *encoder) uint16(v uint16)  { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) uint64(v uint64)  { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) addr(a netip.Addr) {
	switch {
	case !a.IsValid():
		e.byte1(0)
	case a.Is4():
		e.byte1(4)
		v := a.As4()
		e.b = append(e.b, v[:]...)
	default:
		e.byte1(6)
		v := a.As16()
		e.b = append(e.b, v[:]...)
		e.str(a.Zone())
	}
}

func (e *encoder) regKey(k vip.RegKey) {
	e.str(string(k.VIP.Protocol))
	e.str(k.VIP.Name)
	e.addr(k.VIP.Addr)
	e.uint16(k.VIP.Port)
	e.str(k.Framework)
	e.addr(k.Backend.Addr())
	e.uint16(k.Backend.Port())
}

// regRest encodes what follows a registration's key.
func (e *encoder) regRest(r *vip.Registration) {
	e.uvarint(uint64(r.Weight))
	e.str(string(r.Health))
	e.str(r.Scheduler)
	e.uvarint(uint64(r.Persistence))
	e.addr(r.Claim.Addr)
	if r.Claim.Since.IsZero() {
		e.byte1(0)
	} else {
		e.byte1(1)
		e.varint(r.Claim.Since.Unix())
		e.uvarint(uint64(r.Claim.Since.Nanosecond()))
	}
	if r.Public {
		e.byte1(1)
	} else {
		e.byte1(0)
	}
	e.uint16(r.PublicPort)
}

func (e *encoder) registration(r *vip.Registration) {
	e.regKey(r.Key())
	e.regRest(r)
}

func header(k msgKind) encoder {
	return encoder{b: []byte{formatVersion, byte(k)}}
}

func leavingFlag(l bool) byte {
	if l {
		return 1
	}
	return 0
}

// encodeDelta encodes a delta message.
func encodeDelta(d *deltaMsg) []byte {
	e := header(kindDelta)
	e.str(d.Node)
	e.uvarint(d.Gen)
	e.uvarint(d.Base)
	e.uvarint(d.Seq)
	e.byte1(d.Layout)
	flags := leavingFlag(d.Leaving)
	if d.Restarting {
		flags |= 2
	}
	e.byte1(flags)
	e.uint64(d.Sum)
	e.uvarint(uint64(len(d.Removed)))
	for _, k := range d.Removed {
		e.regKey(k)
	}
	e.uvarint(uint64(len(d.Set)))
	for i := range d.Set {
		e.registration(&d.Set[i])
	}
	return e.b
}

// encodeNotice encodes a notice that node is at version v.
func encodeNotice(node string, v Version) []byte {
	e := header(kindNotice)
	e.str(node)
	e.uvarint(v.Generation)
	e.uvarint(v.Seq)
	return e.b
}

// encodePull encodes a request from requester for what changed in node's
// record since the version it holds (zero: it holds none) in layout.
func encodePull(requester, node string, since Version, layout uint8) []byte {
	e := header(kindPull)
	e.str(requester)
	e.str(node)
	e.uvarint(since.Generation)
	e.uvarint(since.Seq)
	e.byte1(layout)
	return e.b
}

// encodeDigest encodes the versions of many nodes, for push/pull.
func encodeDigest(entries []digestEntry) []byte {
	e := header(kindDigest)
	e.uvarint(uint64(len(entries)))
	for _, d := range entries {
		e.str(d.Node)
		e.uvarint(d.Version.Generation)
		e.uvarint(d.Version.Seq)
		flags := leavingFlag(d.Leaving)
		if d.Whole {
			flags |= 2
		}
		if d.Restarting {
			flags |= 4
		}
		e.byte1(flags)
		e.uint64(d.Sum)
		if d.Whole {
			e.byte1(d.Layout)
			e.uvarint(uint64(len(d.Regs)))
			for i := range d.Regs {
				e.registration(&d.Regs[i])
			}
		}
	}
	return e.b
}

// encodePages encodes a pull reply.
func encodePages(p *pagesMsg) []byte {
	e := header(kindPages)
	e.str(p.Node)
	e.uvarint(p.Gen)
	e.uvarint(p.Base)
	e.uvarint(p.Seq)
	e.byte1(p.Layout)
	flags := leavingFlag(p.Leaving)
	if p.Full {
		flags |= 2
	}
	if p.Restarting {
		flags |= 4
	}
	e.byte1(flags)
	e.uint64(p.Sum)
	e.uvarint(uint64(len(p.Pages)))
	for _, pg := range p.Pages {
		e.uvarint(uint64(pg.Index))
		e.uvarint(pg.Seq)
		e.uvarint(uint64(len(pg.Regs)))
		for i := range pg.Regs {
			e.registration(&pg.Regs[i])
		}
	}
	return e.b
}

// decoder reads from a byte slice; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint for %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint for %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail("%s %d out of range", what, v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("%s: want %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1(what string) byte {
	v := d.bytes(1, what)
	if v == nil {
		return 0
	}
	return v[0]
}

func (d *decoder) uint16(what string) uint16 {
	v := d.bytes(2, what)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}

func (d *decoder) uint64(what string) uint64 {
	v := d.bytes(8, what)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (d *decoder) str(what string) string {
	return string(d.strBytes(what))
}

// strBytes decodes a string's length and returns its bytes, still in the
// message (nil after a failure).
func (d *decoder) strBytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > maxStringBytes {
		d.fail("%s: string of %d bytes over %d", what, n, maxStringBytes)
		return nil
	}
	return d.bytes(int(n), what)
}

func (d *decoder) node(what string) string {
	s := d.str(what)
	if d.err == nil && s == "" {
		d.fail("empty %s", what)
	}
	return s
}

func (d *decoder) count(what string, minBytes int) int {
	n := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/minBytes) {
		d.fail("%d %s cannot fit in %d bytes", n, what, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) layout() uint8 {
	l := d.byte1("layout")
	if l > maxLayout {
		d.fail("layout %d over %d", l, maxLayout)
	}
	return l
}

func (d *decoder) addr(what string) netip.Addr {
	switch kind := d.byte1(what); kind {
	case 0:
		return netip.Addr{}
	case 4:
		v := d.bytes(4, what)
		if v == nil {
			return netip.Addr{}
		}
		return netip.AddrFrom4([4]byte(v))
	case 6:
		v := d.bytes(16, what)
		if v == nil {
			return netip.Addr{}
		}
		a := netip.AddrFrom16([16]byte(v))
		zone := d.str(what + " zone")
		if zone != "" {
			a = a.WithZone(zone)
		}
		return a
	default:
		d.fail("%s: unknown address kind %d", what, kind)
		return netip.Addr{}
	}
}

// common are the values of a registration's small-vocabulary fields
// (protocol, framework, health, scheduler): decoded, they share these
// strings instead of each registration holding its own copy.
var common = func() map[string]string {
	m := map[string]string{}
	for _, v := range []string{string(vip.TCP), string(vip.UDP), vip.DefaultFramework,
		string(vip.Healthy), string(vip.Unhealthy), string(vip.Draining),
		"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf"} {
		m[v] = v
	}
	return m
}()

// word decodes a string of a small vocabulary: a common value is shared.
func (d *decoder) word(what string) string {
	b := d.strBytes(what)
	if v, ok := common[string(b)]; ok { // no allocation: the compiler looks up without one
		return v
	}
	return string(b)
}

func (d *decoder) regKey() vip.RegKey {
	var k vip.RegKey
	k.VIP.Protocol = vip.Protocol(d.word("protocol"))
	k.VIP.Name = d.str("vip name")
	k.VIP.Addr = d.addr("vip address")
	k.VIP.Port = d.uint16("vip port")
	k.Framework = d.word("framework")
	backend := d.addr("backend address")
	k.Backend = netip.AddrPortFrom(backend, d.uint16("backend port"))
	return k
}

func (d *decoder) registration() vip.Registration {
	k := d.regKey()
	r := vip.Registration{VIP: k.VIP, Framework: k.Framework, Backend: k.Backend}
	r.Weight = d.uint32("weight")
	r.Health = vip.Health(d.word("health"))
	r.Scheduler = d.word("scheduler")
	r.Persistence = d.uint32("persistence")
	r.Claim.Addr = d.addr("claim address")
	switch flag := d.byte1("claim time"); flag {
	case 0:
	case 1:
		sec := d.varint("claim seconds")
		nsec := d.uvarint("claim nanoseconds")
		if nsec >= uint64(time.Second) {
			d.fail("claim nanoseconds %d out of range", nsec)
			break
		}
		r.Claim.Since = time.Unix(sec, int64(nsec)).UTC()
		if r.Claim.Since.IsZero() {
			// The zero time is written as "none"; anything else that lands
			// on it was not written by an encoder.
			d.fail("claim time is the zero time")
		}
	default:
		d.fail("claim time flag %d", flag)
	}
	switch flag := d.byte1("public"); flag {
	case 0:
	case 1:
		r.Public = true
	default:
		d.fail("public flag %d", flag)
	}
	r.PublicPort = d.uint16("public port")
	return r
}

func (d *decoder) flags(allowed byte) byte {
	f := d.byte1("flags")
	if f&^allowed != 0 {
		d.fail("unknown flags %#x", f)
	}
	return f
}

func (d *decoder) delta() *deltaMsg {
	m := &deltaMsg{}
	m.Node = d.node("node")
	m.Gen = d.uvarint("generation")
	m.Base = d.uvarint("base")
	m.Seq = d.uvarint("seq")
	m.Layout = d.layout()
	f := d.flags(3)
	m.Leaving, m.Restarting = f&1 != 0, f&2 != 0
	if d.err == nil && m.Leaving && m.Restarting {
		d.fail("delta both leaving and restarting")
	}
	m.Sum = d.uint64("sum")
	if d.err == nil && m.Base >= m.Seq {
		d.fail("base %d not below seq %d", m.Base, m.Seq)
	}
	seen := newKeySet()
	n := d.count("removed keys", minKeyBytes)
	if n > 0 {
		m.Removed = make([]vip.RegKey, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		k := d.regKey()
		if !seen.add(k) {
			d.fail("key %v twice", k)
		}
		m.Removed = append(m.Removed, k)
	}
	n = d.count("registrations", minRegistrationBytes)
	if n > 0 {
		m.Set = make([]vip.Registration, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		r := d.registration()
		if !seen.add(r.Key()) {
			d.fail("key %v twice", r.Key())
		}
		m.Set = append(m.Set, r)
	}
	if d.err == nil && m.Leaving && (len(m.Set) > 0 || len(m.Removed) > 0 || m.Sum != 0) {
		d.fail("leaving delta with content")
	}
	if d.err == nil && m.Base == 0 && len(m.Removed) > 0 {
		d.fail("whole-record delta with removed keys")
	}
	return m
}

func (d *decoder) pages() *pagesMsg {
	m := &pagesMsg{}
	m.Node = d.node("node")
	m.Gen = d.uvarint("generation")
	m.Base = d.uvarint("base")
	m.Seq = d.uvarint("seq")
	m.Layout = d.layout()
	f := d.flags(7)
	m.Leaving, m.Full, m.Restarting = f&1 != 0, f&2 != 0, f&4 != 0
	if d.err == nil && m.Leaving && m.Restarting {
		d.fail("pages both leaving and restarting")
	}
	m.Sum = d.uint64("sum")
	if d.err == nil && m.Base > m.Seq {
		d.fail("base %d after seq %d", m.Base, m.Seq)
	}
	n := d.count("pages", minPageBytes)
	if d.err == nil && n > 1<<m.Layout {
		d.fail("%d pages in a layout of %d", n, 1<<m.Layout)
	}
	if n > 0 {
		m.Pages = make([]pageMsg, 0, n)
	}
	next := uint64(0)
	for i := 0; i < n && d.err == nil; i++ {
		var p pageMsg
		idx := d.uvarint("page index")
		if d.err == nil && (idx < next || idx >= 1<<m.Layout) {
			d.fail("page index %d out of order or layout", idx)
		}
		next = idx + 1
		p.Index = uint32(idx)
		p.Seq = d.uvarint("page seq")
		if d.err == nil && p.Seq > m.Seq {
			d.fail("page seq %d after record seq %d", p.Seq, m.Seq)
		}
		c := d.count("registrations", minRegistrationBytes)
		if c > 0 {
			p.Regs = make([]vip.Registration, 0, c)
		}
		seen := map[vip.RegKey]bool{}
		for j := 0; j < c && d.err == nil; j++ {
			r := d.registration()
			k := r.Key()
			if seen[k] {
				d.fail("key %v twice", k)
			}
			seen[k] = true
			if d.err == nil && pageOf(keyHashOf(k), m.Layout) != int(p.Index) {
				d.fail("key %v is not in page %d", k, p.Index)
			}
			p.Regs = append(p.Regs, r)
		}
		m.Pages = append(m.Pages, p)
	}
	if d.err == nil && m.Leaving && (len(m.Pages) > 0 || m.Sum != 0 || !m.Full) {
		d.fail("leaving pages with content")
	}
	return m
}

// decodeMessage decodes one message of at most limit bytes. It never
// panics and never allocates more than a small multiple of len(b).
func decodeMessage(b []byte, limit int) (*message, error) {
	if len(b) > limit {
		return nil, fmt.Errorf("%w: %d bytes over %d", ErrOversized, len(b), limit)
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrMalformed, len(b))
	}
	if b[0] != formatVersion {
		return nil, fmt.Errorf("%w: format version %d, want %d", ErrMalformed, b[0], formatVersion)
	}
	d := &decoder{b: b[2:]}
	m := &message{Kind: msgKind(b[1])}
	switch m.Kind {
	case kindDelta:
		m.Delta = d.delta()
	case kindApplied:
		m.Applied = d.applied()
	case kindAppliedQuery:
		m.Requester = d.node("requester")
	case kindNotice:
		m.Node = d.node("node")
		m.Version.Generation = d.uvarint("generation")
		m.Version.Seq = d.uvarint("seq")
	case kindPull:
		m.Requester = d.node("requester")
		m.Node = d.node("node")
		m.Version.Generation = d.uvarint("since generation")
		m.Version.Seq = d.uvarint("since seq")
		m.Layout = d.layout()
	case kindDigest:
		n := d.count("digest entries", minDigestEntryBytes)
		if n > 0 {
			m.Digest = make([]digestEntry, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			var e digestEntry
			e.Node = d.node("node")
			e.Version.Generation = d.uvarint("generation")
			e.Version.Seq = d.uvarint("seq")
			f := d.flags(7)
			e.Leaving, e.Whole, e.Restarting = f&1 != 0, f&2 != 0, f&4 != 0
			if d.err == nil && e.Leaving && e.Restarting {
				d.fail("digest entry both leaving and restarting")
			}
			e.Sum = d.uint64("sum")
			if e.Whole {
				if e.Leaving || e.Version.Seq == 0 {
					d.fail("whole entry leaving or at seq 0")
				}
				e.Layout = d.layout()
				c := d.count("registrations", minRegistrationBytes)
				if c > 0 {
					e.Regs = make([]vip.Registration, 0, c)
				}
				seen := map[vip.RegKey]bool{}
				for j := 0; j < c && d.err == nil; j++ {
					r := d.registration()
					if k := r.Key(); seen[k] {
						d.fail("key %v twice", k)
					} else {
						seen[k] = true
					}
					e.Regs = append(e.Regs, r)
				}
			}
			m.Digest = append(m.Digest, e)
		}
	case kindPages:
		m.Pages = d.pages()
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformed, b[1])
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode %s: %w", m.Kind, d.err)
	}
	return m, nil
}

// fullDelta returns the delta that carries r whole (base 0).
func fullDelta(r *record, layout uint8) *deltaMsg {
	d := &deltaMsg{Node: r.Node, Gen: r.Version.Generation, Seq: r.Version.Seq, Layout: layout, Leaving: r.Leaving,
		Restarting: r.Restarting && !r.Leaving}
	if !r.Leaving {
		d.Set = dedupeByKey(normalizeRegistrations(r.Registrations))
		for _, reg := range d.Set {
			d.Sum ^= newRegEntry(reg).hash
		}
	}
	return d
}

// keySet finds duplicate keys in a message: a short list while small (a
// gossiped delta usually holds one or two keys), a map beyond.
type keySet struct {
	few  []vip.RegKey
	many map[vip.RegKey]bool
}

func newKeySet() *keySet { return &keySet{} }

// add reports whether k was not in the set, and adds it.
func (s *keySet) add(k vip.RegKey) bool {
	if s.many != nil {
		if s.many[k] {
			return false
		}
		s.many[k] = true
		return true
	}
	for _, x := range s.few {
		if x == k {
			return false
		}
	}
	s.few = append(s.few, k)
	if len(s.few) > 8 {
		s.many = make(map[vip.RegKey]bool, 2*len(s.few))
		for _, x := range s.few {
			s.many[x] = true
		}
		s.few = nil
	}
	return true
}
