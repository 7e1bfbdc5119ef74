package dns

import (
	"encoding/binary"

	mdns "github.com/miekg/dns"
)

// ednsSize is the UDP payload size we advertise (the DNS flag day 2020
// value, safe from fragmentation).
const ednsSize = 1232

// Header bits in the second 16-bit word of a DNS header.
const (
	bitQR = 0x8000
	bitAA = 0x0400
	bitRD = 0x0100
	bitRA = 0x0080
	bitCD = 0x0010
)

// query is what the prepared-answer path needs of a question, read either
// from raw bytes (parseQuery) or from an unpacked message (queryOf).
type query struct {
	id     uint16
	rd, cd bool
	qtype  uint16
	qclass uint16
	// key is the name, lower-case, in presentation form with the trailing dot.
	key []byte
	// wireName is the question's name as sent, in wire form (raw path);
	// nil on the handler path, where name is used instead.
	wireName []byte
	name     string
	edns     bool
	udpSize  uint16
	do       bool
	tcp      bool
}

// maxSize is the largest reply the client accepts.
func (q *query) maxSize() int {
	if q.tcp {
		return mdns.MaxMsgSize
	}
	if q.edns && q.udpSize > mdns.MinMsgSize {
		return int(q.udpSize)
	}
	return mdns.MinMsgSize
}

// fastReply writes into dst the prepared answer to q, with q's ID, flags,
// question spelling and EDNS. It returns false when q has no prepared answer
// or the answer does not fit, and the caller must take the slow path.
func (z *zone) fastReply(dst []byte, q *query) ([]byte, bool) {
	if q.qclass != mdns.ClassINET {
		return nil, false
	}
	nd := z.lookupKey(q.key)
	if nd == nil {
		return nil, false
	}
	variants := nd.fast.forType(q.qtype)
	if len(variants) == 0 {
		return nil, false
	}
	t := variants[0]
	if len(variants) > 1 {
		t = variants[z.rotation.Add(1)%uint32(len(variants))]
	}
	size := len(t)
	if q.edns {
		size += 11
	}
	if size > q.maxSize() {
		return nil, false
	}
	out := append(dst[:0], t...)
	binary.BigEndian.PutUint16(out[0:], q.id)
	flags := uint16(bitQR | bitAA)
	if q.rd {
		flags |= bitRD
	}
	if z.ra {
		flags |= bitRA
	}
	if q.cd {
		flags |= bitCD
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	if q.wireName != nil {
		copy(out[12:], q.wireName)
	} else {
		// Same length as the prepared lower-case name: copy the client's
		// spelling label byte by label byte, skipping the dots (length bytes).
		for i := 0; i < len(q.name)-1; i++ {
			if q.name[i] != '.' {
				out[13+i] = q.name[i]
			}
		}
	}
	if q.edns {
		var ttl uint32
		if q.do {
			ttl = 0x8000
		}
		out = append(out, 0, 0, 41, byte(ednsSize>>8), byte(ednsSize&0xff),
			byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl), 0, 0)
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
	}
	return out, true
}

// parseQuery reads a plain query from raw bytes: opcode QUERY, one
// question with an uncompressed, unescaped name, no answer or authority
// records, at most an EDNS0 (version 0) OPT record, nothing after. It
// returns false for anything else, which the server then unpacks and
// handles the slow way. key must have room for 256 bytes.
func parseQuery(msg []byte, q *query, key []byte) bool {
	if len(msg) < 12+1+4 {
		return false
	}
	flags := binary.BigEndian.Uint16(msg[2:])
	if flags&bitQR != 0 || (flags>>11)&0xf != mdns.OpcodeQuery {
		return false
	}
	if binary.BigEndian.Uint16(msg[4:]) != 1 || binary.BigEndian.Uint16(msg[6:]) != 0 ||
		binary.BigEndian.Uint16(msg[8:]) != 0 {
		return false
	}
	arcount := binary.BigEndian.Uint16(msg[10:])
	if arcount > 1 {
		return false
	}
	off, n := 12, 0
	for {
		if off >= len(msg) {
			return false
		}
		l := int(msg[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 || off+1+l > len(msg) || n+l+1 > 255 {
			return false
		}
		for _, c := range msg[off+1 : off+1+l] {
			if c <= ' ' || c >= 0x7f || c == '.' || c == '\\' {
				return false
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			key[n] = c
			n++
		}
		key[n] = '.'
		n++
		off += 1 + l
	}
	if n == 0 || off+4 > len(msg) {
		return false
	}
	*q = query{
		id:       binary.BigEndian.Uint16(msg[0:]),
		rd:       flags&bitRD != 0,
		cd:       flags&bitCD != 0,
		key:      key[:n],
		wireName: msg[12:off],
		qtype:    binary.BigEndian.Uint16(msg[off:]),
		qclass:   binary.BigEndian.Uint16(msg[off+2:]),
	}
	off += 4
	if arcount == 0 {
		return off == len(msg)
	}
	// OPT: root owner, type 41, class = payload size, TTL = ext-rcode,
	// version, flags; then options.
	if off+11 > len(msg) || msg[off] != 0 || binary.BigEndian.Uint16(msg[off+1:]) != mdns.TypeOPT {
		return false
	}
	if msg[off+5] != 0 || msg[off+6] != 0 { // extended rcode, version
		return false
	}
	q.edns = true
	q.udpSize = binary.BigEndian.Uint16(msg[off+3:])
	q.do = msg[off+7]&0x80 != 0
	rdlen := int(binary.BigEndian.Uint16(msg[off+9:]))
	off += 11
	if off+rdlen != len(msg) {
		return false
	}
	// Only options whose content we need not check (cookies, padding)
	// take this path; the others are checked by the full unpack.
	for opts := msg[off:]; len(opts) > 0; {
		if len(opts) < 4 {
			return false
		}
		code := binary.BigEndian.Uint16(opts)
		olen := int(binary.BigEndian.Uint16(opts[2:]))
		if len(opts) < 4+olen {
			return false
		}
		switch {
		case code == mdns.EDNS0COOKIE && (olen == 8 || (olen >= 16 && olen <= 40)):
		case code == mdns.EDNS0PADDING:
		default:
			return false
		}
		opts = opts[4+olen:]
	}
	return true
}

// queryOf reads q from an unpacked message for the prepared-answer path; it
// returns false when the message must take the slow path. The lower-case
// name is written into key (room for 256 bytes) and is key[:len(q.name)];
// the caller sets q.key, so that key can stay on the caller's stack.
func queryOf(r *mdns.Msg, tcp bool, q *query, key []byte) bool {
	if r.Opcode != mdns.OpcodeQuery || len(r.Question) != 1 {
		return false
	}
	qq := &r.Question[0]
	name := qq.Name
	if len(name) < 2 || len(name) > 255 || name[len(name)-1] != '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '\\' {
			return false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		key[i] = c
	}
	*q = query{
		id:     r.Id,
		rd:     r.RecursionDesired,
		cd:     r.CheckingDisabled,
		qtype:  qq.Qtype,
		qclass: qq.Qclass,
		name:   name,
		tcp:    tcp,
	}
	if opt := r.IsEdns0(); opt != nil {
		if opt.Version() != 0 || opt.ExtendedRcode() != 0 {
			return false
		}
		q.edns = true
		q.udpSize = opt.UDPSize()
		q.do = opt.Do()
	}
	return true
}
