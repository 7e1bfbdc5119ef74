package genl

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The IPVS generic-netlink wire format, from the kernel's
// include/uapi/linux/ip_vs.h. Numbers are host byte order except ports,
// which are network byte order.

const genlVersion = 1 // IPVS_GENL_VERSION

// Top-level attributes of an IPVS command (IPVS_CMD_ATTR_*).
const (
	attrCmdService = 1
	attrCmdDest    = 2
)

// Service attributes (IPVS_SVC_ATTR_*).
const (
	attrSvcFamily   = 1
	attrSvcProtocol = 2
	attrSvcAddr     = 3
	attrSvcPort     = 4
	attrSvcFWMark   = 5
	attrSvcSched    = 6
	attrSvcFlags    = 7
	attrSvcTimeout  = 8
	attrSvcNetmask  = 9
)

// Real-server attributes (IPVS_DEST_ATTR_*).
const (
	attrDestAddr        = 1
	attrDestPort        = 2
	attrDestFwdMethod   = 3
	attrDestWeight      = 4
	attrDestUThresh     = 5
	attrDestLThresh     = 6
	attrDestActiveConns = 7
	attrDestInactConns  = 8
	attrDestFamily      = 11
)

// Generic-netlink controller attributes, for resolving the family.
const (
	attrCtrlFamilyID   = unix.CTRL_ATTR_FAMILY_ID
	attrCtrlFamilyName = unix.CTRL_ATTR_FAMILY_NAME
)

