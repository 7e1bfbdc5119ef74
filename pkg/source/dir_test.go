package source

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// entryJSON is a one-entry services file for vip and backend.
func entryJSON(vipLabel, backend string, weight int) string {
	return fmt.Sprintf(`{"vip":%q,"backend":%q,"weight":%d}`, vipLabel, backend, weight)
}

// summary shows a set as "key wN" lines, for comparing.
func summary(ls []Local) string {
	var parts []string
	for _, l := range ls {
		parts = append(parts, fmt.Sprintf("%s w%d", l.Key(), l.Weight))
	}
	return strings.Join(parts, ", ")
}

func newTestDir(t *testing.T, path string) *Dir {
	t.Helper()
	return NewDir(DirConfig{Path: path, Log: quietLog(), Rescan: time.Hour, Settle: 10 * time.Millisecond})
}

func TestDirFileForms(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "one.json"), entryJSON("/one:80", "10.0.0.1:80", 1))
	writeFile(t, filepath.Join(dir, "array.json"), "["+entryJSON("/two:80", "10.0.0.2:80", 2)+","+entryJSON("udp:///three:53", "10.0.0.3:53", 3)+"]")
	writeFile(t, filepath.Join(dir, "wrapped.json"), `{"backends":[`+entryJSON("/four:80", "[fd00::4]:80", 4)+`]}`)
	writeFile(t, filepath.Join(dir, "none.json"), `[]`)
	d := newTestDir(t, dir)
	set, changed := d.Scan()
	want := "/four:80 [fd00::4]:80 w4, /one:80 10.0.0.1:80 w1, /two:80 10.0.0.2:80 w2, udp:///three:53 10.0.0.3:53 w3"
	if got := summary(set); got != want || !changed {
		t.Errorf("Scan = %q, %v; want %q, true", got, changed, want)
	}
	if st := d.Stats(); st.Files != 4 || st.Backends != 4 || len(st.BadFiles) != 0 || st.Missing {
		t.Errorf("Stats = %+v", st)
	}
	if _, changed := d.Scan(); changed {
		t.Error("second Scan of an unchanged directory says changed")
	}
}

func TestDirIgnoresOtherNames(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app.json"), entryJSON("/app:80", "10.0.0.1:80", 1))
	for _, name := range []string{".app.json", ".app.json.swp", "app.json~", "app.json.bak", "README", "app.yaml"} {
		writeFile(t, filepath.Join(dir, name), "not even json")
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub", "deep.json"), entryJSON("/deep:80", "10.0.0.9:80", 1))
	d := newTestDir(t, dir)
	set, _ := d.Scan()
	if got := summary(set); got != "/app:80 10.0.0.1:80 w1" {
		t.Errorf("Scan = %q, want only app.json's backend", got)
	}
	if st := d.Stats(); st.Files != 1 || len(st.BadFiles) != 0 {
		t.Errorf("Stats = %+v, want one good file", st)
	}
}

func TestDirBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	writeFile(t, good, entryJSON("/good:80", "10.0.0.1:80", 1))
	bad := map[string]string{
		"syntax.json":    `{"vip":"/a:80",`,
		"invalid.json":   `{"vip":"/a:80","backend":"10.0.0.1"}`,
		"unknown.json":   `{"vip":"/a:80","backend":"10.0.0.1:80","colour":"red"}`,
		"partial.json":   "[" + entryJSON("/p:80", "10.0.0.5:80", 1) + `,{"vip":"/q:80"}]`,
		"dupinfile.json": "[" + entryJSON("/d:80", "10.0.0.6:80", 1) + "," + entryJSON("/D:80", "10.0.0.6:80", 2) + "]",
		"empty.json":     "",
		"huge.json":      strings.Repeat(" ", 2048) + entryJSON("/h:80", "10.0.0.7:80", 1),
	}
	reasons := map[string]string{
		"syntax.json":    "ends too early",
		"invalid.json":   `backend "10.0.0.1"`,
		"unknown.json":   `unknown field "colour"`,
		"partial.json":   "entry 1: backend: missing",
		"dupinfile.json": "entries 0 and 1 both register /d:80 10.0.0.6:80",
		"empty.json":     "empty file",
		"huge.json":      "longer than 1024 bytes",
		"dir.json":       "not a regular file",
	}
	for name, content := range bad {
		writeFile(t, filepath.Join(dir, name), content)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	d := NewDir(DirConfig{Path: dir, Log: log, MaxFileSize: 1024})
	set, _ := d.Scan()
	if got := summary(set); got != "/good:80 10.0.0.1:80 w1" {
		t.Errorf("Scan = %q, want only the good file's backend", got)
	}
	st := d.Stats()
	if len(st.BadFiles) != len(reasons) {
		t.Errorf("bad files = %v, want %d", st.BadFiles, len(reasons))
	}
	for name, want := range reasons {
		path := filepath.Join(dir, name)
		if got, ok := st.BadFiles[path]; !ok || !strings.Contains(got, want) {
			t.Errorf("bad file %s: reason %q (listed %v), want it to contain %q", name, got, ok, want)
		}
	}
	logged := map[string]bool{}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			for name := range reasons {
				path := filepath.Join(dir, name)
				if strings.Contains(e.Message, path) && e.Data["reason"] == st.BadFiles[path] {
					logged[name] = true
				}
			}
		}
	}
	if len(logged) != len(reasons) {
		t.Errorf("error lines with path and reason for %v, want all of %d bad files", logged, len(reasons))
	}
	if st.BadLoads != uint64(len(reasons)) {
		t.Errorf("BadLoads = %d, want %d", st.BadLoads, len(reasons))
	}
	// Reading the same bad files again counts nothing new.
	d.Scan()
	if st := d.Stats(); st.BadLoads != uint64(len(reasons)) {
		t.Errorf("BadLoads after a rescan = %d, want still %d", st.BadLoads, len(reasons))
	}
}

