package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"
)

// Defaults of a DirConfig's zero fields.
const (
	DefaultRescan      = 5 * time.Second
	DefaultSettle      = 100 * time.Millisecond
	DefaultMaxFileSize = 1 << 20
)

// DirConfig configures a Dir.
type DirConfig struct {
	// Path is the services directory, e.g. /etc/l4lb/services.d.
	Path string
	// Rescan is how often the whole directory is read again, whatever the
	// change notifications said (they can be missed); DefaultRescan when 0.
	Rescan time.Duration
	// Settle is how long after a change notification the directory is read,
	// so that a burst of notifications (an editor saving) gives one read;
	// DefaultSettle when 0.
	Settle time.Duration
	// MaxFileSize is the largest file read; a larger one is a bad file.
	// DefaultMaxFileSize when 0.
	MaxFileSize int64
	// Log gets a line for each file that is loaded, goes bad or goes away;
	// logrus' standard logger when nil.
	Log logrus.FieldLogger
}

// Dir reads the registrations of a services directory: each file named
// "*.json" (not starting with ".") directly in it holds one Entry, a JSON
// array of Entries, or {"backends": [Entries]}. Files may be symbolic links.
//
// The rules:
//   - A file is good or bad as a whole: if any of its entries is invalid, or
//     two of them have the same key, none of them is taken from it this time.
//   - A bad file is logged with its path and reason (once per content),
//     counted in Stats, and skipped; the other files keep working.
//   - A file that turns bad after being good keeps its last good backends
//     until it is fixed or removed, so a half-written save does not withdraw
//     them. A file that was never good (since the agent started) gives none.
//   - A removed file withdraws its backends.
//   - When two files register the same key, the file whose name sorts first
//     wins, and the other's registration is reported in Stats.Duplicates.
//   - A missing directory is an empty one (logged); it is watched once it
//     appears.
type Dir struct {
	cfg DirConfig
	log logrus.FieldLogger

	// mu guards every field below, and serialises scans.
	mu    sync.Mutex
	files map[string]*serviceFile // by path
	// providers lists, for each key, the files whose good backends have it,
	// sorted by path: the first wins.
	providers map[string][]string
	current   map[string]Local    // key -> the winning registration
	sorted    []Local             // current, sorted by key; nil when stale
	dupDescs  map[string][]string // key -> what Stats().Duplicates says of it
	badLoads  uint64
	reads     uint64 // files read, for tests
	missing   bool
	// version counts changes of current; scanSeen is the version the last
	// Scan reported.
	version, scanSeen uint64
	// delta collects the changes RunDelta has not reported yet; nil when
	// no RunDelta runs.
	delta *dirDelta
}

// dirDelta is how current changed since RunDelta last reported.
type dirDelta struct {
	set     map[string]Local
	removed map[string]bool
}

// serviceFile is what a Dir knows of one file.
type serviceFile struct {
	content   []byte   // as last read; nil after a read error
	stat      fileStat // of the content as last read
	racy      bool     // stat cannot prove the next change (see racyWindow)
	good      []Local  // from the last good content; nil if none was good
	goodByKey map[string]Local
	problem   string // why the last content is bad; "" if it is good
}

// fileStat is what stat says of a file's identity and content: when any of
// it differs, the file is read again.
type fileStat struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

// racyWindow: a file whose modification time was less than this before it
// was read may change again within the file system's timestamp granularity
// without stat showing it, so it is read again on the next scan (git's
// "racy" rule).
const racyWindow = 2 * time.Second

func statOf(fi fs.FileInfo) fileStat {
	st := fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
		st.ctime = sys.Ctim.Nano()
	}
	return st
}

// DirStats describes a Dir's latest read, for people and metrics.
type DirStats struct {
	Path string
	// Missing is true when the directory does not exist.
	Missing bool
	// Files is how many service files there are, good or bad.
	Files int
	// Backends is how many registrations the directory gives.
	Backends int
	// BadFiles maps the path of each file that is bad now to why.
	BadFiles map[string]string
	// BadLoads counts every time a file's new content was found bad, since
	// the Dir was made.
	BadLoads uint64
	// Duplicates says, for each registration left out because an earlier
	// file has its key, which files.
	Duplicates []string
}

// NewDir returns a Dir for cfg.Path. It reads nothing until Scan or Run.
func NewDir(cfg DirConfig) *Dir {
	if cfg.Rescan <= 0 {
		cfg.Rescan = DefaultRescan
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = DefaultMaxFileSize
	}
	cfg.Path = filepath.Clean(cfg.Path)
	log := cfg.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Dir{
		cfg:       cfg,
		log:       log.WithField("component", "source"),
		files:     map[string]*serviceFile{},
		providers: map[string][]string{},
		current:   map[string]Local{},
		dupDescs:  map[string][]string{},
	}
}

