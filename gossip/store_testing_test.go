package gossip

// Store queries that only tests use.

// holds reports whether node's record at version v or newer is in State().
func (s *store) holds(node string, v Version) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[node]
	return e != nil && !e.rec.version.Less(v) && s.visibleLocked(node)
}

// visibleCount returns how many nodes State() would hold, without copying.
func (s *store) visibleCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.records {
		if s.visibleLocked(name) {
			n++
		}
	}
	return n
}

// shows reports whether node is in State().
func (s *store) shows(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.visibleLocked(node)
}
