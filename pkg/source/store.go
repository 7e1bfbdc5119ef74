package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/atomicfile"
)

// StateFile is the name of the file, in the state directory, that holds the
// registrations made through the API.
const StateFile = "registrations.json"

// stateVersion is the version of the state file's format this code writes
// and reads.
const stateVersion = 1

// stateFile is the state file's content:
//
//	{"version": 1, "backends": [Entry, ...]}
type stateFile struct {
	Version  int               `json:"version"`
	Backends []json.RawMessage `json:"backends"`
}

// Store holds the registrations made through the API and keeps them in the
// state directory, so that they survive a restart of the agent until they are
// withdrawn. Every change is written to disk before it is visible: a new
// file is written, synced and renamed over the old one, so the file on disk
// is always a whole state, the old or the new. Its methods are safe for
// concurrent use.
type Store struct {
	path      string
	log       logrus.FieldLogger
	recovered string

	// beforeRename, if set, runs between writing the new state to a
	// temporary file and renaming it into place (tests only).
	beforeRename func(tmp string) error

	// mu guards byKey and the state file.
	mu    sync.Mutex
	byKey map[string]Local
}

// OpenStore opens the store in stateDir, creating the directory if needed,
// and loads the registrations kept there.
//
// A state file that cannot be decoded at all is moved aside to
// "registrations.json.bad-<UTC time>" and the store starts empty; a state
// file whose JSON is sound but holds registrations that are no longer valid
// is copied aside the same way, and the valid registrations are kept. Either
// way nothing is lost, the agent keeps serving, and each problem is logged at
// error level; Recovered returns the copy's path. A state file written by a
// newer version of l4lb, or one that cannot be read, is an error: OpenStore
// refuses rather than overwrite it.
func OpenStore(stateDir string, log logrus.FieldLogger) (*Store, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("open registration store: %w", err)
	}
	s := &Store{
		path:  filepath.Join(stateDir, StateFile),
		log:   log.WithField("component", "source"),
		byKey: map[string]Local{},
	}
	// A temporary file left by a crash in the middle of a write never
	// became the state: remove it.
	if leftovers, err := filepath.Glob(s.path + ".tmp-*"); err == nil {
		for _, f := range leftovers {
			if err := os.Remove(f); err != nil {
				s.log.WithError(err).Warnf("cannot remove leftover temporary state file %s", f)
			}
		}
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("open registration store: %w", err)
	}
	return s, nil
}

// load reads the state file into s.byKey.
func (s *Store) load() error {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	var state stateFile
	if err := decodeStrict(data, &state); err != nil {
		return s.setAside(data, fmt.Errorf("cannot decode: %w", err), true)
	}
	switch {
	case state.Version > stateVersion:
		return fmt.Errorf("state file %s has version %d; this l4lb reads version %d: it was written by a newer l4lb", s.path, state.Version, stateVersion)
	case state.Version != stateVersion:
		return s.setAside(data, fmt.Errorf("version %d: want %d", state.Version, stateVersion), true)
	}
	var bad []error
	for i, raw := range state.Backends {
		e, err := decodeEntry(raw)
		if err != nil {
			bad = append(bad, fmt.Errorf("backend %d: %w", i, err))
			continue
		}
		l, err := e.Parse()
		if err != nil {
			bad = append(bad, fmt.Errorf("backend %d: %w", i, err))
			continue
		}
		if _, dup := s.byKey[l.Key()]; dup {
			bad = append(bad, fmt.Errorf("backend %d: %s is there twice; the first is kept", i, l.Key()))
			continue
		}
		s.byKey[l.Key()] = l
	}
	if len(bad) == 0 {
		return nil
	}
	if err := s.setAside(data, errors.Join(bad...), false); err != nil {
		return err
	}
	return s.save()
}

// setAside keeps a copy of a state file that could not be loaded whole, as
// "<state file>.bad-<UTC time>", and logs why. With move, the state file
// itself goes (nothing of it was loaded); without, it stays until the next
// write replaces it.
func (s *Store) setAside(data []byte, why error, move bool) error {
	aside := s.path + ".bad-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = s.path + ".bad-" + time.Now().UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(i)
	}
	if move {
		if err := os.Rename(s.path, aside); err != nil {
			return fmt.Errorf("state file %s is corrupt (%v) and cannot be moved aside: %w", s.path, why, err)
		}
		s.log.WithField("reason", why.Error()).Errorf("state file %s is corrupt: moved it to %s and started with no API registrations; re-register the backends, or fix the file and put it back while the agent is stopped", s.path, aside)
	} else {
		if err := atomicfile.Write(aside, data, nil); err != nil {
			return fmt.Errorf("state file %s has invalid registrations (%v) and cannot be copied aside: %w", s.path, why, err)
		}
		s.log.WithField("reason", why.Error()).Errorf("state file %s has invalid registrations: left them out and kept the original file as %s", s.path, aside)
	}
	s.recovered = aside
	return nil
}

// Recovered returns the path where OpenStore set aside a state file it could
// not load whole, or "" if it loaded the file whole (or there was none).
func (s *Store) Recovered() string { return s.recovered }

// Path returns the state file's path.
func (s *Store) Path() string { return s.path }

// Put adds or replaces the registration with l's key and writes the state
// before it returns. created is true when the key was new. A Put of what is
// already there writes nothing. l is checked as Parse checks an Entry, and
// stored with its defaults filled in. On error nothing has changed.
func (s *Store) Put(l Local) (created bool, err error) {
	l, err = l.Entry().Parse()
	if err != nil {
		return false, fmt.Errorf("put registration: %w", err)
	}
	key := l.Key()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.byKey[key]
	if exists && old == l {
		return false, nil
	}
	s.byKey[key] = l
	if err := s.save(); err != nil {
		if exists {
			s.byKey[key] = old
		} else {
			delete(s.byKey, key)
		}
		return false, fmt.Errorf("put registration %s: %w", key, err)
	}
	return !exists, nil
}

// Delete removes the registration with key and writes the state before it
// returns. found is false when there was none (and nothing is written). On
// error nothing has changed.
func (s *Store) Delete(key string) (found bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.byKey[key]
	if !exists {
		return false, nil
	}
	delete(s.byKey, key)
	if err := s.save(); err != nil {
		s.byKey[key] = old
		return false, fmt.Errorf("delete registration %s: %w", key, err)
	}
	return true, nil
}

// Get returns the registration with key.
func (s *Store) Get(key string) (Local, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.byKey[key]
	return l, ok
}

// List returns every registration, sorted by key.
func (s *Store) List() []Local {
	s.mu.Lock()
	out := make([]Local, 0, len(s.byKey))
	for _, l := range s.byKey {
		out = append(out, l)
	}
	s.mu.Unlock()
	sortLocals(out)
	return out
}

// save writes s.byKey to the state file; s.mu is held (or s is not shared
// yet).
func (s *Store) save() error {
	locals := make([]Local, 0, len(s.byKey))
	for _, l := range s.byKey {
		locals = append(locals, l)
	}
	sortLocals(locals)
	state := stateFile{Version: stateVersion, Backends: make([]json.RawMessage, 0, len(locals))}
	for _, l := range locals {
		raw, err := json.Marshal(l.Entry())
		if err != nil {
			return fmt.Errorf("encode %s: %w", l.Key(), err)
		}
		state.Backends = append(state.Backends, raw)
	}
	data, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	data = append(data, '\n')
	if err := atomicfile.Write(s.path, data, s.beforeRename); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