// Run watches the directory until ctx ends. It calls onChange with the
// directory's registrations, sorted by key, once after the first read (even
// if there are none) and then each time they change. onChange is called from
// Run's goroutine, one call at a time; it gets a slice of its own. Run
// returns nil when ctx ends, or an error if it cannot watch at all.
func (d *Dir) Run(ctx context.Context, onChange func([]Local)) error {
	return d.loop(ctx, func() {
		set, _ := d.Scan()
		onChange(set)
	}, func(paths []string) {
		d.mu.Lock()
		d.scanPathsLocked(paths)
		changed := d.version != d.scanSeen
		d.scanSeen = d.version
		set := slices.Clone(d.sortedLocked())
		d.mu.Unlock()
		if changed {
			onChange(set)
		}
	})
}

// RunDelta is Run reporting by difference: onChange gets the registrations
// added or replaced (set, sorted by key) and the keys (Local.Key) removed
// since its previous call. The first call carries every registration (even
// none) and no removal. A read that changes one file reports only what
// changed in it (and in the registrations it shadowed or uncovered), and a
// rescan that finds no file changed reads no file and reports nothing.
// Applying every call in order to an empty map gives Current. A key may be
// reported removed that the previous calls never set (it came and went
// between two reads). Scan calls made meanwhile do not take changes away
// from RunDelta. One RunDelta at a time per Dir.
func (d *Dir) RunDelta(ctx context.Context, onChange func(set []Local, removed []string)) error {
	defer func() {
		d.mu.Lock()
		d.delta = nil
		d.mu.Unlock()
	}()
	return d.loop(ctx, func() {
		d.mu.Lock()
		d.scanLocked()
		set := slices.Clone(d.sortedLocked())
		d.delta = &dirDelta{set: map[string]Local{}, removed: map[string]bool{}}
		d.mu.Unlock()
		onChange(set, nil)
	}, func(paths []string) {
		if set, removed, changed := d.scanDelta(paths); changed {
			onChange(set, removed)
		}
	})
}

// scanDelta reads the directory (only paths, when not nil) and takes the
// changes RunDelta has not reported yet.
func (d *Dir) scanDelta(paths []string) (set []Local, removed []string, changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.scanPathsLocked(paths)
	if d.delta == nil || len(d.delta.set)+len(d.delta.removed) == 0 {
		return nil, nil, false
	}
	set = make([]Local, 0, len(d.delta.set))
	for _, l := range d.delta.set {
		set = append(set, l)
	}
	sortLocals(set)
	removed = slices.Sorted(maps.Keys(d.delta.removed))
	d.delta = &dirDelta{set: map[string]Local{}, removed: map[string]bool{}}
	return set, removed, true
}

// loop watches the directory until ctx ends: first runs once at the start,
// scan after each settled burst of notifications, with the paths they named,
// and after each rescan tick or lost notification with nil (read the whole
// directory).
func (d *Dir) loop(ctx context.Context, first func(), scan func(paths []string)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch services directory %s: %w", d.cfg.Path, err)
	}
	defer w.Close()
	watchErr := d.watch(w, nil)

	first()

	rescan := time.NewTicker(d.cfg.Rescan)
	defer rescan.Stop()
	settle := time.NewTimer(d.cfg.Settle)
	settle.Stop()
	settling := false
	dirty := map[string]bool{} // paths named by notifications since the last scan
	full := false              // the next scan reads the whole directory
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch services directory %s: watcher closed", d.cfg.Path)
			}
			if filepath.Clean(ev.Name) == d.cfg.Path || filepath.Dir(ev.Name) != d.cfg.Path || len(dirty) >= maxDirty {
				full = true // the directory itself, or too much to name
			} else {
				dirty[ev.Name] = true
			}
			if !settling {
				settling = true
				settle.Reset(d.cfg.Settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch services directory %s: watcher closed", d.cfg.Path)
			}
			d.log.WithField("reason", err.Error()).Warnf("watching services directory %s: notifications may have been lost; reading it again", d.cfg.Path)
			full = true
			if !settling {
				settling = true
				settle.Reset(d.cfg.Settle)
			}
		case <-settle.C:
			settling = false
			if full {
				scan(nil)
			} else {
				scan(slices.Collect(maps.Keys(dirty)))
			}
			full = false
			clear(dirty)
		case <-rescan.C:
			// The watch ends when the directory is removed; adding it
			// again is harmless when it is still there.
			watchErr = d.watch(w, watchErr)
			scan(nil)
			// What was named since is read again at the settle: harmless.
		}
	}
}

// watch asks w to watch the directory and logs when that starts or stops
// working; prev is the previous attempt's error.
func (d *Dir) watch(w *fsnotify.Watcher, prev error) error {
	err := w.Add(d.cfg.Path)
	switch {
	case err != nil && prev == nil:
		d.log.WithField("reason", err.Error()).Warnf("cannot watch services directory %s; reading it every %s", d.cfg.Path, d.cfg.Rescan)
	case err == nil && prev != nil:
		d.log.Infof("watching services directory %s", d.cfg.Path)
	}
	return err
}

// Scan reads the directory once and returns its registrations, sorted by
// key, and whether they differ from the previous Scan's. It may be called
// while Run runs (say, on SIGHUP); a change that such a call reports is not
// reported again to Run's onChange, so its caller must apply it (RunDelta
// still reports it). Files whose stat is unchanged since their last read
// are not read again.
func (d *Dir) Scan() (set []Local, changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.scanLocked()
	changed = d.version != d.scanSeen
	d.scanSeen = d.version
	return slices.Clone(d.sortedLocked()), changed
}

// maxDirty is how many paths notifications may name before the next scan
// reads the whole directory instead.
const maxDirty = 4096

// scanPathsLocked reads the files at paths, as notifications named them,
// and updates current by difference: a path that no longer exists (or no
// longer names a service file) withdraws its backends. With paths nil, or
// while the directory is missing, it reads the whole directory. d.mu is
// held.
func (d *Dir) scanPathsLocked(paths []string) {
	if paths == nil || d.missing {
		d.scanLocked()
		return
	}
	for _, path := range paths {
		name := filepath.Base(path)
		if filepath.Dir(path) != d.cfg.Path || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		if !d.load(path) {
			d.forget(path)
		}
	}
}

// forget withdraws the backends of a file that is gone; d.mu is held.
func (d *Dir) forget(path string) {
	f, known := d.files[path]
	if !known {
		return
	}
	d.setGood(path, nil)
	delete(d.files, path)
	d.log.Infof("services file %s is gone: withdrew its %d backends", path, len(f.good))
}

// scanLocked reads the directory's changed files and updates current by
// difference; d.mu is held.
func (d *Dir) scanLocked() {
	dirEntries, err := os.ReadDir(d.cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !d.missing {
			d.log.Warnf("services directory %s does not exist: no backends from it until it does", d.cfg.Path)
		}
		d.missing = true
		dirEntries = nil
	case err != nil:
		// Cannot tell what is there: keep what we had.
		d.log.WithField("reason", err.Error()).Errorf("cannot read services directory %s; keeping its last backends", d.cfg.Path)
		return
	default:
		if d.missing {
			d.log.Infof("services directory %s exists now", d.cfg.Path)
		}
		d.missing = false
	}

	seen := make(map[string]bool, len(dirEntries))
	for _, de := range dirEntries {
		name := de.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(d.cfg.Path, name)
		if d.load(path) {
			seen[path] = true
		}
	}
	for path := range d.files {
		if !seen[path] {
			d.forget(path)
		}
	}
}

// load reads one file into d.files, if its stat says it may have changed,
// and reports whether it (still) exists. d.mu is held.
func (d *Dir) load(path string) bool {
	fi, statErr := os.Stat(path)
	if errors.Is(statErr, fs.ErrNotExist) {
		return false
	}
	f, known := d.files[path]
	if known && statErr == nil && f.content != nil && !f.racy && f.stat == statOf(fi) {
		return true // unchanged since the last read
	}
	d.reads++
	data, st, readAt, err := readServiceFile(path, d.cfg.MaxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return false // gone between the listing and the read
	}
	if !known {
		f = &serviceFile{}
		d.files[path] = f
	}
	var locals []Local
	if err == nil {
		f.stat = st
		f.racy = readAt.Sub(time.Unix(0, st.mtime)) < racyWindow
		if known && f.content != nil && bytes.Equal(data, f.content) {
			return true // the same content
		}
		f.content = data
		locals, err = parseServiceFile(data)
	} else {
		f.content = nil
	}
	if err != nil {
		problem := err.Error()
		if problem == f.problem && f.content == nil {
			return true // the same read error as last time: already said
		}
		f.problem = problem
		d.badLoads++
		kept := "skipped it"
		if f.good != nil {
			kept = fmt.Sprintf("kept its last good %d backends", len(f.good))
		}
		d.log.WithField("reason", problem).Errorf("bad services file %s: %s", path, kept)
		return true
	}
	f.problem = ""
	d.setGood(path, locals)
	d.log.Infof("loaded services file %s: %d backends", path, len(locals))
	return true
}

