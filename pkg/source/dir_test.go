package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

func BenchmarkDirScan100Files(b *testing.B) {
	dir := b.TempDir()
	for i := range 100 {
		content := "[" + entryJSON(fmt.Sprintf("/app%d:80", i), "10.0.0.1:80", 1) + "," + entryJSON(fmt.Sprintf("/app%d:80", i), "10.0.0.2:80", 1) + "]"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("app%d.json", i)), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	d := NewDir(DirConfig{Path: dir, Log: quietLog()})
	d.Scan()
	for b.Loop() {
		d.Scan()
	}
}
