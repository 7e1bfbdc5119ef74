package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

// The table's own objects.
const (
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPostrouting = "postrouting"
	mapServices4     = "services4"
	mapServices6     = "services6"
)

// NAT priorities: dstnat and srcnat, as nft names them.
const (
	priorityDstNAT = -100
	prioritySrcNAT = 100
)

// Registers. 128-bit registers 1 to 4 are 32-bit registers 8 to 23: the
// backend (address . port) is loaded into register 1, its port in 32-bit
// register 9 (IPv4) or 12 (IPv6); the client address goes to register 3
// and the mark arithmetic to register 4.
const (
	regBackend  = unix.NFT_REG_1
	regPort4    = unix.NFT_REG32_01
	regPort6    = unix.NFT_REG32_04
	regClient   = unix.NFT_REG_3
	regMark     = unix.NFT_REG_4
	regVerdict  = unix.NFT_REG_VERDICT
	regKeyProto = unix.NFT_REG32_01 // services4 key: address in reg 1, protocol after it
	regKeyPort  = unix.NFT_REG32_02
)

// Mode is how a service's chain picks a backend for a new connection.
type Mode string

// The modes.
const (
	RoundRobin Mode = "inc"    // numgen inc: weighted round robin over slots
	Random     Mode = "random" // numgen random: weighted random over slots
	SourceHash Mode = "jhash"  // jhash of the client address over slots
)

// modeOf maps a VIP's scheduler to a mode, and whether weights count
// (false: every backend taking new connections gets one slot). Schedulers
// without an nf_tables equivalent are refused with a reason.
func modeOf(scheduler string) (Mode, bool, error) {
	switch scheduler {
	case "", "wlc", "lc", "wrr", "sed", "nq":
		return RoundRobin, true, nil
	case "rr":
		return RoundRobin, false, nil
	case "random":
		return Random, true, nil
	case "sh", "mh":
		return SourceHash, true, nil
	}
	return "", false, fmt.Errorf("scheduler %q has no nftables equivalent (supported: rr wrr lc wlc sed nq -> round robin, sh mh -> jhash of the client address, random)", scheduler)
}

// maxSlots bounds a service's slot map: larger weight sums are scaled down.
const maxSlots = 256

// slotCounts returns how many slots each backend taking new connections
// gets: its weight divided by the greatest common divisor of the weights
// (1 each when weights do not count), scaled to at most maxSlots in all.
// Backends of the other address family are left out (NAT cannot mix them).
func slotCounts(v *vip.VIP, weighted bool) map[netip.AddrPort]int {
	out := make(map[netip.AddrPort]int, len(v.Backends))
	g := uint32(0)
	for _, b := range v.Backends {
		if b.Weight == 0 || b.Addr.Addr().Is4() != v.Addr.Is4() {
			continue
		}
		g = gcd(g, b.Weight)
	}
	total := 0
	for _, b := range v.Backends {
		if b.Weight == 0 || b.Addr.Addr().Is4() != v.Addr.Is4() {
			continue
		}
		n := 1
		if weighted {
			n = int(b.Weight / g)
		}
		out[b.Addr] += n
		total += n
	}
	if total > maxSlots {
		for a, n := range out {
			out[a] = max(1, n*maxSlots/total)
		}
	}
	return out
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// names are the kernel names of one service's objects.
type names struct {
	chain, slots, aff, live string
}

// nameOf builds the names from the service key: "svc-tcp-11.0.0.1-80",
// "slots-tcp-11.0.0.1-80"... IPv6 colons become underscores, since nft's
// grammar does not take them in names.
func nameOf(k vip.ServiceKey) names {
	id := string(k.Protocol) + "-" + strings.ReplaceAll(k.Addr.String(), ":", "_") + "-" + strconv.Itoa(int(k.Port))
	return names{chain: "svc-" + id, slots: "slots-" + id, aff: "aff-" + id, live: "live-" + id}
}

// keyOfChain parses a service chain's name back into its key.
func keyOfChain(name string) (vip.ServiceKey, bool) {
	rest, ok := strings.CutPrefix(name, "svc-")
	if !ok {
		return vip.ServiceKey{}, false
	}
	proto, rest, ok := strings.Cut(rest, "-")
	if !ok || (proto != string(vip.TCP) && proto != string(vip.UDP)) {
		return vip.ServiceKey{}, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return vip.ServiceKey{}, false
	}
	addr, err := netip.ParseAddr(strings.ReplaceAll(rest[:i], "_", ":"))
	if err != nil {
		return vip.ServiceKey{}, false
	}
	port, err := strconv.ParseUint(rest[i+1:], 10, 16)
	if err != nil {
		return vip.ServiceKey{}, false
	}
	k := vip.ServiceKey{Addr: addr, Port: uint16(port), Protocol: vip.Protocol(proto)}
	if nameOf(k).chain != name {
		return vip.ServiceKey{}, false
	}
	return k, true
}

func protoNum(p vip.Protocol) byte {
	if p == vip.UDP {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// serviceKeyBytes is a service's key in services4/services6: address .
// protocol . port, each field padded to 4 bytes.
func serviceKeyBytes(k vip.ServiceKey) []byte {
	a := k.Addr.AsSlice()
	b := make([]byte, 0, len(a)+8)
	b = append(b, a...)
	b = append(b, protoNum(k.Protocol), 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, k.Port)
	return append(b, 0, 0)
}

// keyOfServiceBytes parses serviceKeyBytes back.
func keyOfServiceBytes(b []byte) (vip.ServiceKey, bool) {
	var addr netip.Addr
	switch len(b) {
	case 12:
		addr = netip.AddrFrom4([4]byte(b[:4]))
	case 24:
		addr = netip.AddrFrom16([16]byte(b[:16]))
	default:
		return vip.ServiceKey{}, false
	}
	b = b[len(b)-8:]
	k := vip.ServiceKey{Addr: addr, Port: binary.BigEndian.Uint16(b[4:6])}
	switch b[0] {
	case unix.IPPROTO_TCP:
		k.Protocol = vip.TCP
	case unix.IPPROTO_UDP:
		k.Protocol = vip.UDP
	default:
		return vip.ServiceKey{}, false
	}
	return k, true
}

// backendBytes is a backend as map data: address . port (port padded to 4
// bytes), as the NAT expression reads it from registers.
func backendBytes(b netip.AddrPort) []byte {
	a := b.Addr().AsSlice()
	out := make([]byte, 0, len(a)+4)
	out = append(out, a...)
	out = binary.BigEndian.AppendUint16(out, b.Port())
	return append(out, 0, 0)
}

func backendOfBytes(b []byte) (netip.AddrPort, bool) {
	switch len(b) {
	case 8:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), binary.BigEndian.Uint16(b[4:6])), true
	case 20:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[:16])), binary.BigEndian.Uint16(b[16:18])), true
	}
	return netip.AddrPort{}, false
}

