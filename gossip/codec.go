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

// Wire format, version 1. Every message starts with two bytes: the format
// version (formatVersion) and the message kind. Integers are unsigned
// varints unless said otherwise; a string is a varint length (at most
// maxStringBytes) and its bytes; an address is one byte (0 invalid, 4 IPv4,
// 6 IPv6) then its 4 or 16 bytes, and for IPv6 a zone string.
//
//	record:  node, generation, seq, flags (1 byte; bit 0 = leaving),
//	         count, count × registration
//	notice:  node, generation, seq
//	pull:    requester, node
//	state:   count, count × (record without its two header bytes)
//
// A registration is: protocol, name, VIP address, VIP port (2 bytes, big
// endian), framework, backend address, backend port (2 bytes), weight,
// health, scheduler, persistence, claim address, claim time (1 byte 0 for
// none, or 1 then signed varint seconds and varint nanoseconds, UTC).
//
// The decoder trusts nothing: every length is checked against what is left
// of the buffer before anything is allocated, unknown versions, kinds, flags
// and trailing bytes are errors, and a message larger than its cap is refused
// before it is read.
const formatVersion = 1

// msgKind says what a message carries.
type msgKind byte

const (
	kindRecord msgKind = 1 // a node's full record (small records, broadcast)
	kindNotice msgKind = 2 // "node X is now at version V" (large records)
	kindPull   msgKind = 3 // "send me your record" (answered over TCP)
	kindState  msgKind = 4 // many records (push/pull anti-entropy)
)

func (k msgKind) String() string {
	switch k {
	case kindRecord:
		return "record"
	case kindNotice:
		return "notice"
	case kindPull:
		return "pull"
	case kindState:
		return "state"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Size caps. MaxMessageBytes bounds a record, notice or pull message (and
// so the registrations one node may publish); MaxStateBytes bounds the full
// state exchanged on push/pull, below memberlist's own 20 MiB limit.
const (
	MaxMessageBytes = 1 << 20
	MaxStateBytes   = 16 << 20
	maxStringBytes  = 1024
	// minRegistrationBytes is the fewest bytes one registration can take on
	// the wire; a count larger than what is left divided by this is a lie.
	minRegistrationBytes = 15
	// minRecordBytes is the same bound for a record inside a state message.
	minRecordBytes = 6
)

// Decoding errors, for tests and counters.
var (
	ErrOversized = errors.New("message over size cap")
	ErrMalformed = errors.New("malformed message")
)

// message is one decoded message; which fields are set depends on Kind.
type message struct {
	Kind msgKind
	// Record is set for kindRecord.
	Record *record
	// Node and Version are set for kindNotice; Node and Requester for kindPull.
	Node      string
	Version   Version
	Requester string
	// Records is set for kindState.
	Records []*record
}

// encoder appends to a byte slice.
type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) byte1(v byte)     { e.b = append(e.b, v) }
func (e *encoder) uint16(v uint16)  { e.b = binary.BigEndian.AppendUint16(e.b, v) }
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

func (e *encoder) registration(r *vip.Registration) {
	e.str(string(r.VIP.Protocol))
	e.str(r.VIP.Name)
	e.addr(r.VIP.Addr)
	e.uint16(r.VIP.Port)
	e.str(r.Framework)
	e.addr(r.Backend.Addr())
	e.uint16(r.Backend.Port())
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
}

func (e *encoder) recordBody(r *record) {
	e.str(r.Node)
	e.uvarint(r.Version.Generation)
	e.uvarint(r.Version.Seq)
	var flags byte
	if r.Leaving {
		flags |= 1
	}
	e.byte1(flags)
	e.uvarint(uint64(len(r.Registrations)))
	for i := range r.Registrations {
		e.registration(&r.Registrations[i])
	}
}

func header(k msgKind) encoder {
	return encoder{b: []byte{formatVersion, byte(k)}}
}

// encodeRecord encodes one record message.
func encodeRecord(r *record) []byte {
	e := header(kindRecord)
	e.recordBody(r)
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

// encodePull encodes a request from requester for node's record.
func encodePull(requester, node string) []byte {
	e := header(kindPull)
	e.str(requester)
	e.str(node)
	return e.b
}

// encodeState encodes many records for push/pull.
func encodeState(records []*record) []byte {
	e := header(kindState)
	e.uvarint(uint64(len(records)))
	for _, r := range records {
		e.recordBody(r)
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

func (d *decoder) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > maxStringBytes {
		d.fail("%s: string of %d bytes over %d", what, n, maxStringBytes)
		return ""
	}
	return string(d.bytes(int(n), what))
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

func (d *decoder) registration() vip.Registration {
	var r vip.Registration
	r.VIP.Protocol = vip.Protocol(d.str("protocol"))
	r.VIP.Name = d.str("vip name")
	r.VIP.Addr = d.addr("vip address")
	r.VIP.Port = d.uint16("vip port")
	r.Framework = d.str("framework")
	backend := d.addr("backend address")
	r.Backend = netip.AddrPortFrom(backend, d.uint16("backend port"))
	r.Weight = d.uint32("weight")
	r.Health = vip.Health(d.str("health"))
	r.Scheduler = d.str("scheduler")
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
	return r
}

func (d *decoder) recordBody() *record {
	r := &record{}
	r.Node = d.str("node")
	if d.err == nil && r.Node == "" {
		d.fail("empty node name")
	}
	r.Version.Generation = d.uvarint("generation")
	r.Version.Seq = d.uvarint("seq")
	flags := d.byte1("flags")
	if flags&^1 != 0 {
		d.fail("unknown flags %#x", flags)
	}
	r.Leaving = flags&1 != 0
	n := d.uvarint("registration count")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)/minRegistrationBytes) {
		d.fail("%d registrations cannot fit in %d bytes", n, len(d.b))
		return nil
	}
	if r.Leaving && n > 0 {
		d.fail("leaving record with %d registrations", n)
		return nil
	}
	if n > 0 {
		r.Registrations = make([]vip.Registration, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		r.Registrations = append(r.Registrations, d.registration())
	}
	if d.err != nil {
		return nil
	}
	return r
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
	case kindRecord:
		m.Record = d.recordBody()
	case kindNotice:
		m.Node = d.str("node")
		m.Version.Generation = d.uvarint("generation")
		m.Version.Seq = d.uvarint("seq")
		if d.err == nil && m.Node == "" {
			d.fail("empty node name")
		}
	case kindPull:
		m.Requester = d.str("requester")
		m.Node = d.str("node")
		if d.err == nil && (m.Node == "" || m.Requester == "") {
			d.fail("empty node name")
		}
	case kindState:
		n := d.uvarint("record count")
		if d.err == nil && n > uint64(len(d.b)/minRecordBytes) {
			d.fail("%d records cannot fit in %d bytes", n, len(d.b))
		}
		if d.err == nil && n > 0 {
			m.Records = make([]*record, 0, n)
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			if r := d.recordBody(); r != nil {
				m.Records = append(m.Records, r)
			}
		}
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
