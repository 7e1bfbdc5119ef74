package genl

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelMsg builds a netlink message as the kernel sends it.
func kernelMsg(typ, flags uint16, seq, pid uint32, payload []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(payload)+4)
	native.PutUint16(b[4:], typ)
	native.PutUint16(b[6:], flags)
	native.PutUint32(b[8:], seq)
	native.PutUint32(b[12:], pid)
	b = append(b, payload...)
	native.PutUint32(b, uint32(len(b)))
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func attr(typ uint16, v []byte) []byte {
	b := native.AppendUint16(nil, uint16(nlaHdrLen+len(v)))
	b = native.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u16b(v uint16) []byte { return native.AppendUint16(nil, v) }
func u32b(v uint32) []byte { return native.AppendUint32(nil, v) }
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// kernelAddr is a union nf_inet_addr: 16 bytes, IPv4 in the first 4.
func kernelAddr(a netip.Addr) []byte {
	var v [16]byte
	if a.Is4() {
		a4 := a.As4()
		copy(v[:], a4[:])
	} else {
		v = a.As16()
	}
	return v[:]
}

func kernelStats() []byte {
	return attr(10|unix.NLA_F_NESTED, cat(attr(1, u32b(7)), attr(4, native.AppendUint64(nil, 1234))))
}

// kernelServicePayload is a service as ip_vs_genl_fill_service writes it.
func kernelServicePayload(s Service) []byte {
	var inner [][]byte
	inner = append(inner, attr(attrSvcFamily, u16b(s.Family)))
	if s.FWMark != 0 {
		inner = append(inner, attr(attrSvcFWMark, u32b(s.FWMark)))
	} else {
		inner = append(inner,
			attr(attrSvcProtocol, u16b(s.Protocol)),
			attr(attrSvcAddr, kernelAddr(s.Addr)),
			attr(attrSvcPort, binary.BigEndian.AppendUint16(nil, s.Port)))
	}
	inner = append(inner,
		attr(attrSvcSched, append([]byte(s.Sched), 0)),
		attr(attrSvcFlags, cat(u32b(s.Flags|FlagHashed), u32b(0xffffffff))),
		attr(attrSvcTimeout, u32b(s.Timeout)),
		attr(attrSvcNetmask, u32b(s.Netmask)),
		kernelStats())
	return cat([]byte{byte(NewService), genlVersion, 0, 0}, attr(attrCmdService|unix.NLA_F_NESTED, cat(inner...)))
}

// kernelDestPayload is a real server as ip_vs_genl_fill_dest writes it.
func kernelDestPayload(d Dest) []byte {
	inner := cat(
		attr(attrDestAddr, kernelAddr(d.Addr)),
		attr(attrDestPort, binary.BigEndian.AppendUint16(nil, d.Port)),
		attr(attrDestFwdMethod, u32b(d.FwdMethod)),
		attr(attrDestWeight, u32b(d.Weight)),
		attr(13, []byte{0}), attr(14, u16b(0)), attr(15, u16b(0)), // tunnel type, port, flags
		attr(attrDestUThresh, u32b(d.UThresh)),
		attr(attrDestLThresh, u32b(d.LThresh)),
		attr(attrDestActiveConns, u32b(d.ActiveConns)),
		attr(attrDestInactConns, u32b(d.InactConns)),
		attr(9, u32b(0)), // persistent connections
		kernelStats(),
		attr(attrDestFamily, u16b(d.Family)))
	return cat([]byte{byte(NewDest), genlVersion, 0, 0}, attr(attrCmdDest|unix.NLA_F_NESTED, inner))
}

func errCode(e unix.Errno) []byte { return u32b(uint32(-int32(e))) }

func ackMsg(seq, pid uint32, errno unix.Errno, msg string) []byte {
	flags := uint16(unix.NLM_F_CAPPED)
	payload := cat(errCode(errno), make([]byte, nlmsgHdrLen))
	if msg != "" {
		flags |= unix.NLM_F_ACK_TLVS
		payload = cat(payload, attr(unix.NLMSGERR_ATTR_MSG, append([]byte(msg), 0)))
	}
	return kernelMsg(unix.NLMSG_ERROR, flags, seq, pid, payload)
}

func TestDecodeKernelReplies(t *testing.T) {
	v4 := Service{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, Addr: netip.MustParseAddr("11.0.0.1"), Port: 8080,
		Sched: "wlc", Flags: FlagPersistent, Timeout: 300, Netmask: 0xffffff00}
	v6 := Service{Family: unix.AF_INET6, Protocol: unix.IPPROTO_UDP, Addr: netip.MustParseAddr("fd01:c::1"), Port: 53,
		Sched: "sh", Flags: FlagSched1 | FlagSched2, Netmask: 128}
	fwm := Service{Family: unix.AF_INET, FWMark: 42, Sched: "rr", Netmask: 0xffffffff}
	for _, tc := range []struct {
		name string
		svc  Service
	}{{"ipv4 persistent", v4}, {"ipv6 scheduler flags", v6}, {"firewall mark", fwm}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeService(kernelServicePayload(tc.svc))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.svc {
				t.Errorf("decoded %+v, want %+v (FlagHashed must be stripped)", got, tc.svc)
			}
		})
	}
	d := Dest{Addr: netip.MustParseAddr("10.1.1.2"), Port: 80, Family: unix.AF_INET, FwdMethod: FwdMasq, Weight: 70000,
		UThresh: 10, LThresh: 2, ActiveConns: 3, InactConns: 4}
	got, err := decodeDest(kernelDestPayload(d), unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	d.Stats = Stats{Conns: 7, InBytes: 1234} // kernelStats
	if got != d {
		t.Errorf("decoded %+v, want %+v (weight is 32 bits)", got, d)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good := kernelServicePayload(Service{Family: unix.AF_INET, Protocol: 6, Addr: netip.MustParseAddr("1.2.3.4"), Port: 1, Sched: "rr"})
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"no service attribute", []byte{1, 1, 0, 0}},
		{"attribute longer than message", good[:len(good)-8]},
		{"bad family", cat([]byte{1, 1, 0, 0}, attr(attrCmdService, cat(attr(attrSvcFamily, u16b(99)), attr(attrSvcFWMark, u32b(1)))))},
		{"short address", cat([]byte{1, 1, 0, 0}, attr(attrCmdService, cat(attr(attrSvcFamily, u16b(unix.AF_INET6)), attr(attrSvcAddr, []byte{1, 2, 3, 4}))))},
		{"neither address nor mark", cat([]byte{1, 1, 0, 0}, attr(attrCmdService, attr(attrSvcFamily, u16b(unix.AF_INET))))},
		{"port of 4 bytes", cat([]byte{1, 1, 0, 0}, attr(attrCmdService, cat(attr(attrSvcFamily, u16b(unix.AF_INET)), attr(attrSvcFWMark, u32b(1)), attr(attrSvcPort, u32b(1)))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := decodeService(tc.payload); err == nil {
				t.Errorf("decoded %+v from a malformed message", s)
			}
		})
	}
}