func TestDirFileLifecycle(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app.json")
	other := filepath.Join(dir, "other.json")
	writeFile(t, other, entryJSON("/other:80", "10.0.0.9:80", 1))
	d := newTestDir(t, dir)
	steps := []struct {
		name    string
		do      func()
		want    string
		changed bool
		badApp  string // part of app.json's reason, "" if it must be good
	}{
		{"appears", func() { writeFile(t, app, entryJSON("/app:80", "10.0.0.1:80", 1)) },
			"/app:80 10.0.0.1:80 w1, /other:80 10.0.0.9:80 w1", true, ""},
		{"changes", func() { writeFile(t, app, entryJSON("/app:80", "10.0.0.1:80", 5)) },
			"/app:80 10.0.0.1:80 w5, /other:80 10.0.0.9:80 w1", true, ""},
		{"goes bad and keeps its last good backends", func() { writeFile(t, app, `{"vip":"/app:80","backend":`) },
			"/app:80 10.0.0.1:80 w5, /other:80 10.0.0.9:80 w1", false, "ends too early"},
		{"is emptied and still keeps them", func() { writeFile(t, app, "") },
			"/app:80 10.0.0.1:80 w5, /other:80 10.0.0.9:80 w1", false, "empty file"},
		{"is fixed with new content", func() {
			writeFile(t, app, "["+entryJSON("/app:80", "10.0.0.1:80", 2)+","+entryJSON("/app:80", "10.0.0.2:80", 2)+"]")
		},
			"/app:80 10.0.0.1:80 w2, /app:80 10.0.0.2:80 w2, /other:80 10.0.0.9:80 w1", true, ""},
		{"is renamed", func() {
			if err := os.Rename(app, filepath.Join(dir, "renamed.json")); err != nil {
				t.Fatal(err)
			}
			app = filepath.Join(dir, "renamed.json")
		}, "/app:80 10.0.0.1:80 w2, /app:80 10.0.0.2:80 w2, /other:80 10.0.0.9:80 w1", false, ""},
		{"vanishes", func() {
			if err := os.Remove(app); err != nil {
				t.Fatal(err)
			}
		}, "/other:80 10.0.0.9:80 w1", true, ""},
		{"comes back bad: nothing to keep", func() { writeFile(t, app, `nonsense`) },
			"/other:80 10.0.0.9:80 w1", false, "want a JSON object or array"},
	}
	d.Scan()
	for _, s := range steps {
		s.do()
		set, changed := d.Scan()
		if got := summary(set); got != s.want || changed != s.changed {
			t.Errorf("%s: Scan = %q, changed %v; want %q, %v", s.name, got, changed, s.want, s.changed)
		}
		reason, bad := d.Stats().BadFiles[app]
		switch {
		case s.badApp == "" && bad:
			t.Errorf("%s: %s listed bad: %s", s.name, app, reason)
		case s.badApp != "" && !strings.Contains(reason, s.badApp):
			t.Errorf("%s: %s reason %q, want %q", s.name, app, reason, s.badApp)
		}
		if got := summary(d.Current()); got != s.want {
			t.Errorf("%s: Current = %q", s.name, got)
		}
	}
}

func TestDirDuplicatesAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "b.json"), "["+entryJSON("/app:80", "10.0.0.1:80", 2)+","+entryJSON("/b:80", "10.0.0.2:80", 1)+"]")
	writeFile(t, filepath.Join(dir, "a.json"), entryJSON("/App:80", "10.0.0.1:80", 1))
	d := newTestDir(t, dir)
	set, _ := d.Scan()
	if got, want := summary(set), "/app:80 10.0.0.1:80 w1, /b:80 10.0.0.2:80 w1"; got != want {
		t.Errorf("Scan = %q, want %q (a.json wins)", got, want)
	}
	dups := d.Stats().Duplicates
	if len(dups) != 1 || !strings.Contains(dups[0], "/app:80 10.0.0.1:80") || !strings.Contains(dups[0], filepath.Join(dir, "a.json")+" wins") {
		t.Errorf("Duplicates = %q, want one saying a.json wins", dups)
	}
	if err := os.Remove(filepath.Join(dir, "a.json")); err != nil {
		t.Fatal(err)
	}
	set, _ = d.Scan()
	if got, want := summary(set), "/app:80 10.0.0.1:80 w2, /b:80 10.0.0.2:80 w1"; got != want {
		t.Errorf("after removing a.json, Scan = %q, want %q", got, want)
	}
	if dups := d.Stats().Duplicates; len(dups) != 0 {
		t.Errorf("Duplicates = %q, want none", dups)
	}
}

