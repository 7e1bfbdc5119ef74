package genl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Cmd is an IPVS generic-netlink command that changes the table; its values
// are the kernel's IPVS_CMD_* numbers.
type Cmd uint8

// The commands Do accepts.
const (
	NewService Cmd = 1 // IPVS_CMD_NEW_SERVICE
	SetService Cmd = 2 // IPVS_CMD_SET_SERVICE
	DelService Cmd = 3 // IPVS_CMD_DEL_SERVICE
	NewDest    Cmd = 5 // IPVS_CMD_NEW_DEST
	SetDest    Cmd = 6 // IPVS_CMD_SET_DEST
	DelDest    Cmd = 7 // IPVS_CMD_DEL_DEST
)

// Commands used internally: reads and the flush.
const (
	cmdGetService Cmd = 4  // IPVS_CMD_GET_SERVICE
	cmdGetDest    Cmd = 8  // IPVS_CMD_GET_DEST
	cmdFlush      Cmd = 17 // IPVS_CMD_FLUSH
)

func (c Cmd) String() string {
	switch c {
	case NewService:
		return "add service"
	case SetService:
		return "edit service"
	case DelService:
		return "delete service"
	case NewDest:
		return "add real server"
	case SetDest:
		return "edit real server"
	case DelDest:
		return "delete real server"
	case cmdGetService:
		return "list services"
	case cmdGetDest:
		return "list real servers"
	case cmdFlush:
		return "flush"
	}
	return fmt.Sprintf("IPVS command %d", uint8(c))
}

// hasDest reports whether the command carries a real server.
func (c Cmd) hasDest() bool { return c == NewDest || c == SetDest || c == DelDest }

// Service flags (IP_VS_SVC_F_*), for Service.Flags.
const (
	FlagPersistent uint32 = 0x0001 // persistent port
	FlagHashed     uint32 = 0x0002 // kernel-internal; never reported by Services
	FlagOnePacket  uint32 = 0x0004 // one-packet scheduling
	FlagSched1     uint32 = 0x0008 // scheduler flag 1 (sh-fallback, mh-fallback)
	FlagSched2     uint32 = 0x0010 // scheduler flag 2 (sh-port, mh-port)
	FlagSched3     uint32 = 0x0020 // scheduler flag 3
)

// Forwarding methods (IP_VS_CONN_F_*), for Dest.FwdMethod.
const (
	FwdMasq   uint32 = 0 // NAT
	FwdLocal  uint32 = 1
	FwdTunnel uint32 = 2 // IP-in-IP
	FwdRoute  uint32 = 3 // direct routing
	FwdBypass uint32 = 4
	fwdMask   uint32 = 0x0007
)

// Service is one IPVS virtual service. A service is identified by Family and
// FWMark when FWMark is not 0, otherwise by Family, Protocol, Addr and Port.
//
// When sending, a zero Family is taken from Addr and a zero Netmask means the
// full mask (0xffffffff for IPv4, 128 for IPv6). A firewall-mark service has
// no address, protocol or port in the kernel, and Services reports them zero.
type Service struct {
	Family   uint16 // unix.AF_INET or unix.AF_INET6
	Protocol uint16 // unix.IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP
	Addr     netip.Addr
	Port     uint16
	FWMark   uint32
	Sched    string // "wlc", "rr", "sh", ...
	Flags    uint32 // FlagPersistent etc.
	Timeout  uint32 // persistence, in seconds
	Netmask  uint32 // persistence granularity: see IPv4Netmask; a v6 prefix length
}

// IPv4Netmask is the Service.Netmask of an IPv4 prefix length: the kernel
// takes the mask in network byte order, so 255.255.255.0 is not 0xffffff00
// on a little-endian machine.
func IPv4Netmask(prefixLen int) uint32 {
	prefixLen = min(max(prefixLen, 0), 32)
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-prefixLen))
	return binary.NativeEndian.Uint32(m[:])
}

// Dest is one real server of a service. When sending, a zero Family is taken
// from Addr.
type Dest struct {
	Addr      netip.Addr
	Port      uint16
	Family    uint16
	FwdMethod uint32 // FwdMasq etc.
	Weight    uint32
	UThresh   uint32 // upper connection threshold, 0 = none
	LThresh   uint32 // lower connection threshold

	// Read-only, filled by Dests.
	ActiveConns, InactConns uint32
	Stats                   Stats
}

// Op is one command for Do. Dest is ignored by the service commands.
type Op struct {
	Cmd     Cmd
	Service Service
	Dest    Dest
}

func (s Service) String() string {
	if s.FWMark != 0 {
		return fmt.Sprintf("FWM %d", s.FWMark)
	}
	return protoName(s.Protocol) + " " + netip.AddrPortFrom(s.Addr, s.Port).String()
}

func (d Dest) String() string { return netip.AddrPortFrom(d.Addr, d.Port).String() }

func (o Op) String() string {
	if o.Cmd.hasDest() {
		return fmt.Sprintf("%s %s to %s", o.Cmd, o.Dest, o.Service)
	}
	return fmt.Sprintf("%s %s", o.Cmd, o.Service)
}

func protoName(p uint16) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "TCP"
	case unix.IPPROTO_UDP:
		return "UDP"
	case unix.IPPROTO_SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto-%d", p)
}

// Errors a Client returns, besides the kernel's own errno values (which are
// wrapped syscall.Errno: test them with errors.Is(err, unix.EEXIST)).
var (
	// ErrNoIPVS: the kernel has no "IPVS" generic-netlink family, so IPVS is
	// not built in and its module is not loaded.
	ErrNoIPVS = errors.New("the kernel has no IPVS generic-netlink family (is the ip_vs module loaded?)")
	// ErrTimeout: the kernel did not answer within the client's timeout. The
	// socket has been reopened; commands without an answer may or may not
	// have been applied.
	ErrTimeout = errors.New("no answer from the kernel before the deadline")
	// ErrAckLost: the socket's receive queue overflowed and the kernel dropped
	// answers; commands without an answer may or may not have been applied.
	ErrAckLost = errors.New("kernel answers lost (netlink receive queue overflow)")
	// ErrNotSent: the command was not sent because an earlier exchange in the
	// same Do failed at the transport level.
	ErrNotSent = errors.New("not sent")
	// ErrClosed: the client is closed.
	ErrClosed = errors.New("IPVS netlink client is closed")
	// ErrInvalid: the command cannot be encoded (bad address, family or
	// command); it was not sent.
	ErrInvalid = errors.New("invalid IPVS command")
	// ErrDumpInterrupted: the table changed during every attempt to read it.
	ErrDumpInterrupted = errors.New("IPVS table changed while it was read")
)