func TestDecodeAck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		msg     []byte
		errno   unix.Errno
		message string
	}{
		{"success", ackMsg(1, 1, 0, ""), 0, ""},
		{"errno", ackMsg(1, 1, unix.EEXIST, ""), unix.EEXIST, ""},
		{"errno with extended ack", ackMsg(1, 1, unix.EINVAL, "bad scheduler"), unix.EINVAL, "bad scheduler"},
		{"uncapped with extended ack", kernelMsg(unix.NLMSG_ERROR, unix.NLM_F_ACK_TLVS, 1, 1,
			cat(errCode(unix.ESRCH), kernelMsg(30, 0, 1, 1, []byte{5, 1, 0, 0, 1, 2, 3, 4}), attr(unix.NLMSGERR_ATTR_MSG, []byte("gone\x00")))),
			unix.ESRCH, "gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *kernelError
			err := forEachMsg(tc.msg, func(m nlMsg) error {
				var err error
				got, err = decodeAck(m)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if tc.errno == 0 {
				if got != nil {
					t.Fatalf("success decoded as %v", got)
				}
				return
			}
			if got == nil || got.Errno != tc.errno || got.Msg != tc.message {
				t.Fatalf("decoded %+v, want errno %v message %q", got, tc.errno, tc.message)
			}
			if wrapped := error(got); !errors.Is(wrapped, tc.errno) {
				t.Errorf("errors.Is(%v, %v) is false", wrapped, tc.errno)
			}
		})
	}
}