const (
	nlmsgHdrLen = unix.SizeofNlMsghdr // 16
	genlHdrLen  = 4
	nlaHdrLen   = 4
	nlaTypeMask = 0x3fff // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

var native = binary.NativeEndian

func align4(n int) int { return (n + 3) &^ 3 }

// Normalize returns s as the kernel stores it once this client has sent it:
// Family taken from Addr when zero, an IPv4 address unmapped, Netmask
// defaulted to the full mask, no address, protocol or port for a
// firewall-mark service, and FlagHashed cleared. Services returns services in
// this form, so a caller can compare what it wants with what it reads.
func (s Service) Normalize() (Service, error) {
	if s.Family == 0 && s.Addr.IsValid() {
		if s.Addr.Unmap().Is4() {
			s.Family = unix.AF_INET
		} else {
			s.Family = unix.AF_INET6
		}
	}
	switch s.Family {
	case unix.AF_INET:
		if s.Netmask == 0 {
			s.Netmask = 0xffffffff
		}
	case unix.AF_INET6:
		if s.Netmask == 0 {
			s.Netmask = 128
		}
	default:
		return s, fmt.Errorf("%w: service %s has address family %d, want AF_INET or AF_INET6", ErrInvalid, s, s.Family)
	}
	s.Flags &^= FlagHashed
	if s.FWMark != 0 {
		s.Addr, s.Protocol, s.Port = netip.Addr{}, 0, 0
		return s, nil
	}
	addr, err := familyAddr(s.Family, s.Addr)
	if err != nil {
		return s, fmt.Errorf("%w: service %s: %v", ErrInvalid, s, err)
	}
	s.Addr = addr
	return s, nil
}

// Normalize returns d as the kernel stores it once this client has sent it:
// Family taken from Addr when zero, an IPv4 address unmapped, only the
// forwarding method kept of FwdMethod, and the read-only counters zero.
func (d Dest) Normalize() (Dest, error) {
	if d.Family == 0 && d.Addr.IsValid() {
		if d.Addr.Unmap().Is4() {
			d.Family = unix.AF_INET
		} else {
			d.Family = unix.AF_INET6
		}
	}
	addr, err := familyAddr(d.Family, d.Addr)
	if err != nil {
		return d, fmt.Errorf("%w: real server %s: %v", ErrInvalid, d, err)
	}
	d.Addr = addr
	d.FwdMethod &= fwdMask
	d.ActiveConns, d.InactConns, d.Stats = 0, 0, Stats{}
	return d, nil
}

func familyAddr(family uint16, a netip.Addr) (netip.Addr, error) {
	switch family {
	case unix.AF_INET:
		if u := a.Unmap(); u.Is4() {
			return u, nil
		}
		return a, fmt.Errorf("address %v is not IPv4", a)
	case unix.AF_INET6:
		if a.Is6() && a.Zone() == "" {
			return a, nil
		}
		return a, fmt.Errorf("address %v is not IPv6 without zone", a)
	}
	return a, fmt.Errorf("address family %d is not AF_INET or AF_INET6", family)
}

// appendOp appends op as one netlink message to b. On error b is returned
// unchanged and nothing is appended.
func appendOp(b []byte, family, flags uint16, seq uint32, op Op) ([]byte, error) {
	switch op.Cmd {
	case NewService, SetService, DelService, NewDest, SetDest, DelDest:
	default:
		return b, fmt.Errorf("%w: unknown command %d", ErrInvalid, uint8(op.Cmd))
	}
	svc, err := op.Service.Normalize()
	if err != nil {
		return b, err
	}
	var dest Dest
	if op.Cmd.hasDest() {
		if dest, err = op.Dest.Normalize(); err != nil {
			return b, err
		}
	}
	start := len(b)
	b = appendMsgHeader(b, family, flags, seq, op.Cmd)
	b = appendServiceAttr(b, svc, op.Cmd == NewService || op.Cmd == SetService)
	if op.Cmd.hasDest() {
		b = appendDestAttr(b, dest, op.Cmd != DelDest)
	}
	finishMsg(b, start)
	return b, nil
}

// appendMsgHeader appends a netlink header (length left for finishMsg) and
// a generic-netlink header.
func appendMsgHeader(b []byte, family, flags uint16, seq uint32, cmd Cmd) []byte {
	var h [nlmsgHdrLen + genlHdrLen]byte
	native.PutUint16(h[4:], family)
	native.PutUint16(h[6:], flags)
	native.PutUint32(h[8:], seq)
	h[16] = byte(cmd)
	h[17] = genlVersion
	return append(b, h[:]...)
}

func finishMsg(b []byte, start int) { native.PutUint32(b[start:], uint32(len(b)-start)) }

func appendServiceAttr(b []byte, s Service, full bool) []byte {
	nest := len(b)
	b = appendAttrHeader(b, attrCmdService)
	b = appendU16Attr(b, attrSvcFamily, s.Family)
	if s.FWMark != 0 {
		b = appendU32Attr(b, attrSvcFWMark, s.FWMark)
	} else {
		b = appendU16Attr(b, attrSvcProtocol, s.Protocol)
		b = appendAddrAttr(b, attrSvcAddr, s.Family, s.Addr)
		b = appendPortAttr(b, attrSvcPort, s.Port)
	}
	if full {
		b = appendStringAttr(b, attrSvcSched, s.Sched)
		// struct ip_vs_flags { __u32 flags; __u32 mask; }: set every bit.
		at := len(b)
		b = appendAttrHeader(b, attrSvcFlags)
		b = native.AppendUint32(b, s.Flags)
		b = native.AppendUint32(b, 0xffffffff)
		b = finishAttr(b, at)
		b = appendU32Attr(b, attrSvcTimeout, s.Timeout)
		b = appendU32Attr(b, attrSvcNetmask, s.Netmask)
	}
	return finishAttr(b, nest)
}

func appendDestAttr(b []byte, d Dest, full bool) []byte {
	nest := len(b)
	b = appendAttrHeader(b, attrCmdDest)
	b = appendAddrAttr(b, attrDestAddr, d.Family, d.Addr)
	b = appendPortAttr(b, attrDestPort, d.Port)
	if full {
		b = appendU32Attr(b, attrDestFwdMethod, d.FwdMethod)
		b = appendU32Attr(b, attrDestWeight, d.Weight)
		b = appendU32Attr(b, attrDestUThresh, d.UThresh)
		b = appendU32Attr(b, attrDestLThresh, d.LThresh)
	}
	b = appendU16Attr(b, attrDestFamily, d.Family)
	return finishAttr(b, nest)
}

func appendAttrHeader(b []byte, typ uint16) []byte {
	b = native.AppendUint16(b, 0)
	return native.AppendUint16(b, typ)
}

// finishAttr writes the length of the attribute that starts at start and
// pads it to 4 bytes.
func finishAttr(b []byte, start int) []byte {
	native.PutUint16(b[start:], uint16(len(b)-start))
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func appendU16Attr(b []byte, typ, v uint16) []byte {
	b = native.AppendUint16(b, nlaHdrLen+2)
	b = native.AppendUint16(b, typ)
	b = native.AppendUint16(b, v)
	return append(b, 0, 0)
}

func appendU32Attr(b []byte, typ uint16, v uint32) []byte {
	b = native.AppendUint16(b, nlaHdrLen+4)
	b = native.AppendUint16(b, typ)
	return native.AppendUint32(b, v)
}

func appendPortAttr(b []byte, typ, port uint16) []byte {
	b = native.AppendUint16(b, nlaHdrLen+2)
	b = native.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, 0, 0)
}

func appendAddrAttr(b []byte, typ, family uint16, a netip.Addr) []byte {
	if family == unix.AF_INET {
		v := a.As4()
		b = native.AppendUint16(b, nlaHdrLen+4)
		b = native.AppendUint16(b, typ)
		return append(b, v[:]...)
	}
	v := a.As16()
	b = native.AppendUint16(b, nlaHdrLen+16)
	b = native.AppendUint16(b, typ)
	return append(b, v[:]...)
}

func appendStringAttr(b []byte, typ uint16, s string) []byte {
	at := len(b)
	b = appendAttrHeader(b, typ)
	b = append(b, s...)
	b = append(b, 0)
	native.PutUint16(b[at:], uint16(len(b)-at))
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nlMsg is one netlink message of a datagram; data follows the header.
type nlMsg struct {
	typ, flags uint16
	seq, pid   uint32
	data       []byte
}

// forEachMsg calls fn for each netlink message of a received datagram.
func forEachMsg(b []byte, fn func(m nlMsg) error) error {
	for len(b) >= nlmsgHdrLen {
		l := int(native.Uint32(b))
		if l < nlmsgHdrLen || l > len(b) {
			return fmt.Errorf("netlink message length %d outside 16..%d", l, len(b))
		}
		m := nlMsg{
			typ:   native.Uint16(b[4:]),
			flags: native.Uint16(b[6:]),
			seq:   native.Uint32(b[8:]),
			pid:   native.Uint32(b[12:]),
			data:  b[nlmsgHdrLen:l],
		}
		if err := fn(m); err != nil {
			return err
		}
		b = b[min(align4(l), len(b)):]
	}
	if len(b) != 0 {
		return fmt.Errorf("%d stray bytes after the last netlink message", len(b))
	}
	return nil
}

// forEachAttr calls fn for each attribute in b, with the type's flag bits
// stripped.
func forEachAttr(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= nlaHdrLen {
		l := int(native.Uint16(b))
		if l < nlaHdrLen || l > len(b) {
			return fmt.Errorf("attribute length %d outside 4..%d", l, len(b))
		}
		if err := fn(native.Uint16(b[2:])&nlaTypeMask, b[nlaHdrLen:l]); err != nil {
			return err
		}
		b = b[min(align4(l), len(b)):]
	}
	return nil
}

// nestedAttr returns the value of the first top-level attribute typ of a
// generic-netlink message's payload (after the genl header).
func nestedAttr(genlPayload []byte, typ uint16) ([]byte, error) {
	if len(genlPayload) < genlHdrLen {
		return nil, fmt.Errorf("generic-netlink message of %d bytes has no header", len(genlPayload))
	}
	var found []byte
	err := forEachAttr(genlPayload[genlHdrLen:], func(t uint16, v []byte) error {
		if t == typ && found == nil {
			found = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("no attribute %d in the message", typ)
	}
	return found, nil
}

func u16Of(name string, v []byte) (uint16, error) {
	if len(v) != 2 {
		return 0, fmt.Errorf("%s: %d bytes, want 2", name, len(v))
	}
	return native.Uint16(v), nil
}

func u32Of(name string, v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("%s: %d bytes, want 4", name, len(v))
	}
	return native.Uint32(v), nil
}

func portOf(name string, v []byte) (uint16, error) {
	if len(v) != 2 {
		return 0, fmt.Errorf("%s: %d bytes, want 2", name, len(v))
	}
	return binary.BigEndian.Uint16(v), nil
}

// addrOf decodes an address attribute: the kernel sends a 16-byte union
// nf_inet_addr whose first 4 bytes are the IPv4 address; requests carry 4.
func addrOf(family uint16, v []byte) (netip.Addr, error) {
	switch {
	case family == unix.AF_INET && (len(v) == 4 || len(v) == 16):
		return netip.AddrFrom4([4]byte(v[:4])), nil
	case family == unix.AF_INET6 && len(v) == 16:
		return netip.AddrFrom16([16]byte(v)), nil
	}
	return netip.Addr{}, fmt.Errorf("address of %d bytes for family %d", len(v), family)
}

func stringOf(v []byte) string {
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}

// decodeService decodes the service of a generic-netlink message (a reply
// to IPVS_CMD_GET_SERVICE, or a request).
func decodeService(genlPayload []byte) (Service, error) {
	var s Service
	nest, err := nestedAttr(genlPayload, attrCmdService)
	if err != nil {
		return s, fmt.Errorf("service: %w", err)
	}
	var addr []byte
	err = forEachAttr(nest, func(typ uint16, v []byte) error {
		var err error
		switch typ {
		case attrSvcFamily:
			s.Family, err = u16Of("address family", v)
		case attrSvcProtocol:
			s.Protocol, err = u16Of("protocol", v)
		case attrSvcAddr:
			addr = v
		case attrSvcPort:
			s.Port, err = portOf("port", v)
		case attrSvcFWMark:
			s.FWMark, err = u32Of("firewall mark", v)
		case attrSvcSched:
			s.Sched = stringOf(v)
		case attrSvcFlags:
			if len(v) != 8 {
				return fmt.Errorf("flags: %d bytes, want 8", len(v))
			}
			s.Flags = native.Uint32(v) &^ FlagHashed
		case attrSvcTimeout:
			s.Timeout, err = u32Of("timeout", v)
		case attrSvcNetmask:
			s.Netmask, err = u32Of("netmask", v)
		}
		return err
	})
	if err != nil {
		return s, fmt.Errorf("service: %w", err)
	}
	if s.Family != unix.AF_INET && s.Family != unix.AF_INET6 {
		return s, fmt.Errorf("service: address family %d", s.Family)
	}
	if s.FWMark != 0 {
		s.Addr, s.Protocol, s.Port = netip.Addr{}, 0, 0
		return s, nil
	}
	if addr == nil {
		return s, fmt.Errorf("service: neither an address nor a firewall mark")
	}
	if s.Addr, err = addrOf(s.Family, addr); err != nil {
		return s, fmt.Errorf("service: %w", err)
	}
	return s, nil
}

// decodeDest decodes the real server of a generic-netlink message (a reply
// to IPVS_CMD_GET_DEST, or a request). svcFamily is the family when the
// kernel is too old to send the real server's own.
func decodeDest(genlPayload []byte, svcFamily uint16) (Dest, error) {
	var d Dest
	nest, err := nestedAttr(genlPayload, attrCmdDest)
	if err != nil {
		return d, fmt.Errorf("real server: %w", err)
	}
	var addr []byte
	wide := false
	err = forEachAttr(nest, func(typ uint16, v []byte) error {
		var err error
		switch typ {
		case attrDestStats64:
			d.Stats, err = decodeStats(v)
			wide = true
		case attrDestStats:
			if !wide {
				d.Stats, err = decodeStats(v)
			}
		case attrDestAddr:
			addr = v
		case attrDestPort:
			d.Port, err = portOf("port", v)
		case attrDestFwdMethod:
			d.FwdMethod, err = u32Of("forwarding method", v)
			d.FwdMethod &= fwdMask
		case attrDestWeight:
			d.Weight, err = u32Of("weight", v)
		case attrDestUThresh:
			d.UThresh, err = u32Of("upper threshold", v)
		case attrDestLThresh:
			d.LThresh, err = u32Of("lower threshold", v)
		case attrDestActiveConns:
			d.ActiveConns, err = u32Of("active connections", v)
		case attrDestInactConns:
			d.InactConns, err = u32Of("inactive connections", v)
		case attrDestFamily:
			d.Family, err = u16Of("address family", v)
		}
		return err
	})
	if err != nil {
		return d, fmt.Errorf("real server: %w", err)
	}
	if d.Family == 0 {
		d.Family = svcFamily
	}
	if addr == nil {
		return d, fmt.Errorf("real server: no address")
	}
	if d.Addr, err = addrOf(d.Family, addr); err != nil {
		return d, fmt.Errorf("real server: %w", err)
	}
	return d, nil
}

// decodeFamilyID reads the family id from the controller's reply.
func decodeFamilyID(genlPayload []byte) (uint16, error) {
	if len(genlPayload) < genlHdrLen {
		return 0, fmt.Errorf("controller reply of %d bytes", len(genlPayload))
	}
	var id uint16
	err := forEachAttr(genlPayload[genlHdrLen:], func(typ uint16, v []byte) error {
		if typ != attrCtrlFamilyID {
			return nil
		}
		var err error
		id, err = u16Of("family id", v)
		return err
	})
	if err != nil {
		return 0, err
	}
	if id == 0 {
		return 0, fmt.Errorf("controller reply without a family id")
	}
	return id, nil
}

// kernelError is the kernel's answer to a failed command: its errno and the
// extended-ack message, if it sent one.
type kernelError struct {
	Errno unix.Errno
	Msg   string
}

func (e *kernelError) Error() string {
	if e.Msg != "" {
		return e.Errno.Error() + " (" + e.Msg + ")"
	}
	return e.Errno.Error()
}

func (e *kernelError) Unwrap() error { return e.Errno }

// decodeAck decodes an NLMSG_ERROR message: nil for an acknowledgement,
// the kernel's error for a failure; err when the message is malformed.
func decodeAck(m nlMsg) (kerr *kernelError, err error) {
	if len(m.data) < 4 {
		return nil, fmt.Errorf("acknowledgement of %d bytes", len(m.data))
	}
	code := int32(native.Uint32(m.data))
	if code == 0 {
		return nil, nil
	}
	if code > 0 || code < -4095 {
		return nil, fmt.Errorf("acknowledgement with error code %d", code)
	}
	ke := &kernelError{Errno: unix.Errno(-code)}
	if m.flags&unix.NLM_F_ACK_TLVS != 0 {
		// The TLVs follow struct nlmsgerr: the code, then the request's
		// header (capped) or the whole request.
		off := 4 + nlmsgHdrLen
		if m.flags&unix.NLM_F_CAPPED == 0 && len(m.data) >= 4+nlmsgHdrLen {
			off = 4 + align4(int(native.Uint32(m.data[4:])))
		}
		if off <= len(m.data) {
			_ = forEachAttr(m.data[off:], func(typ uint16, v []byte) error {
				if typ == unix.NLMSGERR_ATTR_MSG {
					ke.Msg = stringOf(v)
				}
				return nil
			})
		}
	}
	return ke, nil
}