func TestDirFollowsSymlinks(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	target := filepath.Join(elsewhere, "real.json")
	writeFile(t, target, entryJSON("/linked:80", "10.0.0.1:80", 1))
	if err := os.Symlink(target, filepath.Join(dir, "linked.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(elsewhere, "missing.json"), filepath.Join(dir, "dangling.json")); err != nil {
		t.Fatal(err)
	}
	d := newTestDir(t, dir)
	set, _ := d.Scan()
	if got := summary(set); got != "/linked:80 10.0.0.1:80 w1" {
		t.Errorf("Scan = %q, want the linked file's backend", got)
	}
}

func TestDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "services.d")
	d := newTestDir(t, dir)
	set, changed := d.Scan()
	if len(set) != 0 || changed || !d.Stats().Missing {
		t.Errorf("missing dir: Scan = %v, %v; Stats %+v", set, changed, d.Stats())
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.json"), entryJSON("/a:80", "10.0.0.1:80", 1))
	set, changed = d.Scan()
	if summary(set) != "/a:80 10.0.0.1:80 w1" || !changed || d.Stats().Missing {
		t.Errorf("after creation: Scan = %q, %v; Stats %+v", summary(set), changed, d.Stats())
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	set, changed = d.Scan()
	if len(set) != 0 || !changed || !d.Stats().Missing {
		t.Errorf("after removal: Scan = %q, %v; Stats %+v", summary(set), changed, d.Stats())
	}
}

// runDir runs d in the background and returns a channel of the sets it
// reports.
func runDir(t *testing.T, d *Dir) <-chan []Local {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sets := make(chan []Local, 100)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, func(s []Local) { sets <- s }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return sets
}

// waitSet waits for a reported set whose summary is want.
func waitSet(t *testing.T, sets <-chan []Local, want string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	var last string
	for {
		select {
		case s := <-sets:
			last = summary(s)
			if last == want {
				return
			}
		case <-deadline:
			t.Fatalf("no set %q within %s; last was %q", want, within, last)
		}
	}
}

// TestDirRunFollowsNotifications runs with an hour between rescans, so every
// change here must come from a change notification.
func TestDirRunFollowsNotifications(t *testing.T) {
	dir := t.TempDir()
	d := newTestDir(t, dir)
	sets := runDir(t, d)
	waitSet(t, sets, "", 2*time.Second)

	app := filepath.Join(dir, "app.json")
	writeFile(t, app, entryJSON("/app:80", "10.0.0.1:80", 1))
	waitSet(t, sets, "/app:80 10.0.0.1:80 w1", 2*time.Second)

	// An editor's save: write a hidden temporary file, rename it over.
	tmp := filepath.Join(dir, ".app.json.tmp")
	writeFile(t, tmp, entryJSON("/app:80", "10.0.0.1:80", 3))
	if err := os.Rename(tmp, app); err != nil {
		t.Fatal(err)
	}
	waitSet(t, sets, "/app:80 10.0.0.1:80 w3", 2*time.Second)

	// Renamed out of the pattern: withdrawn.
	if err := os.Rename(app, app+".disabled"); err != nil {
		t.Fatal(err)
	}
	waitSet(t, sets, "", 2*time.Second)

	// Back, then removed.
	if err := os.Rename(app+".disabled", app); err != nil {
		t.Fatal(err)
	}
	waitSet(t, sets, "/app:80 10.0.0.1:80 w3", 2*time.Second)
	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	waitSet(t, sets, "", 2*time.Second)
}

// TestDirRunRescans: a directory that does not exist yet has no watch; the
// periodic rescan finds it, and then its files.
func TestDirRunRescans(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "services.d")
	d := NewDir(DirConfig{Path: dir, Log: quietLog(), Rescan: 30 * time.Millisecond, Settle: 10 * time.Millisecond})
	sets := runDir(t, d)
	waitSet(t, sets, "", 2*time.Second)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.json"), entryJSON("/a:80", "10.0.0.1:80", 1))
	waitSet(t, sets, "/a:80 10.0.0.1:80 w1", 2*time.Second)

	// Removed and made again: the new directory is watched too.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitSet(t, sets, "", 2*time.Second)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "b.json"), entryJSON("/b:80", "10.0.0.2:80", 1))
	waitSet(t, sets, "/b:80 10.0.0.2:80 w1", 2*time.Second)
}

// writeServicesFiles writes n files of two backends each, dated an hour
// ago (so that stat, not the racy rule, decides what is read again).
func writeServicesFiles(b *testing.B, dir string, n int) {
	old := time.Now().Add(-time.Hour)
	for i := range n {
		content := "[" + entryJSON(fmt.Sprintf("/app%d:80", i), "10.0.0.1:80", 1) + "," + entryJSON(fmt.Sprintf("/app%d:80", i), "10.0.0.2:80", 1) + "]"
		path := filepath.Join(dir, fmt.Sprintf("app%d.json", i))
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Chtimes(path, old, old); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDirScan100Files is a rescan that finds no file changed.
func BenchmarkDirScan100Files(b *testing.B) {
	dir := b.TempDir()
	writeServicesFiles(b, dir, 100)
	d := NewDir(DirConfig{Path: dir, Log: quietLog()})
	d.Scan()
	for b.Loop() {
		d.scanDelta(nil)
	}
}

// BenchmarkDirScanOneChangedOf1000 rewrites one file of 1,000 and reads
// the directory again, taking the delta as RunDelta does: "rescan" lists and
// stats every file (the periodic rescan), "notified" reads only the file a
// change notification named. The file is dated in the past, as it would be
// 2 s after its write: a file written within racyWindow is read again (and
// compared) on every rescan until then.
func BenchmarkDirScanOneChangedOf1000(b *testing.B) {
	for _, notified := range []bool{false, true} {
		name := "rescan"
		if notified {
			name = "notified"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			writeServicesFiles(b, dir, 1000)
			d := NewDir(DirConfig{Path: dir, Log: quietLog()})
			d.mu.Lock()
			d.scanLocked()
			d.delta = &dirDelta{set: map[string]Local{}, removed: map[string]bool{}}
			d.mu.Unlock()
			i := 0
			for b.Loop() {
				i++
				path := filepath.Join(dir, fmt.Sprintf("app%d.json", i%1000))
				content := "[" + entryJSON(fmt.Sprintf("/app%d:80", i%1000), "10.0.0.1:80", 1+i%7) + "]"
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					b.Fatal(err)
				}
				then := time.Now().Add(-time.Hour)
				if err := os.Chtimes(path, then, then); err != nil {
					b.Fatal(err)
				}
				var paths []string
				if notified {
					paths = []string{path}
				}
				if _, _, changed := d.scanDelta(paths); !changed {
					b.Fatal("the change was not seen")
				}
			}
		})
	}
}

