package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The file format.
//
//	file   = magic frame(header) frame(record)*
//	magic  = "l4lbjnl\n"
//	frame  = length:uint32le crc:uint32le payload[length]   crc = CRC-32C of payload
//	header = 'H' format:uint32le version:uint32le kind...
//	record = 'P' keylen:uvarint key value...   (put key = value)
//	       | 'D' keylen:uvarint key            (delete key)
//
// A frame whose length is out of range, whose payload runs past the end of
// the file, whose checksum does not match or whose payload does not decode
// ends the readable log: what follows is a torn tail.
const (
	magic = "l4lbjnl\n"
	// formatVersion is the framing this code writes and reads.
	formatVersion = 1
	frameHeader   = 8
	// MaxRecord is the largest payload of one record (key and value).
	MaxRecord = 16 << 20
)

const (
	opHeader = 'H'
	opPut    = 'P'
	opDelete = 'D'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Op is one change: put Key = Value, or delete Key.
type Op struct {
	Key    string
	Value  []byte // ignored when Delete
	Delete bool
}

// appendFrame appends payload framed with its length and checksum.
func appendFrame(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// appendOp appends op as one frame. The payload is built in place after
// the frame header, then the header is filled in.
func appendOp(dst []byte, op Op) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	if op.Delete {
		dst = append(dst, opDelete)
	} else {
		dst = append(dst, opPut)
	}
	dst = binary.AppendUvarint(dst, uint64(len(op.Key)))
	dst = append(dst, op.Key...)
	if !op.Delete {
		dst = append(dst, op.Value...)
	}
	payload := dst[start+frameHeader:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// opSize is how many bytes appendOp adds for op.
func opSize(op Op) int64 {
	n := frameHeader + 1 + uvarintLen(uint64(len(op.Key))) + len(op.Key)
	if !op.Delete {
		n += len(op.Value)
	}
	return int64(n)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// header is what a journal's first frame says.
type header struct {
	format  uint32
	version uint32
	kind    string
}

func appendHeader(dst []byte, h header) []byte {
	dst = append(dst, magic...)
	p := []byte{opHeader}
	p = binary.LittleEndian.AppendUint32(p, h.format)
	p = binary.LittleEndian.AppendUint32(p, h.version)
	p = append(p, h.kind...)
	return appendFrame(dst, p)
}

// errNotJournal says the data does not start with a journal's header.
var errNotJournal = errors.New("not a journal (no header)")

// decodeHeader reads the magic and header frame at the start of data and
// returns the header and its length.
func decodeHeader(data []byte) (header, int, error) {
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		return header{}, 0, errNotJournal
	}
	payload, n, err := nextFrame(data[len(magic):])
	if err != nil {
		return header{}, 0, fmt.Errorf("%w: %v", errNotJournal, err)
	}
	if len(payload) < 9 || payload[0] != opHeader {
		return header{}, 0, fmt.Errorf("%w: bad header frame", errNotJournal)
	}
	h := header{
		format:  binary.LittleEndian.Uint32(payload[1:]),
		version: binary.LittleEndian.Uint32(payload[5:]),
		kind:    string(payload[9:]),
	}
	return h, len(magic) + n, nil
}

// nextFrame returns the payload of the frame at the start of data and the
// frame's whole length.
func nextFrame(data []byte) (payload []byte, n int, err error) {
	if len(data) < frameHeader {
		return nil, 0, fmt.Errorf("frame header cut short (%d bytes)", len(data))
	}
	length := binary.LittleEndian.Uint32(data)
	sum := binary.LittleEndian.Uint32(data[4:])
	if length == 0 || length > MaxRecord+16 {
		return nil, 0, fmt.Errorf("frame length %d out of range", length)
	}
	if uint64(len(data)-frameHeader) < uint64(length) {
		return nil, 0, fmt.Errorf("frame of %d bytes cut short at %d", length, len(data)-frameHeader)
	}
	payload = data[frameHeader : frameHeader+int(length)]
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, 0, errors.New("checksum mismatch")
	}
	return payload, frameHeader + int(length), nil
}

// decodeOp decodes a record's payload. The Op's Value aliases payload.
func decodeOp(payload []byte) (Op, error) {
	if len(payload) < 2 {
		return Op{}, errors.New("record too short")
	}
	kind := payload[0]
	if kind != opPut && kind != opDelete {
		return Op{}, fmt.Errorf("unknown record type %q", kind)
	}
	keyLen, n := binary.Uvarint(payload[1:])
	if n <= 0 {
		return Op{}, errors.New("bad key length")
	}
	rest := payload[1+n:]
	if keyLen > uint64(len(rest)) {
		return Op{}, fmt.Errorf("key length %d past the record's end", keyLen)
	}
	op := Op{Key: string(rest[:keyLen])}
	if kind == opDelete {
		if int(keyLen) != len(rest) {
			return Op{}, errors.New("delete record with a value")
		}
		op.Delete = true
		return op, nil
	}
	op.Value = rest[keyLen:]
	return op, nil
}

// decodeRecords decodes the records that follow the header, calling fn for
// each, and returns how many bytes of data they take: everything from there
// on is a torn or corrupt tail, and why is the reason (nil if none).
func decodeRecords(data []byte, fn func(Op)) (good int, why error) {
	for good < len(data) {
		payload, n, err := nextFrame(data[good:])
		if err != nil {
			return good, err
		}
		op, err := decodeOp(payload)
		if err != nil {
			return good, err
		}
		fn(op)
		good += n
	}
	return good, nil
}
