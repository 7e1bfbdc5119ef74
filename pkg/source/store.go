package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/atomicfile"
	"github.com/l4lb/l4lb/pkg/journal"
)

// JournalFile is the name of the file, in the state directory, that holds
// the registrations made through the API: a journal (package journal) of
// "put key Entry-JSON" and "delete key" records.
const JournalFile = "registrations.journal"

// StateFile is the name of the file, in the state directory, that held the
// registrations before JournalFile did: OpenStore migrates it into the
// journal and renames it to MigratedFile.
const StateFile = "registrations.json"

// MigratedFile is what StateFile is renamed to once its registrations are
// in the journal.
const MigratedFile = StateFile + ".migrated"

// journalKind and journalVersion name the journal's content: values are
// Entries in JSON, keyed by Local.Key.
const (
	journalKind    = "l4lb registrations"
	journalVersion = 1
)

// stateVersion is the version of StateFile's format this code reads.
const stateVersion = 1

// stateFile is StateFile's content:
//
//	{"version": 1, "backends": [Entry, ...]}
type stateFile struct {
	Version  int               `json:"version"`
	Backends []json.RawMessage `json:"backends"`
}

// Store holds the registrations made through the API and keeps them in the
// state directory, so that they survive a restart of the agent until they are
// withdrawn. Every change is durable (appended to the journal and fsynced)
// before it is visible and before Put or Delete returns; concurrent changes
// share one write and one fsync. A change costs O(1) amortised, however many
// registrations the store holds. Its methods are safe for concurrent use.
type Store struct {
	dir       string
	log       logrus.FieldLogger
	recovered string
	j         *journal.Journal

	// mu guards keys: the keys the journal holds, in log order. The
	// registrations themselves are only in the journal (its values, in
	// JSON): a second copy of every one, decoded, would cost several
	// hundred bytes per registration for what only Get and List read.
	mu   sync.Mutex
	keys map[string]struct{}
	// changed, when set, is told each change in log order (OnChange).
	changed func(key string, l *Local)
}

// OnChange makes fn hear of every later change, once durable and in the
// order of the log: a Put with the registration, a Delete with nil. So a
// consumer sees concurrent changes of one key in the order they took
// effect, and concurrent writers still share fsyncs. fn must be quick and
// must not call the Store. Call OnChange before the Store is shared.
func (s *Store) OnChange(fn func(key string, l *Local)) { s.changed = fn }

// OpenStore opens the store in stateDir, creating the directory if needed,
// and loads the registrations kept there.
//
// A journal whose records no longer hold valid registrations keeps its
// valid ones; the file is copied aside to "registrations.journal.bad-<UTC
// time>" first and the invalid records are deleted. A file in the
// journal's place that is not a journal is moved aside the same way and the
// store starts empty. A registrations.json left by an earlier l4lb is
// migrated: its registrations are written to the journal (they replace
// those with the same key) and it is renamed to registrations.json.migrated.
// If it cannot be decoded at all it is moved aside to
// "registrations.json.bad-<UTC time>" instead; if it holds registrations
// that are no longer valid it is copied aside that way and its valid ones
// are migrated. Either way nothing is lost, the agent keeps serving, and
// each problem is logged at error level; Recovered returns the copy's path.
// A journal or state file written by a newer version of l4lb, or one that
// cannot be read, is an error: OpenStore refuses rather than overwrite it.
func OpenStore(stateDir string, log logrus.FieldLogger) (*Store, error) {
	return openStoreWith(stateDir, log, journal.Options{})
}

// openStoreWith is OpenStore with journal options (tests inject faults).
func openStoreWith(stateDir string, log logrus.FieldLogger, opts journal.Options) (*Store, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("open registration store: %w", err)
	}
	s := &Store{
		dir:  stateDir,
		log:  log.WithField("component", "source"),
		keys: map[string]struct{}{},
	}
	statePath := filepath.Join(stateDir, StateFile)
	// A temporary file left by a crash in the middle of an earlier l4lb's
	// write never became the state: remove it.
	if leftovers, err := filepath.Glob(statePath + ".tmp-*"); err == nil {
		for _, f := range leftovers {
			if err := os.Remove(f); err != nil {
				s.log.WithError(err).Warnf("cannot remove leftover temporary state file %s", f)
			}
		}
	}
	// The old state file is read (and refused if newer) before anything
	// is written.
	legacy, haveLegacy, err := s.loadStateFile(statePath)
	if err != nil {
		return nil, fmt.Errorf("open registration store: %w", err)
	}
	opts.Kind, opts.Version, opts.Log = journalKind, journalVersion, log
	path := filepath.Join(stateDir, JournalFile)
	s.j, err = journal.Open(path, opts)
	if errors.Is(err, journal.ErrNotJournal) {
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			return nil, fmt.Errorf("open registration store: %w", rerr)
		}
		if err := s.setAside(path, data, err, true); err != nil {
			return nil, fmt.Errorf("open registration store: %w", err)
		}
		s.j, err = journal.Open(path, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open registration store: %w", err)
	}
	if err := s.loadJournal(); err != nil {
		_ = s.j.Close()
		return nil, fmt.Errorf("open registration store: %w", err)
	}
	if haveLegacy {
		if err := s.migrate(statePath, legacy); err != nil {
			_ = s.j.Close()
			return nil, fmt.Errorf("open registration store: %w", err)
		}
	}
	return s, nil
}

