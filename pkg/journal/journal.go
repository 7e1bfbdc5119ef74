package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/atomicfile"
)

// Errors that Open and Apply return (wrapped).
var (
	// ErrNotJournal: the file exists but does not start with a journal's
	// header. Open leaves it untouched; the caller may move it aside.
	ErrNotJournal = errors.New("not a journal")
	// ErrNewer: the file was written by a newer format or a newer version
	// of its contents than the caller reads. Open leaves it untouched.
	ErrNewer = errors.New("written by a newer version")
	// ErrClosed: Apply after Close.
	ErrClosed = errors.New("journal is closed")
)

// DefaultCompactMin is Options.CompactMin's default.
const DefaultCompactMin = 1 << 20

// File is the append handle a Journal writes through; *os.File implements
// it. Options.WrapFile lets tests inject faults.
type File interface {
	Write(p []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Options configures Open.
type Options struct {
	// Kind names what the journal holds ("l4lb registrations"); a file of
	// another kind is refused.
	Kind string
	// Version is the version of the values' format the caller writes. A
	// file written with a higher version is refused (ErrNewer); one written
	// with a lower version opens, and Version() tells the caller so that it
	// can migrate the values. A journal created by Open gets this version.
	Version uint32
	// CompactMin is the log size below which it is never compacted;
	// DefaultCompactMin when 0. Above it, the log is rewritten with only
	// its live records when it holds more than twice their size.
	CompactMin int64
	// Log gets a line for each torn tail cut off and each compaction that
	// fails; logrus' standard logger when nil.
	Log logrus.FieldLogger
	// WrapFile, if set, wraps every append handle the journal opens (tests).
	WrapFile func(File) File
}

// Stats counts what a Journal has done since Open.
type Stats struct {
	// Size is the log file's size in bytes; Live the bytes that a freshly
	// compacted log would take.
	Size, Live int64
	// Keys is how many keys are live.
	Keys int
	// Batches is how many group commits were written; Syncs how many
	// fsyncs (of files and directories) the journal made, compaction
	// included; Compactions how many compactions succeeded.
	Batches, Syncs, Compactions uint64
}

// Journal is a crash-safe, append-only, keyed log of JSON (or any) values:
// the state is the last value put for each key not deleted since. Every
// Apply is durable (written and fsynced) before it returns; concurrent
// Applies share one write and one fsync (group commit). The log is
// compacted, rewritten with only its live records, once it holds more than
// twice their size, so an operation costs O(1) amortised. Its methods are
// safe for concurrent use.
type Journal struct {
	path string
	opts Options
	log  logrus.FieldLogger
	hdr  header

	recovered string // where a torn tail was kept at Open, or ""

	kick    chan struct{} // has an item when pending is not nil
	stop    chan struct{} // closed by Close
	stopped chan struct{} // closed when the writer has ended

	// mu guards live, pending, closed and broken. The writer goroutine is
	// the only one that changes live (under mu) and the only one that
	// touches f, size and liveSize.
	mu      sync.RWMutex
	live    map[string][]byte
	pending *batch
	closed  bool
	broken  error // a write failed and could not be undone: every later Apply fails

	f              File
	size, liveSize int64
	noCompactBelow int64

	batches, syncs, compactions atomic.Uint64
	statSize, statLive          atomic.Int64
}

// batch is the group of Applies one write commits.
type batch struct {
	buf     []byte
	entries []entry
	done    chan struct{}
	err     error
}

type entry struct {
	ops  []Op
	then func()
}

// Open opens the journal at path, creating it (and nothing else) if it does
// not exist or is empty, and reads its records. A torn or corrupt tail (a
// crash in the middle of a write) is cut off: the bytes are kept in
// "<path>.torn-<UTC time>" (see Recovered), the cut is logged, and the
// state is that of the records before it.
func Open(path string, opts Options) (*Journal, error) {
	if opts.CompactMin <= 0 {
		opts.CompactMin = DefaultCompactMin
	}
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	j := &Journal{
		path: path,
		opts: opts,
		log:  log.WithField("component", "journal"),
		live: map[string][]byte{},
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),

		stopped: make(chan struct{}),
	}
	if leftovers, err := filepath.Glob(path + ".compact-*"); err == nil {
		for _, f := range leftovers {
			if err := os.Remove(f); err != nil {
				j.log.WithError(err).Warnf("cannot remove leftover compaction file %s", f)
			}
		}
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && len(data) == 0:
		j.hdr = header{format: formatVersion, version: opts.Version, kind: opts.Kind}
		data = appendHeader(nil, j.hdr)
		if err := atomicfile.Write(path, data, nil); err != nil {
			return nil, fmt.Errorf("create journal %s: %w", path, err)
		}
		j.syncs.Add(2)
	case err != nil:
		return nil, fmt.Errorf("read journal: %w", err)
	}
	hdr, hdrLen, err := decodeHeader(data)
	switch {
	case err != nil:
		return nil, fmt.Errorf("journal %s: %w: %v", path, ErrNotJournal, err)
	case hdr.format > formatVersion:
		return nil, fmt.Errorf("journal %s has format %d; this l4lb reads format %d: %w", path, hdr.format, formatVersion, ErrNewer)
	case hdr.kind != opts.Kind:
		return nil, fmt.Errorf("journal %s holds %q, not %q: %w", path, hdr.kind, opts.Kind, ErrNotJournal)
	case hdr.version > opts.Version:
		return nil, fmt.Errorf("journal %s has version %d; this l4lb reads version %d: %w", path, hdr.version, opts.Version, ErrNewer)
	}
	j.hdr = hdr
	j.liveSize = int64(hdrLen)
	good, why := decodeRecords(data[hdrLen:], func(op Op) { j.applyOp(op) })
	j.size = int64(hdrLen + good)
	if why != nil {
		if err := j.cutTail(data, why); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	j.f = j.wrap(f)
	j.publishStats()
	go j.writer()
	return j, nil
}

// cutTail keeps the bytes after j.size aside and truncates the file there.
func (j *Journal) cutTail(data []byte, why error) error {
	tail := data[j.size:]
	aside := j.path + ".torn-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = j.path + ".torn-" + time.Now().UTC().Format("20060102T150405Z") + "-" + strconv.Itoa(i)
	}
	if err := atomicfile.Write(aside, tail, nil); err != nil {
		return fmt.Errorf("journal %s has a torn tail at byte %d (%v) that cannot be kept aside: %w", j.path, j.size, why, err)
	}
	if err := os.Truncate(j.path, j.size); err != nil {
		return fmt.Errorf("journal %s: cut the torn tail at byte %d: %w", j.path, j.size, err)
	}
	if err := syncPath(j.path); err != nil {
		return fmt.Errorf("journal %s: cut the torn tail at byte %d: %w", j.path, j.size, err)
	}
	j.recovered = aside
	j.log.WithField("reason", why.Error()).Warnf("journal %s: cut off %d bytes after byte %d that do not read as whole records (a write interrupted by a crash, never acknowledged); kept them in %s", j.path, len(tail), j.size, aside)
	return nil
}

func (j *Journal) wrap(f File) File {
	if j.opts.WrapFile != nil {
		return j.opts.WrapFile(f)
	}
	return f
}

// applyOp applies one durable op to live; mu is held (or j not shared yet).
func (j *Journal) applyOp(op Op) {
	if old, ok := j.live[op.Key]; ok {
		j.liveSize -= opSize(Op{Key: op.Key, Value: old})
	}
	if op.Delete {
		delete(j.live, op.Key)
		return
	}
	j.live[op.Key] = bytes.Clone(op.Value)
	j.liveSize += opSize(op)
}

// Path returns the journal file's path.
func (j *Journal) Path() string { return j.path }

// Version returns the version in the file's header: Options.Version, or
// lower for a file an older version wrote.
func (j *Journal) Version() uint32 { return j.hdr.version }

// Recovered returns where Open kept a torn tail it cut off, or "".
func (j *Journal) Recovered() string { return j.recovered }

// Put sets key to value, durably.
func (j *Journal) Put(key string, value []byte) error {
	return j.Apply([]Op{{Key: key, Value: value}}, nil)
}

// Delete removes key, durably. A record is written even if key is not
// live.
func (j *Journal) Delete(key string) error {
	return j.Apply([]Op{{Key: key, Delete: true}}, nil)
}

// Apply writes ops and returns once they are durable, or with the error
// that kept them from being so: then none of them is applied and the file
// is truncated back to what it was. If even that fails, the journal is
// broken: the failed ops may or may not be found in the log by the next
// Open, and every later Apply is refused. The ops of concurrent Applies are written in one batch with
// one fsync. Once the ops are durable they are applied to the journal's
// state, in log order, and then, if not nil, is called right after them,
// before any later op is applied: a caller that mirrors the state updates
// its mirror in then, and so sees every change in log order. then must not
// call j's methods. After a crash during Apply, any prefix of its ops may
// be in the log. Apply of no ops does nothing (then is not called).
func (j *Journal) Apply(ops []Op, then func()) error {
	if len(ops) == 0 {
		return nil
	}
	var buf []byte
	for i := range ops {
		if len(ops[i].Key)+len(ops[i].Value) > MaxRecord {
			return fmt.Errorf("journal %s: record for %q is larger than %d bytes", j.path, ops[i].Key, MaxRecord)
		}
		buf = appendOp(buf, ops[i])
	}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	if j.broken != nil {
		j.mu.Unlock()
		return j.broken
	}
	b := j.pending
	if b == nil {
		b = &batch{done: make(chan struct{})}
		j.pending = b
	}
	b.buf = append(b.buf, buf...)
	b.entries = append(b.entries, entry{ops: ops, then: then})
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	<-b.done
	return b.err
}

// writer commits batches until Close.
func (j *Journal) writer() {
	defer close(j.stopped)
	for {
		select {
		case <-j.kick:
		case <-j.stop:
			j.commitPending() // Applies that raced with Close
			return
		}
		j.commitPending()
	}
}

// commitPending writes the pending batches and compacts when due.
func (j *Journal) commitPending() {
	for {
		j.mu.Lock()
		b := j.pending
		j.pending = nil
		j.mu.Unlock()
		if b == nil {
			return
		}
		err := j.write(b.buf)
		j.mu.Lock()
		if err == nil {
			for _, e := range b.entries {
				for _, op := range e.ops {
					j.applyOp(op)
				}
				if e.then != nil {
					e.then()
				}
			}
		} else {
			b.err = fmt.Errorf("journal %s: %w", j.path, err)
		}
		j.mu.Unlock()
		j.publishStats()
		close(b.done)
		if err == nil && j.size > j.opts.CompactMin && j.size > 2*j.liveSize && j.size >= j.noCompactBelow {
			j.compact()
		}
	}
}

// write appends buf and fsyncs; on failure it truncates the file back.
func (j *Journal) write(buf []byte) error {
	_, err := j.f.Write(buf)
	if err == nil {
		err = j.f.Sync()
		j.syncs.Add(1)
	}
	if err == nil {
		j.size += int64(len(buf))
		j.batches.Add(1)
		return nil
	}
	// Undo: the log must not keep records its callers were told failed.
	if terr := j.f.Truncate(j.size); terr != nil {
		j.fail(fmt.Errorf("write failed (%v) and cannot be undone: %w", err, terr))
	} else if serr := j.f.Sync(); serr != nil {
		j.fail(fmt.Errorf("write failed (%v) and its undoing cannot be synced: %w", err, serr))
	}
	return fmt.Errorf("write: %w", err)
}

// fail marks the journal broken.
func (j *Journal) fail(err error) {
	j.mu.Lock()
	if j.broken == nil {
		j.broken = fmt.Errorf("journal %s: %w; reopen it", j.path, err)
		j.log.WithField("reason", err.Error()).Errorf("journal %s is broken: every later write fails until the agent restarts", j.path)
	}
	j.mu.Unlock()
}

// compact rewrites the log with only its live records: a new file is
// written, fsynced and renamed over the log, and the directory fsynced.
// Only the writer calls it, so live does not change meanwhile.
func (j *Journal) compact() {
	buf := make([]byte, 0, j.liveSize)
	buf = appendHeader(buf, j.hdr)
	for k, v := range j.live {
		buf = appendOp(buf, Op{Key: k, Value: v})
	}
	tmp := j.path + ".compact-tmp"
	if err := writeSynced(tmp, buf); err != nil {
		_ = os.Remove(tmp) // best effort: Open removes leftovers too
		j.noCompactBelow = j.size + j.liveSize
		j.log.WithField("reason", err.Error()).Warnf("journal %s: compaction failed; the log keeps growing until the next try", j.path)
		return
	}
	j.syncs.Add(1)
	if err := os.Rename(tmp, j.path); err != nil {
		_ = os.Remove(tmp)
		j.noCompactBelow = j.size + j.liveSize
		j.log.WithField("reason", err.Error()).Warnf("journal %s: compaction failed; the log keeps growing until the next try", j.path)
		return
	}
	// From here on the old file is gone: writes must go to the new one.
	_ = j.f.Close() // the old inode; nothing of it is needed
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		j.fail(fmt.Errorf("reopen after compaction: %w", err))
		j.f = closedFile{}
		return
	}
	j.f = j.wrap(f)
	if err := syncPath(filepath.Dir(j.path)); err != nil {
		// The records are in the new file, whole; only the rename may not
		// survive a crash, and then the old log, whole too, is read.
		j.log.WithField("reason", err.Error()).Warnf("journal %s: cannot sync the directory after compaction", j.path)
	}
	j.syncs.Add(1)
	j.size = int64(len(buf))
	j.noCompactBelow = 0
	j.compactions.Add(1)
	j.publishStats()
}

