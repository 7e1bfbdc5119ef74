package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

var testOpts = Options{Kind: "test", Version: 1, Log: quietLog()}

func open(t testing.TB, path string, opts Options) *Journal {
	t.Helper()
	j, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

func state(j *Journal) map[string]string {
	out := map[string]string{}
	j.Range(func(k string, v []byte) bool { out[k] = string(v); return true })
	return out
}

func TestPutDeleteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := open(t, path, testOpts)
	for _, op := range []Op{{Key: "a", Value: []byte(`{"x":1}`)}, {Key: "b", Value: []byte(`2`)}, {Key: "a", Value: []byte(`3`)}, {Key: "b", Delete: true}, {Key: "", Value: []byte("empty key")}, {Key: "c", Value: nil}} {
		if err := j.Apply([]Op{op}, nil); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"a": "3", "": "empty key", "c": ""}
	if got := state(j); !maps.Equal(got, want) {
		t.Errorf("state %v, want %v", got, want)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Put("z", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	r := open(t, path, testOpts)
	if got := state(r); !maps.Equal(got, want) {
		t.Errorf("reopened state %v, want %v", got, want)
	}
	if v, ok := r.Get("a"); !ok || string(v) != "3" || r.Len() != 3 {
		t.Errorf("Get(a) = %q %v, Len %d", v, ok, r.Len())
	}
	if r.Recovered() != "" {
		t.Errorf("Recovered = %q on a clean log", r.Recovered())
	}
}

// TestCrashAtAnyByte is the crash property: after any sequence of puts and
// deletes, a log cut at any byte reopens to exactly the state of the
// records wholly before the cut.
func TestCrashAtAnyByte(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	for round := range 30 {
		path := filepath.Join(dir, fmt.Sprintf("j%d", round))
		j := open(t, path, Options{Kind: "test", Version: 1, Log: quietLog(), CompactMin: 1 << 40})
		model := map[string]string{}
		type point struct {
			size  int64
			state map[string]string
		}
		points := []point{{j.Stats().Size, maps.Clone(model)}}
		for range rng.IntN(40) + 1 {
			key := fmt.Sprintf("k%d", rng.IntN(8))
			if rng.IntN(4) == 0 {
				if err := j.Delete(key); err != nil {
					t.Fatal(err)
				}
				delete(model, key)
			} else {
				v := strings.Repeat(string(rune('a'+rng.IntN(26))), rng.IntN(300))
				if err := j.Put(key, []byte(v)); err != nil {
					t.Fatal(err)
				}
				model[key] = v
			}
			points = append(points, point{j.Stats().Size, maps.Clone(model)})
		}
		_ = j.Close()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != points[len(points)-1].size {
			t.Fatalf("file has %d bytes, Stats said %d", len(data), points[len(points)-1].size)
		}
		for range 10 {
			cut := points[0].size + rng.Int64N(int64(len(data))-points[0].size+1)
			want := points[0].state
			for _, p := range points {
				if p.size <= cut {
					want = p.state
				}
			}
			crashed := filepath.Join(dir, fmt.Sprintf("c%d-%d", round, cut))
			if err := os.WriteFile(crashed, data[:cut], 0o644); err != nil {
				t.Fatal(err)
			}
			r := open(t, crashed, testOpts)
			if got := state(r); !maps.Equal(got, want) {
				t.Fatalf("round %d, cut at %d of %d: state %v, want %v", round, cut, len(data), got, want)
			}
			torn := false
			for _, p := range points {
				torn = torn || p.size == cut
			}
			if torn == (r.Recovered() != "") {
				t.Errorf("cut at %d: Recovered %q, want a kept tail only when the cut is inside a record", cut, r.Recovered())
			}
			if r.Recovered() != "" {
				kept, _ := os.ReadFile(r.Recovered())
				if !bytes.Equal(kept, data[r.Stats().Size:cut]) {
					t.Errorf("kept tail %q, want the bytes after the last whole record", kept)
				}
			}
			// The cut log takes new records and reads them back.
			if err := r.Put("after", []byte("crash")); err != nil {
				t.Fatal(err)
			}
			_ = r.Close()
			want = maps.Clone(want)
			want["after"] = "crash"
			if got := state(open(t, crashed, testOpts)); !maps.Equal(got, want) {
				t.Fatalf("after a write following the cut: %v, want %v", got, want)
			}
		}
	}
}

func TestCorruptMiddleKeepsThePrefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := open(t, path, testOpts)
	for i := range 5 {
		if err := j.Put(fmt.Sprint(i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	_ = j.Close()
	data, _ := os.ReadFile(path)
	data[len(data)-30] ^= 0xff // inside the 3rd or 4th record
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := open(t, path, testOpts)
	if n := r.Len(); n < 2 || n > 4 {
		t.Errorf("%d records after a flipped byte, want the ones before it", n)
	}
	if kept, _ := os.ReadFile(r.Recovered()); len(kept) == 0 {
		t.Error("the records after the flipped byte were not kept aside")
	}
}

func TestRefusesWhatItCannotRead(t *testing.T) {
	dir := t.TempDir()
	newer := filepath.Join(dir, "newer")
	j := open(t, newer, Options{Kind: "test", Version: 2, Log: quietLog()})
	_ = j.Close()
	for name, tc := range map[string]struct {
		content func() []byte
		want    error
	}{
		"newer version": {func() []byte { b, _ := os.ReadFile(newer); return b }, ErrNewer},
		"newer format": {func() []byte {
			return appendHeader(nil, header{format: formatVersion + 1, version: 1, kind: "test"})
		}, ErrNewer},
		"other kind":  {func() []byte { return appendHeader(nil, header{format: 1, version: 1, kind: "other"}) }, ErrNotJournal},
		"json":        {func() []byte { return []byte(`{"version":1,"backends":[]}`) }, ErrNotJournal},
		"torn header": {func() []byte { return appendHeader(nil, header{format: 1, version: 1, kind: "test"})[:12] }, ErrNotJournal},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			content := tc.content()
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(path, testOpts); !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
				t.Error("Open changed a file it refused")
			}
		})
	}
	// An empty file (never written) is a new journal; an older version opens.
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if j := open(t, empty, testOpts); j.Len() != 0 || j.Version() != 1 {
		t.Errorf("empty file: %d keys, version %d", j.Len(), j.Version())
	}
	if j := open(t, newer, Options{Kind: "test", Version: 3, Log: quietLog()}); j.Version() != 2 {
		t.Errorf("Version = %d, want the file's 2", j.Version())
	}
}

// slowFile makes every fsync take a while, so that concurrent Applies pile
// up behind it; failSync makes the next n fsyncs fail.
type faultyFile struct {
	File
	delay     time.Duration
	failSync  atomic.Int32
	failTrunc atomic.Bool
}

func (f *faultyFile) Sync() error {
	time.Sleep(f.delay)
	if f.failSync.Add(-1) >= 0 {
		return errors.New("disk on fire")
	}
	return f.File.Sync()
}

func (f *faultyFile) Truncate(n int64) error {
	if f.failTrunc.Load() {
		return errors.New("cannot truncate")
	}
	return f.File.Truncate(n)
}

func faulty(delay time.Duration) (*faultyFile, Options) {
	ff := &faultyFile{delay: delay}
	opts := testOpts
	opts.WrapFile = func(f File) File { ff.File = f; return ff }
	return ff, opts
}

func TestGroupCommit(t *testing.T) {
	_, opts := faulty(5 * time.Millisecond)
	j := open(t, filepath.Join(t.TempDir(), "j"), opts)
	const writers, each = 20, 10
	mirror := map[string]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprint(i % 3) // writers race on the same keys
				val := fmt.Sprintf("%d-%d", w, i)
				err := j.Apply([]Op{{Key: key, Value: []byte(val)}}, func() { mirror[key] = val })
				if err != nil {
					t.Error(err)
				}
				if v, ok := j.Get(key); !ok || v == nil {
					t.Errorf("Get(%s) after Apply returned = %q %v", key, v, ok)
				}
			}
		}()
	}
	wg.Wait()
	st := j.Stats()
	if st.Batches >= writers*each/2 {
		t.Errorf("%d batches for %d concurrent Applies: writes were not grouped", st.Batches, writers*each)
	}
	t.Logf("%d Applies in %d batches, %d fsyncs", writers*each, st.Batches, st.Syncs)
	if got := state(j); !maps.Equal(got, mirror) {
		t.Errorf("the then-mirror %v differs from the state %v: callbacks out of log order", mirror, got)
	}
	_ = j.Close()
	if got := state(open(t, j.Path(), testOpts)); !maps.Equal(got, mirror) {
		t.Errorf("reopened %v, want %v", got, mirror)
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	ff, opts := faulty(0)
	path := filepath.Join(t.TempDir(), "j")
	j := open(t, path, opts)
	if err := j.Put("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	ff.failSync.Store(1)
	called := false
	err := j.Apply([]Op{{Key: "a", Value: []byte("2")}, {Key: "b", Value: []byte("3")}}, func() { called = true })
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Apply = %v, want the fsync failure", err)
	}
	if called {
		t.Error("then ran for a failed Apply")
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Error("the file kept the records of a failed Apply")
	}
	if got := state(j); !maps.Equal(got, map[string]string{"a": "1"}) {
		t.Errorf("state after a failed Apply: %v", got)
	}
	if err := j.Put("c", []byte("4")); err != nil {
		t.Fatalf("Put after an undone failure: %v", err)
	}
	// A failure that cannot be undone breaks the journal.
	ff.failSync.Store(1)
	ff.failTrunc.Store(true)
	if err := j.Put("d", nil); err == nil {
		t.Fatal("Put succeeded with a failing disk")
	}
	if err := j.Put("e", nil); err == nil || !strings.Contains(err.Error(), "reopen") {
		t.Errorf("Put on a broken journal = %v, want a refusal", err)
	}
	_ = j.Close()
	// The write that could not be undone may or may not be in the log (its
	// caller was told it failed, not that it did not happen); the refused
	// one is not.
	got := state(open(t, path, testOpts))
	delete(got, "d")
	if !maps.Equal(got, map[string]string{"a": "1", "c": "4"}) {
		t.Errorf("reopened %v", got)
	}
}

func TestCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	opts := testOpts
	opts.CompactMin = 4 << 10
	j := open(t, path, opts)
	model := map[string]string{}
	rng := rand.New(rand.NewPCG(3, 4))
	var maxSize, maxLive int64
	for i := range 3000 {
		key := fmt.Sprint(rng.IntN(20))
		if i%7 == 0 {
			if err := j.Delete(key); err != nil {
				t.Fatal(err)
			}
			delete(model, key)
		} else {
			v := strings.Repeat("v", rng.IntN(100))
			if err := j.Put(key, []byte(v)); err != nil {
				t.Fatal(err)
			}
			model[key] = v
		}
		// A compaction may be running now (it follows the batch's
		// acknowledgement), so read the file's size, not Stats'.
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		maxSize = max(maxSize, fi.Size())
		maxLive = max(maxLive, j.Stats().Live)
	}
	st := j.Stats()
	if st.Compactions == 0 {
		t.Fatal("never compacted")
	}
	// Compaction starts once the log passes max(CompactMin, 2 x live); one
	// record (at most ~120 bytes here) may land before it.
	if limit := max(opts.CompactMin, 2*maxLive) + 120; maxSize > limit {
		t.Errorf("log grew to %d bytes with at most %d live: compaction does not bound it", maxSize, maxLive)
	}
	if got := state(j); !maps.Equal(got, model) {
		t.Error("state differs from the model after compactions")
	}
	_ = j.Close()
	if got := state(open(t, path, opts)); !maps.Equal(got, model) {
		t.Errorf("reopened after compactions: %v, want %v", got, model)
	}
	if left, _ := filepath.Glob(path + ".*"); len(left) != 0 {
		t.Errorf("files left beside the log: %v", left)
	}
	t.Logf("%d compactions, max size %d, live %d", st.Compactions, maxSize, st.Live)
}

func TestLeftoverCompactionFileRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	if err := os.WriteFile(path+".compact-tmp", []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, path, testOpts)
	if _, err := os.Stat(path + ".compact-tmp"); !os.IsNotExist(err) {
		t.Errorf("leftover compaction file still there: %v", err)
	}
}

// FuzzDecodeRecords: any bytes decode without panic into records that,
// encoded again, are exactly the bytes accepted.
func FuzzDecodeRecords(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendOp(appendOp(nil, Op{Key: "a", Value: []byte(`{"x":1}`)}), Op{Key: "a", Delete: true}))
	f.Add(appendOp(nil, Op{Key: "key", Value: []byte("value")})[:10])
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(appendHeader(nil, header{format: 1, version: 1, kind: "x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ops []Op
		good, why := decodeRecords(data, func(op Op) { ops = append(ops, op) })
		if good < 0 || good > len(data) || (why == nil) != (good == len(data)) {
			t.Fatalf("good %d of %d, why %v", good, len(data), why)
		}
		var again []byte
		for _, op := range ops {
			again = appendOp(again, op)
		}
		if !bytes.Equal(again, data[:good]) {
			t.Fatalf("re-encoded %x, accepted %x", again, data[:good])
		}
		_, _, _ = decodeHeader(data)
	})
}

func BenchmarkPut(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("live=%d", n), func(b *testing.B) {
			j := open(b, filepath.Join(b.TempDir(), "j"), testOpts)
			ops := make([]Op, n)
			for i := range ops {
				ops[i] = Op{Key: fmt.Sprintf("/app%d:80 10.0.0.1:80", i), Value: bytes.Repeat([]byte("x"), 250)}
			}
			if err := j.Apply(ops, nil); err != nil {
				b.Fatal(err)
			}
			syncs := j.Stats().Syncs
			i := 0
			for b.Loop() {
				i++
				if err := j.Put(ops[i%n].Key, ops[(i+1)%n].Value); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(j.Stats().Syncs-syncs)/float64(i), "fsyncs/op")
		})
	}
}