// slotKey is a slot's key: the numgen or jhash result, a 32-bit integer in
// host byte order.
func slotKey(i int) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(i)) }

func slotOfKey(b []byte) (int, bool) {
	if len(b) != 4 {
		return 0, false
	}
	return int(binary.NativeEndian.Uint32(b)), true
}

// servicesMap is the verdict map of the address's family.
func servicesMap(a netip.Addr) string {
	if a.Is4() {
		return mapServices4
	}
	return mapServices6
}

// Set definitions.

func servicesSet(v6 bool) Set {
	if v6 {
		return Set{Name: mapServices6, KeyType: concatType(typeIPv6, typeInetProto, typeInetService), KeyLen: 24, DataType: verdictType, Map: true}
	}
	return Set{Name: mapServices4, KeyType: concatType(typeIPv4, typeInetProto, typeInetService), KeyLen: 12, DataType: verdictType, Map: true}
}

func backendType(v6 bool) (uint32, uint32) {
	if v6 {
		return concatType(typeIPv6, typeInetService), 20
	}
	return concatType(typeIPv4, typeInetService), 8
}

func slotsSet(n names, v6 bool) Set {
	t, l := backendType(v6)
	return Set{Name: n.slots, KeyType: typeMark, KeyLen: 4, DataType: t, DataLen: l, Map: true, HostOrderKey: true}
}

func liveSet(n names, v6 bool) Set {
	t, l := backendType(v6)
	return Set{Name: n.live, KeyType: t, KeyLen: l}
}

func affSet(n names, v6 bool, persistence uint32) Set {
	t, l := backendType(v6)
	s := Set{Name: n.aff, KeyType: typeIPv4, KeyLen: 4, DataType: t, DataLen: l, Map: true, TimeoutMS: uint64(persistence) * 1000}
	if v6 {
		s.KeyType, s.KeyLen = typeIPv6, 16
	}
	return s
}

// Rules.

// nfproto matches the packet's family (the table is inet).
func nfproto(v6 bool) []expr.Any {
	f := byte(unix.NFPROTO_IPV4)
	if v6 {
		f = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f}},
	}
}

// dispatchRule is a base chain's rule for one family: daddr . l4proto .
// dport vmap @servicesN.
func dispatchRule(chain string, v6 bool) Rule {
	addrOff, addrLen, regProto, regPort := uint32(16), uint32(4), uint32(regKeyProto), uint32(regKeyPort)
	set := mapServices4
	if v6 {
		addrOff, addrLen, regProto, regPort = 24, 16, unix.NFT_REG32_04, unix.NFT_REG32_05
		set = mapServices6
	}
	ex := nfproto(v6)
	ex = append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regProto},
		&expr.Payload{DestRegister: regPort, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set, DestRegister: regVerdict, IsDestRegSet: true},
	)
	c := "l4lb: VIPs (IPv4)"
	if v6 {
		c = "l4lb: VIPs (IPv6)"
	}
	return Rule{Chain: chain, Exprs: ex, Comment: c}
}

