package memnet

import "net"

// Stall makes the node at addr behave as a process starved of CPU, or
// undoes it: its memberlist sends and receives nothing (packets to and from
// it are dropped), but a connection to it still opens, as a live kernel
// completes the TCP handshake for a process that does not run, and is then
// never served (the other end reads EOF).
func (n *Network) Stall(addr string, on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stalled == nil {
		n.stalled = map[string]bool{}
	}
	if on {
		n.stalled[addr] = true
	} else {
		delete(n.stalled, addr)
	}
}

func (n *Network) isStalled(addr string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.stalled[addr]
}

// unservedConn is what a dial to a stalled node returns: connected, and
// closed at the far end.
func unservedConn(from, to string) net.Conn {
	local, remote := net.Pipe()
	_ = remote.Close()
	return &conn{Conn: local, local: memAddr(from), remote: memAddr(to)}
}