// oracle is the directory's set computed from scratch from what d knows of
// each file, as Scan did before it kept the set by difference: files in
// name order, the first to have a key wins.
func oracle(d *Dir) map[string]Local {
	out := map[string]Local{}
	for _, path := range slices.Sorted(maps.Keys(d.files)) {
		for _, l := range d.files[path].good {
			if _, taken := out[l.Key()]; !taken {
				out[l.Key()] = l
			}
		}
	}
	return out
}

// TestDirDeltaProperty: after any sequence of file writes, bad writes and
// removals, the set kept by difference equals the oracle, the deltas
// applied in order give the same set, and a delta sets only registrations
// that changed.
func TestDirDeltaProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	dir := t.TempDir()
	d := newTestDir(t, dir)
	d.mu.Lock()
	d.scanLocked()
	d.delta = &dirDelta{set: map[string]Local{}, removed: map[string]bool{}}
	d.mu.Unlock()
	model := map[string]Local{}
	for step := range 300 {
		name := filepath.Join(dir, fmt.Sprintf("f%d.json", rng.IntN(5)))
		switch op := rng.IntN(10); {
		case op < 6:
			var entries []string
			for k := range 6 {
				if rng.IntN(3) == 0 {
					entries = append(entries, entryJSON(fmt.Sprintf("/k%d:80", k), "10.0.0.1:80", 1+rng.IntN(3)))
				}
			}
			writeFile(t, name, "["+strings.Join(entries, ",")+"]")
		case op < 8:
			if err := os.Remove(name); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		default:
			writeFile(t, name, `{"vip":`) // bad: keeps the last good backends
		}
		// Half the time as a notification names the file, half as a rescan.
		var paths []string
		if rng.IntN(2) == 0 {
			paths = []string{name}
		}
		set, removed, changed := d.scanDelta(paths)
		for _, l := range set {
			if old, had := model[l.Key()]; had && old == l {
				t.Fatalf("step %d: delta sets %s, which did not change", step, l.Key())
			}
			model[l.Key()] = l
		}
		for _, k := range removed {
			delete(model, k)
		}
		if changed != (len(set)+len(removed) > 0) {
			t.Fatalf("step %d: changed %v with %d set, %d removed", step, changed, len(set), len(removed))
		}
		d.mu.Lock()
		want := oracle(d)
		current := maps.Clone(d.current)
		d.mu.Unlock()
		if !maps.Equal(current, want) {
			t.Fatalf("step %d: kept %v, from scratch %v", step, summaryMap(current), summaryMap(want))
		}
		if !maps.Equal(model, want) {
			t.Fatalf("step %d: deltas give %v, want %v", step, summaryMap(model), summaryMap(want))
		}
		if got := summary(d.Current()); got != summaryMap(want) {
			t.Fatalf("step %d: Current %q", step, got)
		}
	}
}