// closedFile stands for an append handle that could not be opened.
type closedFile struct{}

func (closedFile) Write([]byte) (int, error) { return 0, os.ErrClosed }
func (closedFile) Sync() error               { return os.ErrClosed }
func (closedFile) Truncate(int64) error      { return os.ErrClosed }
func (closedFile) Close() error              { return nil }

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

func (j *Journal) publishStats() {
	j.statSize.Store(j.size)
	j.statLive.Store(j.liveSize)
}

// Get returns the value of key. The slice must not be changed.
func (j *Journal) Get(key string) ([]byte, bool) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	v, ok := j.live[key]
	return v, ok
}

// Len returns how many keys are live.
func (j *Journal) Len() int {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return len(j.live)
}

// Range calls fn for each live key and value, in no order, until fn
// returns false. fn must not call j's methods nor change value.
func (j *Journal) Range(fn func(key string, value []byte) bool) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	for k, v := range j.live {
		if !fn(k, v) {
			return
		}
	}
}

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	return Stats{
		Size:        j.statSize.Load(),
		Live:        j.statLive.Load(),
		Keys:        j.Len(),
		Batches:     j.batches.Load(),
		Syncs:       j.syncs.Load(),
		Compactions: j.compactions.Load(),
	}
}

// Close commits the Applies already made, stops the writer and closes the
// file. Later Applies return ErrClosed. Close is idempotent.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	close(j.stop)
	<-j.stopped
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("close journal %s: %w", j.path, err)
	}
	return nil
}