// randomService draws a valid service: either family, a mark or an
// address, any flags.
func randomService(r *rand.Rand) Service {
	s := Service{Sched: []string{"rr", "wlc", "sh", "mh", ""}[r.IntN(5)], Flags: r.Uint32(), Timeout: r.Uint32(), Netmask: r.Uint32() % 3}
	if r.IntN(2) == 0 {
		var a [4]byte
		binary.NativeEndian.PutUint32(a[:], r.Uint32())
		s.Addr = netip.AddrFrom4(a)
		if r.IntN(4) == 0 {
			s.Addr = netip.AddrFrom16(s.Addr.As16()) // v4-mapped: sent as IPv4
		}
	} else {
		var a [16]byte
		for i := range a {
			a[i] = byte(r.Uint32())
		}
		s.Addr = netip.AddrFrom16(a)
	}
	// Mostly derived, sometimes stated, sometimes wrong.
	s.Family = []uint16{0, 0, unix.AF_INET, unix.AF_INET6, 0}[r.IntN(5)]
	if r.IntN(5) == 0 {
		s.FWMark = r.Uint32() | 1
	}
	s.Protocol = uint16(r.Uint32())
	s.Port = uint16(r.Uint32())
	return s
}

func randomDest(r *rand.Rand) Dest {
	s := randomService(r)
	return Dest{Addr: s.Addr, Family: s.Family, Port: s.Port, FwdMethod: r.Uint32(), Weight: r.Uint32(), UThresh: r.Uint32(), LThresh: r.Uint32(), ActiveConns: r.Uint32()}
}