// setGood makes locals the good backends of the file at path (nil: none)
// and updates the winners of the keys it had or has. d.mu is held.
func (d *Dir) setGood(path string, locals []Local) {
	f := d.files[path]
	old := f.goodByKey
	idx := make(map[string]Local, len(locals))
	for _, l := range locals {
		idx[l.Key()] = l
	}
	f.good, f.goodByKey = locals, idx
	if locals == nil {
		f.goodByKey = nil
	}
	for k := range old {
		if _, still := idx[k]; !still {
			ps := d.providers[k]
			if i, ok := slices.BinarySearch(ps, path); ok {
				ps = slices.Delete(ps, i, i+1)
			}
			if len(ps) == 0 {
				delete(d.providers, k)
			} else {
				d.providers[k] = ps
			}
			d.refresh(k)
		}
	}
	for k, l := range idx {
		if prev, had := old[k]; had && prev == l {
			continue
		}
		ps := d.providers[k]
		if i, ok := slices.BinarySearch(ps, path); !ok {
			d.providers[k] = slices.Insert(ps, i, path)
		}
		d.refresh(k)
	}
}

// refresh sets current[k] to the registration of the first file that has
// k, or removes it, recording the change; d.mu is held.
func (d *Dir) refresh(k string) {
	ps := d.providers[k]
	prev, had := d.current[k]
	if len(ps) == 0 {
		delete(d.dupDescs, k)
		if had {
			delete(d.current, k)
			d.changed(k, Local{}, false)
		}
		return
	}
	winner := d.files[ps[0]].goodByKey[k]
	if !had || prev != winner {
		d.current[k] = winner
		d.changed(k, winner, true)
	}
	var descs []string
	for _, p := range ps[1:] {
		descs = append(descs, fmt.Sprintf("%s: in %s and %s; %s wins", k, ps[0], p, ps[0]))
	}
	for _, desc := range descs {
		if !slices.Contains(d.dupDescs[k], desc) {
			d.log.WithField("reason", desc).Warn("duplicate registration in the services directory")
		}
	}
	if descs == nil {
		delete(d.dupDescs, k)
	} else {
		d.dupDescs[k] = descs
	}
}

// changed records that key's registration is now l (present) or gone.
func (d *Dir) changed(key string, l Local, present bool) {
	d.version++
	d.sorted = nil
	if d.delta == nil {
		return
	}
	if present {
		d.delta.set[key] = l
		delete(d.delta.removed, key)
	} else {
		delete(d.delta.set, key)
		d.delta.removed[key] = true
	}
}

// sortedLocked returns current sorted by key, building it when stale;
// d.mu is held. The caller must not change it.
func (d *Dir) sortedLocked() []Local {
	if d.sorted == nil {
		d.sorted = make([]Local, 0, len(d.current))
		for _, l := range d.current {
			d.sorted = append(d.sorted, l)
		}
		sortLocals(d.sorted)
	}
	return d.sorted
}

// readServiceFile reads a regular file of at most max bytes, and returns
// its stat taken before the read and when the read began.
func readServiceFile(path string, max int64) ([]byte, fileStat, time.Time, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fileStat{}, time.Time{}, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, fileStat{}, time.Time{}, err
	}
	readAt := time.Now()
	if !fi.Mode().IsRegular() {
		return nil, fileStat{}, readAt, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(fh, max+1))
	if err != nil {
		return nil, fileStat{}, readAt, err
	}
	if int64(len(data)) > max {
		return nil, fileStat{}, readAt, fmt.Errorf("longer than %d bytes: %w", max, ErrTooLarge)
	}
	return data, statOf(fi), readAt, nil
}

// parseServiceFile decodes and checks one file's content: all its entries or
// an error.
func parseServiceFile(data []byte) ([]Local, error) {
	entries, err := DecodeServicesFile(data)
	if err != nil {
		return nil, err
	}
	locals := make([]Local, 0, len(entries))
	index := map[string]int{}
	for i, e := range entries {
		l, err := e.Parse()
		if err != nil {
			if len(entries) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if j, dup := index[l.Key()]; dup {
			return nil, fmt.Errorf("entries %d and %d both register %s", j, i, l.Key())
		}
		index[l.Key()] = i
		locals = append(locals, l)
	}
	return locals, nil
}

// Current returns the registrations of the latest Scan, sorted by key.
func (d *Dir) Current() []Local {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.sortedLocked())
}

// Stats describes the latest Scan.
func (d *Dir) Stats() DirStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := DirStats{
		Path:     d.cfg.Path,
		Missing:  d.missing,
		Files:    len(d.files),
		Backends: len(d.current),
		BadFiles: map[string]string{},
		BadLoads: d.badLoads,
	}
	for _, descs := range d.dupDescs {
		s.Duplicates = append(s.Duplicates, descs...)
	}
	slices.Sort(s.Duplicates)
	for path, f := range d.files {
		if f.problem != "" {
			s.BadFiles[path] = f.problem
		}
	}
	return s
}

// Files returns the files that register key, the one that wins first; none
// when the directory does not have it.
func (d *Dir) Files(key string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.providers[key])
}
