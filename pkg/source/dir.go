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

	// mu guards files, current, duplicates, badLoads and missing, and
	// serialises scans.
	mu         sync.Mutex
	files      map[string]*serviceFile // by path
	current    []Local
	duplicates []string
	badLoads   uint64
	missing    bool
}

// serviceFile is what a Dir knows of one file.
type serviceFile struct {
	content []byte  // as last read
	good    []Local // from the last good content; nil if none was good
	problem string  // why the last content is bad; "" if it is good
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
		cfg:   cfg,
		log:   log.WithField("component", "source"),
		files: map[string]*serviceFile{},
	}
}

// Run watches the directory until ctx ends. It calls onChange with the
// directory's registrations, sorted by key, once after the first read (even
// if there are none) and then each time they change. onChange is called from
// Run's goroutine, one call at a time; it gets a slice of its own. Run
// returns nil when ctx ends, or an error if it cannot watch at all.
func (d *Dir) Run(ctx context.Context, onChange func([]Local)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch services directory %s: %w", d.cfg.Path, err)
	}
	defer w.Close()
	watchErr := d.watch(w, nil)

	set, _ := d.Scan()
	onChange(set)

	rescan := time.NewTicker(d.cfg.Rescan)
	defer rescan.Stop()
	settle := time.NewTimer(d.cfg.Settle)
	settle.Stop()
	settling := false
	scan := func() {
		if set, changed := d.Scan(); changed {
			onChange(set)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch services directory %s: watcher closed", d.cfg.Path)
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
			if !settling {
				settling = true
				settle.Reset(d.cfg.Settle)
			}
		case <-settle.C:
			settling = false
			scan()
		case <-rescan.C:
			// The watch ends when the directory is removed; adding it
			// again is harmless when it is still there.
			watchErr = d.watch(w, watchErr)
			scan()
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
// reported again to Run's onChange, so its caller must apply it.
func (d *Dir) Scan() (set []Local, changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()

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
		return slices.Clone(d.current), false
	default:
		if d.missing {
			d.log.Infof("services directory %s exists now", d.cfg.Path)
		}
		d.missing = false
	}

	seen := map[string]bool{}
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
	for path, f := range d.files {
		if !seen[path] {
			delete(d.files, path)
			d.log.Infof("services file %s is gone: withdrew its %d backends", path, len(f.good))
		}
	}

	set, duplicates := d.collect()
	if !slices.Equal(duplicates, d.duplicates) {
		for _, dup := range duplicates {
			if !slices.Contains(d.duplicates, dup) {
				d.log.WithField("reason", dup).Warn("duplicate registration in the services directory")
			}
		}
		d.duplicates = duplicates
	}
	changed = !slices.Equal(set, d.current)
	d.current = set
	return slices.Clone(set), changed
}

// load reads one file into d.files and reports whether it (still) exists.
// d.mu is held.
func (d *Dir) load(path string) bool {
	data, err := readServiceFile(path, d.cfg.MaxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return false // gone between the listing and the read
	}
	f, known := d.files[path]
	if !known {
		f = &serviceFile{}
		d.files[path] = f
	}
	var locals []Local
	if err == nil {
		if known && f.content != nil && bytes.Equal(data, f.content) {
			return true // unchanged since the last read
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
	f.good = locals
	d.log.Infof("loaded services file %s: %d backends", path, len(locals))
	return true
}

// readServiceFile reads a regular file of at most max bytes.
func readServiceFile(path string, max int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(fh, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("longer than %d bytes: %w", max, ErrTooLarge)
	}
	return data, nil
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

// collect joins the good backends of every file, earlier file names first,
// and says which registrations lost to an earlier file. d.mu is held.
func (d *Dir) collect() (set []Local, duplicates []string) {
	from := map[string]string{} // key -> path
	for _, path := range slices.Sorted(maps.Keys(d.files)) {
		for _, l := range d.files[path].good {
			k := l.Key()
			if first, dup := from[k]; dup {
				duplicates = append(duplicates, fmt.Sprintf("%s: in %s and %s; %s wins", k, first, path, first))
				continue
			}
			from[k] = path
			set = append(set, l)
		}
	}
	sortLocals(set)
	return set, duplicates
}

// Current returns the registrations of the latest Scan, sorted by key.
func (d *Dir) Current() []Local {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.current)
}

// Stats describes the latest Scan.
func (d *Dir) Stats() DirStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := DirStats{
		Path:       d.cfg.Path,
		Missing:    d.missing,
		Files:      len(d.files),
		Backends:   len(d.current),
		BadFiles:   map[string]string{},
		BadLoads:   d.badLoads,
		Duplicates: slices.Clone(d.duplicates),
	}
	for path, f := range d.files {
		if f.problem != "" {
			s.BadFiles[path] = f.problem
		}
	}
	return s
}
