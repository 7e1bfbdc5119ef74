package gossip

// Merged reports whether this node has merged a peer's whole state (a
// push/pull, which every join is, whichever side started it) and holds
// every record that state announced (no pull is pending). Until then its
// State() may lack other nodes' backends that the cluster has: a node
// that has just (re)started must not take them out of its kernel. A
// cluster of one never merges; the caller bounds the wait.
func (c *Cluster) Merged() bool {
	return c.pushPulled.Load() && c.store.pendingPulls() == 0
}

// pendingPulls is the number of records this node knows of and lacks.
func (s *store) pendingPulls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.want)
}