func summaryMap(m map[string]Local) string {
	ls := slices.Collect(maps.Values(m))
	sortLocals(ls)
	return summary(ls)
}

func TestDirRescanReadsOnlyChangedFiles(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for i := range 20 {
		path := filepath.Join(dir, fmt.Sprintf("app%02d.json", i))
		writeFile(t, path, entryJSON(fmt.Sprintf("/app%d:80", i), "10.0.0.1:80", 1))
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
	}
	d := newTestDir(t, dir)
	d.Scan()
	reads := func() uint64 { d.mu.Lock(); defer d.mu.Unlock(); return d.reads }
	before := reads()
	if _, changed := d.Scan(); changed || reads() != before {
		t.Errorf("a rescan of unchanged files read %d (changed %v)", reads()-before, changed)
	}
	path := filepath.Join(dir, "app07.json")
	writeFile(t, path, entryJSON("/app7:80", "10.0.0.1:80", 2)) // same size, new mtime
	set, changed := d.Scan()
	if !changed || reads()-before != 1 {
		t.Errorf("one changed file: %d reads, changed %v", reads()-before, changed)
	}
	if l := set[slices.IndexFunc(set, func(l Local) bool { return l.VIP.Name == "/app7" })]; l.Weight != 2 {
		t.Errorf("the change was not read: %+v", l)
	}
	// Notifications name files: only those are read, and a named file
	// that is gone withdraws its backends.
	before = reads()
	writeFile(t, path, entryJSON("/app7:80", "10.0.0.1:80", 3))
	gone := filepath.Join(dir, "app03.json")
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.scanPathsLocked([]string{path, gone, filepath.Join(dir, ".hidden.json"), filepath.Join(dir, "never.json")})
	d.mu.Unlock()
	if n := reads() - before; n != 1 { // app07.json; the others are gone, hidden or never were
		t.Errorf("a notified scan read %d files, want 1", n)
	}
	cur := summary(d.Current())
	if strings.Contains(cur, "/app3:80") || !strings.Contains(cur, "/app7:80 10.0.0.1:80 w3") || len(d.Current()) != 19 {
		t.Errorf("after a notified scan: %s", cur)
	}
}

func TestDirRunDelta(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.json")
	b := filepath.Join(dir, "b.json")
	writeFile(t, a, "["+entryJSON("/app:80", "10.0.0.1:80", 1)+","+entryJSON("/a:80", "10.0.0.1:80", 1)+"]")
	writeFile(t, b, "["+entryJSON("/app:80", "10.0.0.1:80", 2)+","+entryJSON("/b:80", "10.0.0.2:80", 1)+"]")
	d := newTestDir(t, dir)
	type call struct{ set, removed string }
	calls := make(chan call, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.RunDelta(ctx, func(set []Local, removed []string) {
			calls <- call{summary(set), strings.Join(removed, ", ")}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunDelta: %v", err)
		}
	}()
	next := func(want call) {
		t.Helper()
		select {
		case got := <-calls:
			if got != want {
				t.Errorf("onChange(%q, removed %q), want (%q, %q)", got.set, got.removed, want.set, want.removed)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no call; want %+v", want)
		}
	}
	// The first call carries everything; a.json wins /app.
	next(call{"/a:80 10.0.0.1:80 w1, /app:80 10.0.0.1:80 w1, /b:80 10.0.0.2:80 w1", ""})
	// One file changes: only its changed backend.
	writeFile(t, b, "["+entryJSON("/app:80", "10.0.0.1:80", 2)+","+entryJSON("/b:80", "10.0.0.2:80", 3)+"]")
	next(call{"/b:80 10.0.0.2:80 w3", ""})
	// The winner goes: its shadowed duplicate takes over, its other key goes.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	next(call{"/app:80 10.0.0.1:80 w2", "/a:80 10.0.0.1:80"})
	// A change that Scan sees first is still reported to RunDelta.
	writeFile(t, b, "["+entryJSON("/b:80", "10.0.0.2:80", 3)+"]")
	d.Scan()
	next(call{"", "/app:80 10.0.0.1:80"})
}