// loadStateFile reads an old state file: its valid registrations, whether
// there was one to migrate, and an error if it must not be touched.
func (s *Store) loadStateFile(path string) ([]Local, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read state: %w", err)
	}
	var state stateFile
	if err := decodeStrict(data, &state); err != nil {
		return nil, false, s.setAside(path, data, fmt.Errorf("cannot decode: %w", err), true)
	}
	switch {
	case state.Version > stateVersion:
		return nil, false, fmt.Errorf("state file %s has version %d; this l4lb reads version %d: it was written by a newer l4lb", path, state.Version, stateVersion)
	case state.Version != stateVersion:
		return nil, false, s.setAside(path, data, fmt.Errorf("version %d: want %d", state.Version, stateVersion), true)
	}
	var bad []error
	var out []Local
	seen := map[string]bool{}
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
		if seen[l.Key()] {
			bad = append(bad, fmt.Errorf("backend %d: %s is there twice; the first is kept", i, l.Key()))
			continue
		}
		seen[l.Key()] = true
		out = append(out, l)
	}
	if len(bad) > 0 {
		if err := s.setAside(path, data, errors.Join(bad...), false); err != nil {
			return nil, false, err
		}
	}
	return out, true, nil
}

// loadJournal fills keys from the journal. Records that are not valid
// registrations (any more) are deleted from it, after a copy of the file is
// set aside; a record kept under another key than its registration's (the
// key's rule changed) is moved to the right key.
func (s *Store) loadJournal() error {
	type rec struct {
		key string
		raw []byte
	}
	var recs []rec
	s.j.Range(func(k string, v []byte) bool { recs = append(recs, rec{k, v}); return true })
	slices.SortFunc(recs, func(a, b rec) int { return strings.Compare(a.key, b.key) })
	var bad []error
	var fix []journal.Op
	for _, r := range recs {
		e, err := decodeEntry(r.raw)
		if err == nil {
			var l Local
			if l, err = e.Parse(); err == nil {
				k := l.Key()
				if _, dup := s.keys[k]; dup {
					err = fmt.Errorf("%s is there twice; the first is kept", k)
				} else {
					s.keys[k] = struct{}{}
					if k != r.key {
						fix = append(fix, journal.Op{Key: k, Value: r.raw})
					}
				}
			}
		}
		if err != nil {
			bad = append(bad, fmt.Errorf("record %q: %w", r.key, err))
		}
		// The record's own key goes unless a registration lives there (this
		// one, or one moved there from another key).
		if _, kept := s.keys[r.key]; !kept {
			fix = append(fix, journal.Op{Key: r.key, Delete: true})
		}
	}
	if len(bad) > 0 {
		data, err := os.ReadFile(s.j.Path())
		if err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		if err := s.setAside(s.j.Path(), data, errors.Join(bad...), false); err != nil {
			return err
		}
	}
	if len(fix) > 0 {
		if err := s.j.Apply(fix, nil); err != nil {
			return fmt.Errorf("drop invalid registrations: %w", err)
		}
	}
	return nil
}

