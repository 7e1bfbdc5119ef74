package vip

import (
	"net/netip"
	"time"
)

// Protocol is a VIP's transport protocol.
type Protocol string

// The protocols a VIP can carry.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// DefaultFramework is the framework a named VIP belongs to when none is given.
const DefaultFramework = "marathon"

// DefaultDomain is the DNS domain under which named VIPs are published.
const DefaultDomain = "l4lb.thisdcos.directory"

// DefaultScheduler is the IPVS scheduler a VIP uses when none is asked for.
const DefaultScheduler = "wlc"

// Spec is a VIP as a user writes it: either a named VIP ("/dcos-101/app2:10000",
// with an optional "tcp://" or "udp://" scheme) or an IP VIP
// ("11.1.1.1:80", "[fd01:c::1]:80"). Build one with ParseSpec.
type Spec struct {
	// Protocol is TCP unless the label said "udp://".
	Protocol Protocol
	// Name is the app's path for a named VIP, normalised to a leading "/"
	// ("/dcos-101/app2"); empty for an IP VIP.
	Name string
	// Addr is the address of an IP VIP; invalid (zero) for a named VIP.
	Addr netip.Addr
	// Port is the VIP's port, 1 to 65535.
	Port uint16
}

// Health is what a node says of one of its own backends.
type Health string

// Backend health states. Only Healthy backends take new connections;
// Draining ones stay in the desired table with weight 0 so established
// connections finish; Unhealthy ones are left out of the desired table (the
// VIP itself stays, with its address, while any backend is registered).
// Build treats an empty Health as Healthy.
const (
	Healthy   Health = "healthy"
	Unhealthy Health = "unhealthy"
	Draining  Health = "draining"
)

// Claim records the address a node proposed for a named VIP when it first
// published a backend for it, and when. Claims travel with registrations so
// that the address book is stable: a name keeps its claimed address for as
// long as any registration carries the claim, whatever names come and go.
type Claim struct {
	Addr  netip.Addr
	Since time.Time
}

// Registration is one backend that a node publishes for a VIP: the unit of
// cluster state. A node publishes only backends that run on it.
type Registration struct {
	VIP       Spec
	Framework string // named VIPs only; DefaultFramework when empty
	Backend   netip.AddrPort
	Weight    uint32 // 0 means "take no new connections"; default 1
	Health    Health
	// Scheduler and Persistence are asked for by the backend but belong to the
	// VIP; Build settles disagreements by a documented rule.
	Scheduler   string
	Persistence uint32 // seconds of client affinity; 0 for none
	// Public asks that public nodes (agents given --public-address) serve
	// the VIP on their own addresses, at PublicPort (0: the VIP's port).
	// Like the scheduler, it belongs to the VIP: Build settles it by vote.
	// PublicPort is ignored when Public is false.
	Public     bool
	PublicPort uint16
	// Claim is the named VIP's address as this node proposed it (see Claim);
	// zero for IP VIPs. A named VIP's address family follows its backend's:
	// IPv4 backends get an address from Config.V4, IPv6 ones from Config.V6.
	Claim Claim
}

// NodeState is everything one live node publishes.
type NodeState struct {
	Node     string
	Backends []Registration
}

// ClusterState is the merged view of every live node, as gossip hands it over.
// Nodes that are dead or have left must not be in it.
type ClusterState []NodeState

// Config says where named VIPs get their addresses and names.
type Config struct {
	Domain string       // DefaultDomain when empty
	V4     netip.Prefix // default 11.0.0.0/8
	V6     netip.Prefix // default fd01:c::/64
}

// ServiceKey identifies one IPVS virtual service.
type ServiceKey struct {
	Addr     netip.Addr
	Port     uint16
	Protocol Protocol
}

// Backend is one real server of a VIP in the desired table.
type Backend struct {
	Addr   netip.AddrPort
	Weight uint32
	Node   string
	Health Health
}

// VIP is one virtual service in the desired table.
type VIP struct {
	ServiceKey
	// Label is the spec as the user wrote it, normalised ("/dcos-101/app2:10000"
	// or "11.1.1.1:80").
	Label string
	// Name and Framework identify a named VIP; both empty for an IP VIP.
	Name      string
	Framework string
	// Names are the fully qualified DNS names (with trailing dot) that answer
	// with Addr: the path name first, the DC/OS flattened name second.
	Names       []string
	Scheduler   string
	Persistence uint32
	// PublicPort is the port at which public nodes serve the VIP on their
	// own addresses; 0 when the VIP is not public (settled by vote, like
	// the scheduler: see PublicPortOf).
	PublicPort uint16
	// Backends are sorted by address; Weight is 0 for draining ones;
	// unhealthy ones are not in Backends.
	Backends []Backend
	// Down are the backends their node reports unhealthy, sorted by
	// address: left out of the kernel, kept here for people to see.
	Down []Backend
	// Conflicts says, for people, where registrations of this VIP disagreed
	// (scheduler, persistence, public port) and which value won.
	Conflicts []string
}

// Table is the desired state of one node: every VIP, sorted by ServiceKey.
// A Table is immutable once built; a change builds a new one.
type Table struct {
	VIPs []VIP
	// Errors lists, sorted, the named VIPs that could not be placed (the
	// address range is full) or were otherwise left out, with why.
	Errors []string

	// id, log and gen place the table in a lineage of derived tables
	// (Derive, ChangedSince); zero for a table made by hand.
	id, gen uint64
	log     *changeLog
}
