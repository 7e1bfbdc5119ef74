// Package memnet is an in-memory network for memberlist: many gossip nodes
// in one process, with no sockets, for tests and benchmarks. Unlike
// memberlist's MockNetwork it is safe to add nodes while others run, a
// closed node's packets are dropped rather than blocking the sender, packets
// are dropped (as UDP would drop them) when a receiver's queue is full, and
// a filter can cut links between groups of nodes to make partitions.
package memnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// PacketQueue is how many packets a node's inbox holds, like a socket's
// receive buffer.
const PacketQueue = 4096

// Network connects the transports made from it. The zero value is not
// usable; call New.
type Network struct {
	mu      sync.RWMutex // guards nodes, next, cut, stalled
	nodes   map[string]*Transport
	next    uint32
	cut     func(from, to string) bool
	stalled map[string]bool // see Stall
	Drops   atomic.Uint64   // packets dropped: full inbox, cut link, no such node
	Queued  atomic.Uint64   // packets delivered to an inbox
}

// New returns an empty network.
func New() *Network {
	return &Network{nodes: make(map[string]*Transport)}
}

// NewTransport returns a transport with a fresh address 127.x.y.z:7946.
func (n *Network) NewTransport() *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		n.next++
		ip := net.IPv4(127, byte(n.next>>16), byte(n.next>>8), byte(n.next))
		addr := net.JoinHostPort(ip.String(), "7946")
		if n.nodes[addr] == nil {
			return n.addLocked(addr, ip)
		}
	}
}

// NewTransportAt returns a transport at addr ("127.x.y.z:7946"), which
// must be free or held by a transport that was shut down: a node restarting
// on its old address.
func (n *Network) NewTransportAt(addr string) (*Transport, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("memnet: %w", err)
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || port != "7946" {
		return nil, fmt.Errorf("memnet: address %q is not 127.x.y.z:7946", addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.nodes[addr]; old != nil && !old.isClosed() {
		return nil, fmt.Errorf("memnet: address %s in use", addr)
	}
	return n.addLocked(addr, ip), nil
}

func (n *Network) addLocked(addr string, ip net.IP) *Transport {
	t := &Transport{
		net:      n,
		addr:     addr,
		ip:       ip.To4(),
		port:     7946,
		packetCh: make(chan *memberlist.Packet, PacketQueue),
		streamCh: make(chan net.Conn),
		closed:   make(chan struct{}),
	}
	n.nodes[addr] = t
	return t
}

// Backlog returns how many packets wait, in all live nodes' inboxes
// together, for their receivers to read them: how far the receivers are
// behind. A simulation that starts many nodes can pace itself on it, so
// that queueing delay (which a real network of separate machines would not
// have) does not time out probes.
func (n *Network) Backlog() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	total := 0
	for _, t := range n.nodes {
		if !t.isClosed() {
			total += len(t.packetCh)
		}
	}
	return total
}

// SetCut installs a filter: a packet or connection from one address to
// another is dropped (refused) when cut returns true. nil heals everything.
func (n *Network) SetCut(cut func(from, to string) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = cut
}

// Partition cuts every link between group a and group b (addresses).
func (n *Network) Partition(a, b []string) {
	in := func(g []string, x string) bool {
		for _, y := range g {
			if x == y {
				return true
			}
		}
		return false
	}
	n.SetCut(func(from, to string) bool {
		return (in(a, from) && in(b, to)) || (in(b, from) && in(a, to))
	})
}

// peer returns the live transport at addr, unless the link is cut.
func (n *Network) peer(from, to string) (*Transport, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.cut != nil && n.cut(from, to) {
		return nil, fmt.Errorf("memnet: link %s -> %s is cut", from, to)
	}
	t := n.nodes[to]
	if t == nil || t.isClosed() {
		return nil, fmt.Errorf("memnet: connection refused: %s", to)
	}
	return t, nil
}

// Transport is one node's end of a Network; it implements
// memberlist.NodeAwareTransport.
type Transport struct {
	net      *Network
	addr     string
	ip       net.IP
	port     int
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	closed   chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr returns the transport's "host:port".
func (t *Transport) Addr() string { return t.addr }

func (t *Transport) isClosed() bool {
	select {
	case <-t.closed:
		return true
	default:
		return false
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.ip, t.port, nil
}

// WriteTo implements memberlist.Transport: the packet is copied into the
// receiver's inbox, or dropped.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	if t.isClosed() {
		return now, errors.New("memnet: transport closed")
	}
	dest, err := t.net.peer(t.addr, addr)
	if err != nil || t.net.isStalled(t.addr) || t.net.isStalled(addr) {
		t.net.Drops.Add(1)
		return now, nil // like UDP: the sender does not know
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: memAddr(t.addr), Timestamp: now}
	select {
	case dest.packetCh <- p:
		t.net.Queued.Add(1)
	default:
		t.net.Drops.Add(1)
	}
	return now, nil
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport with an in-memory pipe.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isClosed() {
		return nil, errors.New("memnet: transport closed")
	}
	dest, err := t.net.peer(t.addr, addr)
	if err != nil {
		return nil, err
	}
	switch {
	case t.net.isStalled(t.addr):
		return nil, fmt.Errorf("memnet: dial %s: %s is stalled", addr, t.addr)
	case t.net.isStalled(addr):
		return unservedConn(t.addr, addr), nil
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streamCh <- &conn{Conn: remote, local: memAddr(addr), remote: memAddr(t.addr)}:
		return &conn{Conn: local, local: memAddr(t.addr), remote: memAddr(addr)}, nil
	case <-dest.closed:
	case <-timer.C:
	}
	_ = local.Close()
	_ = remote.Close()
	return nil, fmt.Errorf("memnet: dial %s: timed out or refused", addr)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport: the node stops receiving.
func (t *Transport) Shutdown() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

// memAddr is a net.Addr for memnet addresses.
type memAddr string

func (a memAddr) Network() string { return "memnet" }
func (a memAddr) String() string  { return string(a) }

// conn is a pipe end that reports memnet addresses.
type conn struct {
	net.Conn
	local, remote memAddr
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }
