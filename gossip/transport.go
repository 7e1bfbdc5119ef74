package gossip

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport wraps the transport memberlist uses and counts every
// packet and byte that crosses it, in both directions. Memberlist's label
// and encryption are applied above it, so the figures are what the wire
// carries.
type countingTransport struct {
	inner    memberlist.NodeAwareTransport
	counters *counters
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	stop     sync.Once
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func newCountingTransport(inner memberlist.Transport, c *counters) *countingTransport {
	na, ok := inner.(memberlist.NodeAwareTransport)
	if !ok {
		na = nodeAwareShim{inner}
	}
	t := &countingTransport{
		inner:    na,
		counters: c,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *countingTransport) forwardPackets() {
	for {
		select {
		case p := <-t.inner.PacketCh():
			t.counters.packetsReceived.Add(1)
			t.counters.wireBytesReceived.Add(uint64(len(p.Buf)))
			select {
			case t.packetCh <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) forwardStreams() {
	for {
		select {
		case c := <-t.inner.StreamCh():
			select {
			case t.streamCh <- &countingConn{Conn: c, counters: t.counters}:
			case <-t.done:
				_ = c.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.countPacket(len(b))
	return t.inner.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t.countPacket(len(b))
	return t.inner.WriteToAddress(b, a)
}

func (t *countingTransport) countPacket(n int) {
	t.counters.packetsSent.Add(1)
	t.counters.wireBytesSent.Add(uint64(n))
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *countingTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, counters: t.counters}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, counters: t.counters}, nil
}

// Shutdown stops forwarding and shuts the inner transport down. Its
// listeners hand each packet and stream over on an unbuffered channel and
// its Shutdown waits for them: what arrives meanwhile is drained here, or
// a listener blocked on the hand-over would keep Shutdown (and the agent's
// stop) waiting forever.
func (t *countingTransport) Shutdown() error {
	t.stop.Do(func() { close(t.done) })
	drained := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.inner.PacketCh():
			case c := <-t.inner.StreamCh():
				_ = c.Close()
			case <-drained:
				return
			}
		}
	}()
	err := t.inner.Shutdown()
	close(drained)
	return err
}

// countingConn counts a stream's bytes.
type countingConn struct {
	net.Conn
	counters *counters
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.counters.wireBytesReceived.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.counters.wireBytesSent.Add(uint64(n))
	return n, err
}

// nodeAwareShim lets a plain Transport stand for a NodeAwareTransport.
type nodeAwareShim struct{ memberlist.Transport }

func (s nodeAwareShim) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return s.WriteTo(b, a.Addr)
}

func (s nodeAwareShim) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return s.DialTimeout(a.Addr, timeout)
}
