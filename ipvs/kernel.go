package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

// Interface is everything l4lb asks of the kernel's data plane on one node:
// the dummy interface's addresses and the IPVS virtual services and real
// servers. Kernel implements it on Linux; Fake implements it in memory.
//
// Methods are called from one goroutine at a time, except Destinations,
// which may also be called concurrently (for Connections).
type Interface interface {
	// EnsureInterface creates the dummy interface if it is missing and sets
	// it up.
	EnsureInterface() error
	// Addresses lists the addresses held by the dummy interface.
	Addresses() ([]netip.Addr, error)
	// Services lists every TCP and UDP virtual service by address, l4lb's
	// and others'; firewall-mark services are left out.
	Services() ([]Service, error)
	// Destinations lists a service's real servers with their connection
	// counts.
	Destinations(s Service) ([]Destination, error)
	// Apply executes ops in order and returns each one's outcome (errs[i]
	// for ops[i]; nil is success), going on after a failure. Calls are
	// idempotent: adding what exists updates it, updating what is missing
	// adds it, deleting what is missing succeeds. Errors name the VIP and
	// backend they concern.
	Apply(ops []Op) []error
	// Close releases the handles. It does not change the kernel's tables.
	Close() error
}

// Forward is how IPVS forwards to a real server (IP_VS_CONN_F_FWD_MASK).
type Forward uint32

// Forwarding methods, with the kernel's values.
const (
	Masq   Forward = 0 // IP_VS_CONN_F_MASQ: NAT; l4lb's only method
	Local  Forward = 1 // IP_VS_CONN_F_LOCALNODE
	Tunnel Forward = 2 // IP_VS_CONN_F_TUNNEL
	Route  Forward = 3 // IP_VS_CONN_F_DROUTE
)

func (f Forward) String() string {
	switch f {
	case Masq:
		return "masq"
	case Local:
		return "local"
	case Tunnel:
		return "tunnel"
	case Route:
		return "route"
	}
	return fmt.Sprintf("forward(%d)", uint32(f))
}

// Kernel flag bits of a virtual service (IP_VS_SVC_F_*).
const (
	svcFlagPersistent = 0x0001
	svcFlagHashed     = 0x0002 // set by the kernel on every service: masked out
)

// Service is one IPVS virtual service.
type Service struct {
	vip.ServiceKey
	Scheduler string
	// Persistence is the client affinity timeout in seconds; 0 for none.
	Persistence uint32
}

func (s Service) String() string { return keyString(s.ServiceKey) }

// keyString prints a service key as ipvsadm does: "TCP 11.0.0.1:80".
func keyString(k vip.ServiceKey) string {
	return strings.ToUpper(string(k.Protocol)) + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// Destination is one real server of a virtual service.
type Destination struct {
	Addr    netip.AddrPort
	Weight  uint32
	Forward Forward
	// ActiveConns and InactiveConns are read from the kernel; ignored on
	// writes.
	ActiveConns, InactiveConns uint32
	// Traffic is read from the kernel (counters and rate estimates);
	// ignored on writes.
	Traffic Traffic
}

// Traffic is what IPVS counted for a real server: connections, packets
// and bytes in (client to backend) and out since it was added, and the
// kernel estimator's rates (per second, smoothed over a few seconds).
type Traffic struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
	CPS, InPPS, OutPPS, InBPS, OutBPS         uint64
}

// OpKind is the kind of one kernel write.
type OpKind uint8

// The kernel writes the reconciler makes.
const (
	AddService OpKind = iota
	UpdateService
	DeleteService
	AddDestination
	UpdateDestination
	DeleteDestination
	AddAddress
	DeleteAddress
	numOpKinds
)

var opKindNames = [numOpKinds]string{"add_service", "update_service", "delete_service", "add_destination", "update_destination", "delete_destination", "add_address", "delete_address"}

func (k OpKind) String() string {
	if k < numOpKinds {
		return opKindNames[k]
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// OpKinds lists every kind, in order, for metrics and tests.
func OpKinds() []OpKind {
	ks := make([]OpKind, numOpKinds)
	for i := range ks {
		ks[i] = OpKind(i)
	}
	return ks
}

// Op is one kernel write.
type Op struct {
	Kind        OpKind
	Service     Service     // every IPVS kind
	Destination Destination // destination kinds
	Addr        netip.Addr  // address kinds
	// drain marks the weight-0 update that starts a backend's drain.
	drain bool
}

// String says what the op does in an operator's words; errors start with it.
func (o Op) String() string {
	switch o.Kind {
	case AddService:
		return fmt.Sprintf("add virtual service %s (scheduler %s, persistence %d)", o.Service, o.Service.Scheduler, o.Service.Persistence)
	case UpdateService:
		return fmt.Sprintf("update virtual service %s (scheduler %s, persistence %d)", o.Service, o.Service.Scheduler, o.Service.Persistence)
	case DeleteService:
		return fmt.Sprintf("delete virtual service %s", o.Service)
	case AddDestination:
		return fmt.Sprintf("add real server %s (weight %d) to %s", o.Destination.Addr, o.Destination.Weight, o.Service)
	case UpdateDestination:
		return fmt.Sprintf("set real server %s of %s to weight %d", o.Destination.Addr, o.Service, o.Destination.Weight)
	case DeleteDestination:
		return fmt.Sprintf("delete real server %s from %s", o.Destination.Addr, o.Service)
	case AddAddress:
		return fmt.Sprintf("add address %s to the dummy interface", o.Addr)
	case DeleteAddress:
		return fmt.Sprintf("delete address %s from the dummy interface", o.Addr)
	}
	return o.Kind.String()
}

// ErrNoIPVS is returned by New and OpenKernel when the kernel has no IPVS.
var ErrNoIPVS = errors.New("IPVS is not available in this kernel: load the ip_vs module (modprobe ip_vs)")

// protoNumber and protoOf convert between vip.Protocol and IPPROTO_*.
func protoNumber(p vip.Protocol) uint16 {
	if p == vip.UDP {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

func protoOf(n uint16) (vip.Protocol, bool) {
	switch n {
	case unix.IPPROTO_TCP:
		return vip.TCP, true
	case unix.IPPROTO_UDP:
		return vip.UDP, true
	}
	return "", false
}

// familyOf is AF_INET or AF_INET6 for a.
func familyOf(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// netmaskOf is the persistence netmask l4lb uses: one client address.
func netmaskOf(a netip.Addr) uint32 {
	if a.Is4() {
		return 0xffffffff
	}
	return 128
}

// svcFlags turns persistence into IP_VS_SVC_F_* flags.
func svcFlags(s Service) uint32 {
	if s.Persistence > 0 {
		return svcFlagPersistent
	}
	return 0
}

// persistenceOf reads persistence back from kernel flags and timeout, with
// kernel-added flags masked out.
func persistenceOf(flags, timeout uint32) uint32 {
	if flags&^svcFlagHashed&svcFlagPersistent == 0 {
		return 0
	}
	return timeout
}

// idempotent maps the kernel's "already exists" and "not found" answers to
// what the op meant: it returns the op to retry with (ok=true) or nil when
// the answer is success as it stands.
func idempotent(op Op, err error) (retry *Op, success bool) {
	switch op.Kind {
	case AddService:
		if errors.Is(err, unix.EEXIST) {
			return &Op{Kind: UpdateService, Service: op.Service}, false
		}
	case UpdateService:
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
			return &Op{Kind: AddService, Service: op.Service}, false
		}
	case DeleteService:
		return nil, errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
	case AddDestination:
		if errors.Is(err, unix.EEXIST) {
			return &Op{Kind: UpdateDestination, Service: op.Service, Destination: op.Destination}, false
		}
	case UpdateDestination:
		if errors.Is(err, unix.ENOENT) {
			return &Op{Kind: AddDestination, Service: op.Service, Destination: op.Destination}, false
		}
	case DeleteDestination:
		// ESRCH: the whole service is gone, so is the real server.
		return nil, errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
	case AddAddress:
		return nil, errors.Is(err, unix.EEXIST)
	case DeleteAddress:
		return nil, errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT)
	}
	return nil, false
}