// The property the reconciler relies on: what a command carries decodes to
// its normal form, whatever the input.
func TestEncodeDecodeRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cmds := []Cmd{NewService, SetService, DelService, NewDest, SetDest, DelDest}
	checked := 0
	defer func() {
		if checked < 5000 {
			t.Errorf("only %d of 20000 random commands were valid: the generator is too narrow", checked)
		}
	}()
	for i := range 20000 {
		op := Op{Cmd: cmds[i%len(cmds)], Service: randomService(r), Dest: randomDest(r)}
		b, err := appendOp(nil, 0x20, unix.NLM_F_REQUEST, 9, op)
		wantSvc, svcErr := op.Service.Normalize()
		if svcErr != nil {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("op %+v: Normalize fails (%v) but appendOp gave %v", op, svcErr, err)
			}
			continue
		}
		if err != nil {
			if _, derr := op.Dest.Normalize(); derr == nil || !op.Cmd.hasDest() {
				t.Fatalf("op %+v: appendOp: %v", op, err)
			}
			continue
		}
		var m nlMsg
		if err := forEachMsg(b, func(x nlMsg) error { m = x; return nil }); err != nil {
			t.Fatal(err)
		}
		if m.seq != 9 || m.typ != 0x20 || int(native.Uint32(b)) != len(b) || len(b)%4 != 0 {
			t.Fatalf("header: %+v, len %d", m, len(b))
		}
		checked++
		gotSvc, err := decodeService(m.data)
		if err != nil {
			t.Fatalf("op %+v: decode service: %v", op, err)
		}
		if op.Cmd != NewService && op.Cmd != SetService {
			// Only the identity is sent.
			wantSvc = Service{Family: wantSvc.Family, Protocol: wantSvc.Protocol, Addr: wantSvc.Addr, Port: wantSvc.Port, FWMark: wantSvc.FWMark}
		}
		if gotSvc != wantSvc {
			t.Fatalf("op %v: service decoded %+v, want %+v", op.Cmd, gotSvc, wantSvc)
		}
		if !op.Cmd.hasDest() {
			continue
		}
		wantDest, _ := op.Dest.Normalize()
		if op.Cmd == DelDest {
			wantDest = Dest{Addr: wantDest.Addr, Port: wantDest.Port, Family: wantDest.Family}
		}
		gotDest, err := decodeDest(m.data, 0)
		if err != nil {
			t.Fatalf("op %+v: decode real server: %v", op, err)
		}
		if gotDest != wantDest {
			t.Fatalf("op %v: real server decoded %+v, want %+v", op.Cmd, gotDest, wantDest)
		}
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Service
		want Service
		ok   bool
	}{
		{"family and mask from an IPv4 address", Service{Protocol: 6, Addr: netip.MustParseAddr("11.0.0.1"), Port: 80},
			Service{Family: unix.AF_INET, Protocol: 6, Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Netmask: 0xffffffff}, true},
		{"v4-mapped unmapped", Service{Family: unix.AF_INET, Addr: netip.MustParseAddr("::ffff:11.0.0.1")},
			Service{Family: unix.AF_INET, Addr: netip.MustParseAddr("11.0.0.1"), Netmask: 0xffffffff}, true},
		{"IPv6 prefix", Service{Addr: netip.MustParseAddr("fd01:c::1"), Flags: FlagHashed | FlagPersistent},
			Service{Family: unix.AF_INET6, Addr: netip.MustParseAddr("fd01:c::1"), Netmask: 128, Flags: FlagPersistent}, true},
		{"firewall mark drops the address", Service{Family: unix.AF_INET, FWMark: 3, Protocol: 6, Addr: netip.MustParseAddr("1.1.1.1"), Port: 9},
			Service{Family: unix.AF_INET, FWMark: 3, Netmask: 0xffffffff}, true},
		{"IPv6 address in an IPv4 service", Service{Family: unix.AF_INET, Addr: netip.MustParseAddr("fd01:c::1")}, Service{}, false},
		{"no address", Service{Protocol: 6, Port: 80}, Service{}, false},
		{"mark without family", Service{FWMark: 1}, Service{}, false},
		{"zoned IPv6", Service{Addr: netip.MustParseAddr("fe80::1%eth0")}, Service{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.Normalize()
			if (err == nil) != tc.ok {
				t.Fatalf("Normalize(%+v) error %v, want ok=%v", tc.in, err, tc.ok)
			}
			if tc.ok && got != tc.want {
				t.Errorf("Normalize(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestBatchAnswersAttributeBySequence(t *testing.T) {
	const pid, first = 77, 1000
	for _, tc := range []struct {
		name     string
		datagram [][]byte
		wantErr  map[int]unix.Errno
		done     bool
	}{
		{"only the last acknowledged", [][]byte{ackMsg(first+3, pid, 0, "")}, nil, true},
		{"failure at k, then the final ack", [][]byte{cat(ackMsg(first+1, pid, unix.EEXIST, ""), ackMsg(first+3, pid, 0, ""))}, map[int]unix.Errno{1: unix.EEXIST}, true},
		{"failures over several datagrams", [][]byte{ackMsg(first, pid, unix.ESRCH, ""), ackMsg(first+2, pid, unix.ENOENT, ""), ackMsg(first+3, pid, unix.EINVAL, "")},
			map[int]unix.Errno{0: unix.ESRCH, 2: unix.ENOENT, 3: unix.EINVAL}, true},
		{"stale sequence and foreign port ignored", [][]byte{cat(ackMsg(first-1, pid, unix.EEXIST, ""), ackMsg(first+4, pid, unix.EEXIST, ""), ackMsg(first+2, pid+1, unix.EEXIST, ""))}, nil, false},
		{"not finished before the last", [][]byte{ackMsg(first+2, pid, unix.EEXIST, "")}, map[int]unix.Errno{2: unix.EEXIST}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newBatchAnswers(pid, first, 4)
			for _, d := range tc.datagram {
				if err := a.consume(d); err != nil {
					t.Fatal(err)
				}
			}
			if a.done != tc.done {
				t.Errorf("done = %v, want %v", a.done, tc.done)
			}
			for i, err := range a.errs {
				want, failed := tc.wantErr[i]
				if failed != (err != nil) || failed && !errors.Is(err, want) {
					t.Errorf("command %d: %v, want %v", i, err, want)
				}
			}
		})
	}
}

func TestBatchAnswersAcrossSequenceWrap(t *testing.T) {
	a := newBatchAnswers(1, 0xfffffffe, 4) // sequences fffffffe, ffffffff, 0, 1
	if err := a.consume(cat(ackMsg(0, 1, unix.EEXIST, ""), ackMsg(1, 1, 0, ""))); err != nil {
		t.Fatal(err)
	}
	if !a.done || !errors.Is(a.errs[2], unix.EEXIST) || a.errs[0] != nil || a.errs[1] != nil {
		t.Errorf("done %v, errs %v", a.done, a.errs)
	}
}

func TestDumpAnswers(t *testing.T) {
	const pid, seq, fam = 5, 9, 0x22
	svc := Service{Family: unix.AF_INET, Protocol: 6, Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Sched: "rr", Netmask: 0xffffffff}
	d := &dumpAnswers{pid: pid, seq: seq, family: fam}
	dg := cat(kernelMsg(fam, unix.NLM_F_MULTI, seq, pid, kernelServicePayload(svc)),
		kernelMsg(fam, unix.NLM_F_MULTI, seq-1, pid, kernelServicePayload(svc))) // stale: ignored
	if err := d.consume(dg); err != nil {
		t.Fatal(err)
	}
	if d.done {
		t.Fatal("done before NLMSG_DONE")
	}
	if err := d.consume(kernelMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR, seq, pid, u32b(0))); err != nil {
		t.Fatal(err)
	}
	if !d.done || d.err != nil || !d.interrupted || !reflect.DeepEqual(d.services, []Service{svc}) {
		t.Errorf("got done %v err %v interrupted %v services %+v", d.done, d.err, d.interrupted, d.services)
	}
	e := &dumpAnswers{pid: pid, seq: seq, family: fam, dests: true}
	if err := e.consume(ackMsg(seq, pid, unix.EINVAL, "")); err != nil {
		t.Fatal(err)
	}
	if !e.done || !errors.Is(e.err, unix.EINVAL) {
		t.Errorf("error answer: done %v err %v", e.done, e.err)
	}
}

func TestForEachMsgRejectsBadLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"length below header", cat(u32b(8), make([]byte, 12))},
		{"length beyond datagram", cat(u32b(64), make([]byte, 12))},
		{"stray bytes", cat(kernelMsg(3, 0, 1, 1, nil), []byte{1, 2})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := forEachMsg(tc.b, func(nlMsg) error { return nil }); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestIPv4Netmask(t *testing.T) {
	for _, tc := range []struct {
		bits int
		want [4]byte
	}{{32, [4]byte{255, 255, 255, 255}}, {24, [4]byte{255, 255, 255, 0}}, {1, [4]byte{128, 0, 0, 0}}, {0, [4]byte{}}} {
		var got [4]byte
		native.PutUint32(got[:], IPv4Netmask(tc.bits))
		if got != tc.want {
			t.Errorf("IPv4Netmask(%d) in memory = %v, want %v", tc.bits, got, tc.want)
		}
	}
}