// migrate writes an old state file's registrations to the journal, in one
// batch, then renames the file: a crash in between migrates it again, which
// changes nothing.
func (s *Store) migrate(path string, locals []Local) error {
	ops := make([]journal.Op, 0, len(locals))
	for _, l := range locals {
		raw, err := json.Marshal(l.Entry())
		if err != nil {
			return fmt.Errorf("encode %s: %w", l.Key(), err)
		}
		ops = append(ops, journal.Op{Key: l.Key(), Value: raw})
	}
	if len(ops) > 0 {
		err := s.j.Apply(ops, func() {
			s.mu.Lock()
			for _, op := range ops {
				s.keys[op.Key] = struct{}{}
			}
			s.mu.Unlock()
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", path, err)
		}
	}
	migrated := filepath.Join(filepath.Dir(path), MigratedFile)
	if err := os.Rename(path, migrated); err != nil {
		return fmt.Errorf("migrate %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("migrate %s: %w", path, err)
	}
	s.log.Infof("migrated %d registrations from %s to %s; the old file is kept as %s", len(locals), path, s.j.Path(), migrated)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// setAside keeps a copy of a file that could not be loaded whole, as
// "<path>.bad-<UTC time>", and logs why. With move, the file itself goes
// (nothing of it was loaded); without, it stays.
func (s *Store) setAside(path string, data []byte, why error, move bool) error {
	aside := path + ".bad-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = path + ".bad-" + time.Now().UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(i)
	}
	if move {
		if err := os.Rename(path, aside); err != nil {
			return fmt.Errorf("state file %s is corrupt (%v) and cannot be moved aside: %w", path, why, err)
		}
		s.log.WithField("reason", why.Error()).Errorf("state file %s is corrupt: moved it to %s and started with no API registrations from it; re-register the backends, or fix the file and put it back while the agent is stopped", path, aside)
	} else {
		if err := atomicfile.Write(aside, data, nil); err != nil {
			return fmt.Errorf("state file %s has invalid registrations (%v) and cannot be copied aside: %w", path, why, err)
		}
		s.log.WithField("reason", why.Error()).Errorf("state file %s has invalid registrations: left them out and kept a copy of the file as %s", path, aside)
	}
	s.recovered = aside
	return nil
}

// Recovered returns the path where OpenStore set aside a state file it could
// not load whole, or "" if it loaded the file whole (or there was none).
func (s *Store) Recovered() string { return s.recovered }

// Path returns the journal's path.
func (s *Store) Path() string { return s.j.Path() }

// Put adds or replaces the registration with l's key and returns once the
// change is durable. created is true when the key was new. A Put of what is
// already there writes nothing. l is checked as Parse checks an Entry, and
// stored with its defaults filled in. On error nothing has changed.
func (s *Store) Put(l Local) (created bool, err error) {
	l, err = l.Entry().Parse()
	if err != nil {
		return false, fmt.Errorf("put registration: %w", err)
	}
	key := l.Key()
	raw, err := json.Marshal(l.Entry())
	if err != nil {
		return false, fmt.Errorf("put registration %s: %w", key, err)
	}
	if old, ok := s.j.Get(key); ok && bytes.Equal(old, raw) {
		return false, nil
	}
	err = s.j.Apply([]journal.Op{{Key: key, Value: raw}}, func() {
		s.mu.Lock()
		_, exists := s.keys[key]
		created = !exists
		s.keys[key] = struct{}{}
		s.mu.Unlock()
		if s.changed != nil {
			s.changed(key, &l)
		}
	})
	if err != nil {
		return false, fmt.Errorf("put registration %s: %w", key, err)
	}
	return created, nil
}

// Delete removes the registration with key and returns once the change is
// durable. found is false when there was none (and nothing is written). On
// error nothing has changed.
func (s *Store) Delete(key string) (found bool, err error) {
	s.mu.Lock()
	_, exists := s.keys[key]
	s.mu.Unlock()
	if !exists {
		return false, nil
	}
	err = s.j.Apply([]journal.Op{{Key: key, Delete: true}}, func() {
		s.mu.Lock()
		_, found = s.keys[key]
		delete(s.keys, key)
		s.mu.Unlock()
		if found && s.changed != nil {
			s.changed(key, nil)
		}
	})
	if err != nil {
		return false, fmt.Errorf("delete registration %s: %w", key, err)
	}
	return found, nil
}

// Get returns the registration with key (decoded from the journal).
func (s *Store) Get(key string) (Local, bool) {
	raw, ok := s.j.Get(key)
	if !ok {
		return Local{}, false
	}
	l, err := parseStored(raw)
	if err != nil {
		// OpenStore dropped every record that does not parse, and Put
		// writes only parsed ones: this is a bug, not bad input.
		s.log.WithError(err).WithField("backend", key).Error("stored registration does not decode")
		return Local{}, false
	}
	return l, true
}

// parseStored decodes a registration as Put stored it.
func parseStored(raw []byte) (Local, error) {
	e, err := decodeEntry(raw)
	if err != nil {
		return Local{}, err
	}
	return e.Parse()
}

// Len returns how many registrations the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

// List returns every registration, sorted by key, decoded from the
// journal. It costs O(n log n): call it to show or rebuild, not per change.
func (s *Store) List() []Local {
	var out []Local
	s.j.Range(func(key string, raw []byte) bool {
		l, err := parseStored(raw)
		if err != nil {
			s.log.WithError(err).WithField("backend", key).Error("stored registration does not decode")
			return true
		}
		out = append(out, l)
		return true
	})
	sortLocals(out)
	return out
}

// Close closes the journal; later Puts and Deletes fail. Close is
// idempotent.
func (s *Store) Close() error { return s.j.Close() }
