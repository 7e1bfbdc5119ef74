package docker

// Backend returns the backend published under key (source.Local.Key), with
// Docker's health verdict and the container it comes from: O(1), for a
// caller that applies Run's changes one key at a time.
func (s *Source) Backend(key string) (Backend, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.book.published[key]
	return b, ok
}