// masqRule masquerades connections the service chains marked, and clears
// the mark.
func masqRule(mark uint32) Rule {
	m := binary.NativeEndian.AppendUint32(nil, mark)
	notM := binary.NativeEndian.AppendUint32(nil, ^mark)
	zero := []byte{0, 0, 0, 0}
	return Rule{Chain: chainPostrouting, Comment: "l4lb: masquerade VIP connections", Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: zero},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: notM, Xor: zero},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		&expr.Masq{},
	}}
}

// markExprs set the masquerade mark bit.
func markExprs(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regMark},
		&expr.Bitwise{SourceRegister: regMark, DestRegister: regMark, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, ^mark), Xor: binary.NativeEndian.AppendUint32(nil, mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: regMark},
	}
}

func dnatExprs(v6 bool) []expr.Any {
	fam, port := uint32(unix.NFPROTO_IPV4), uint32(regPort4)
	if v6 {
		fam, port = unix.NFPROTO_IPV6, regPort6
	}
	return []expr.Any{&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: regBackend, RegAddrMax: regBackend, RegProtoMin: port, RegProtoMax: port, Specified: true}}
}

func clientAddr(v6 bool) *expr.Payload {
	if v6 {
		return &expr.Payload{DestRegister: regClient, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}
	}
	return &expr.Payload{DestRegister: regClient, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

// serviceShape is what decides a service chain's rules.
type serviceShape struct {
	mode        Mode
	slots       int
	persistence uint32
}

// comments are the comments of the chain's rules, in order: what a full
// resync compares.
func (s serviceShape) comments() []string {
	if s.slots == 0 {
		return []string{"l4lb: no backend: reject"}
	}
	d := fmt.Sprintf("l4lb: %s mod %d", s.mode, s.slots)
	if s.persistence > 0 {
		return []string{fmt.Sprintf("l4lb: affinity %ds", s.persistence), d + " and remember"}
	}
	return []string{d}
}

// serviceRules are a service chain's rules.
//
// With persistence, the first rule sends a client that has an affinity
// entry pointing at a backend still taking new connections (in the live
// set) to that backend, and refreshes the entry; the second picks a slot
// and adds an entry (add does not overwrite a stale one, which expires).
func serviceRules(k vip.ServiceKey, s serviceShape, mark uint32) []Rule {
	n := nameOf(k)
	v6 := k.Addr.Is6()
	c := s.comments()
	if s.slots == 0 {
		return []Rule{{Chain: n.chain, Comment: c[0], Exprs: []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}}}
	}
	var rules []Rule
	if s.persistence > 0 {
		ex := []expr.Any{
			clientAddr(v6),
			&expr.Lookup{SourceRegister: regClient, SetName: n.aff, DestRegister: regBackend, IsDestRegSet: true},
			&expr.Lookup{SourceRegister: regBackend, SetName: n.live},
			&expr.Dynset{SrcRegKey: regClient, SrcRegData: regBackend, SetName: n.aff, Operation: unix.NFT_DYNSET_OP_UPDATE},
		}
		ex = append(ex, markExprs(mark)...)
		ex = append(ex, dnatExprs(v6)...)
		rules = append(rules, Rule{Chain: n.chain, Comment: c[0], Exprs: ex})
	}
	var ex []expr.Any
	switch s.mode {
	case SourceHash:
		src := clientAddr(v6)
		src.DestRegister = regBackend
		ex = append(ex, src, &expr.Hash{SourceRegister: regBackend, DestRegister: regBackend, Length: src.Len, Modulus: uint32(s.slots), Seed: 0x4c344c42, Type: expr.HashTypeJenkins})
	case Random:
		ex = append(ex, &expr.Numgen{Register: regBackend, Modulus: uint32(s.slots), Type: unix.NFT_NG_RANDOM})
	default:
		ex = append(ex, &expr.Numgen{Register: regBackend, Modulus: uint32(s.slots), Type: unix.NFT_NG_INCREMENTAL})
	}
	ex = append(ex, &expr.Lookup{SourceRegister: regBackend, SetName: n.slots, DestRegister: regBackend, IsDestRegSet: true})
	if s.persistence > 0 {
		ex = append(ex, clientAddr(v6), &expr.Dynset{SrcRegKey: regClient, SrcRegData: regBackend, SetName: n.aff, Operation: unix.NFT_DYNSET_OP_ADD})
	}
	ex = append(ex, markExprs(mark)...)
	ex = append(ex, dnatExprs(v6)...)
	rules = append(rules, Rule{Chain: n.chain, Comment: c[len(c)-1], Exprs: ex})
	return rules
}
