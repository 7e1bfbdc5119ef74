package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/l4lb/l4lb/pkg/journal"
)

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func mustLocal(t testing.TB, e Entry) Local {
	t.Helper()
	l, err := e.Parse()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir, quietLog())
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func keys(ls []Local) []string {
	out := []string{}
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return out
}

func TestStorePutDeleteList(t *testing.T) {
	s := openStore(t, t.TempDir())
	a := mustLocal(t, Entry{VIP: "/b:80", Backend: "10.0.0.1:80"})
	b := mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.2:80", Check: "tcp"})

	for _, step := range []struct {
		name    string
		do      func() (bool, error)
		want    bool
		wantSet []string
	}{
		{"put a creates", func() (bool, error) { return s.Put(a) }, true, []string{a.Key()}},
		{"put b creates", func() (bool, error) { return s.Put(b) }, true, []string{b.Key(), a.Key()}},
		{"put a again does not create", func() (bool, error) { return s.Put(a) }, false, []string{b.Key(), a.Key()}},
		{"put a changed replaces", func() (bool, error) { a2 := a; a2.Weight = 5; return s.Put(a2) }, false, []string{b.Key(), a.Key()}},
		{"delete a finds it", func() (bool, error) { return s.Delete(a.Key()) }, true, []string{b.Key()}},
		{"delete a again finds nothing", func() (bool, error) { return s.Delete(a.Key()) }, false, []string{b.Key()}},
	} {
		got, err := step.do()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got != step.want {
			t.Errorf("%s: got %v, want %v", step.name, got, step.want)
		}
		if k := keys(s.List()); fmt.Sprint(k) != fmt.Sprint(step.wantSet) {
			t.Errorf("%s: List = %v, want %v", step.name, k, step.wantSet)
		}
	}
}

func TestStorePersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var want []Local
	for i := range 5 {
		l := mustLocal(t, Entry{VIP: fmt.Sprintf("/app%d:80", i), Backend: fmt.Sprintf("10.0.0.%d:8080", i+1),
			Weight: u32(uint32(i)), Check: "http:///healthz", CheckInterval: "2s", CheckFall: 3, Scheduler: "rr", Persistence: 60})
		if _, err := s.Put(l); err != nil {
			t.Fatal(err)
		}
		want = append(want, l)
	}
	udp := mustLocal(t, Entry{VIP: "udp:///dns:53", Backend: "[fd00::1]:53"})
	if _, err := s.Put(udp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(want[2].Key()); err != nil {
		t.Fatal(err)
	}
	want = append(want[:2:2], want[3:]...)
	want = append(want, udp)
	sortLocals(want)

	again := openStore(t, dir)
	got := again.List()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	if again.Recovered() != "" {
		t.Errorf("Recovered = %q for a sound state file", again.Recovered())
	}
}

func TestStorePutRefusesInvalidAndNormalises(t *testing.T) {
	s := openStore(t, t.TempDir())
	bad := mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})
	bad.Scheduler = "fastest"
	if _, err := s.Put(bad); err == nil || !strings.Contains(err.Error(), `scheduler "fastest"`) {
		t.Errorf("Put of an invalid Local: err = %v", err)
	}
	if len(s.List()) != 0 {
		t.Errorf("invalid Local stored: %+v", s.List())
	}
	l := mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})
	l.Scheduler = "" // Parse fills in the default
	if _, err := s.Put(l); err != nil {
		t.Fatal(err)
	}
	if got := s.List()[0].Scheduler; got != "wlc" {
		t.Errorf("stored scheduler %q, want the default wlc", got)
	}
}

// failingFile makes the journal's next fail fsyncs fail.
type failingFile struct {
	journal.File
	fail *atomic.Int32
}

func (f failingFile) Sync() error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("disk on fire")
	}
	return f.File.Sync()
}

func TestStoreWriteFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Int32
	s, err := openStoreWith(dir, quietLog(), journal.Options{WrapFile: func(f journal.File) journal.File { return failingFile{f, &fail} }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})
	if _, err := s.Put(a); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	b := mustLocal(t, Entry{VIP: "/b:80", Backend: "10.0.0.2:80"})
	a2 := a
	a2.Weight = 9
	for name, op := range map[string]func() error{
		"put new":     func() error { _, err := s.Put(b); return err },
		"put replace": func() error { _, err := s.Put(a2); return err },
		"delete":      func() error { _, err := s.Delete(a.Key()); return err },
	} {
		t.Run(name, func(t *testing.T) {
			fail.Store(1)
			err := op()
			if err == nil || !strings.Contains(err.Error(), "disk on fire") {
				t.Fatalf("err = %v, want the write failure", err)
			}
			after, _ := os.ReadFile(s.Path())
			if string(after) != string(before) {
				t.Errorf("journal changed by a failed write")
			}
			if got := s.List(); len(got) != 1 || got[0] != a {
				t.Errorf("List after failed write = %+v, want only %+v", got, a)
			}
		})
	}
	if _, err := s.Put(b); err != nil {
		t.Fatalf("Put once the disk works again: %v", err)
	}
	if got := keys(openStore(t, dir).List()); fmt.Sprint(got) != fmt.Sprint([]string{a.Key(), b.Key()}) {
		t.Errorf("reopened: %v", got)
	}
}

// TestStoreCopyDuringWritesIsAPrefix copies the journal while registrations
// are being added: every copy opens to the first m registrations for some m
// no smaller than the number acknowledged before the copy began. This is
// what a crash at that moment would leave.
func TestStoreCopyDuringWritesIsAPrefix(t *testing.T) {
	s := openStore(t, t.TempDir())
	const n = 200
	locals := make([]Local, n)
	for i := range locals {
		locals[i] = mustLocal(t, Entry{VIP: fmt.Sprintf("/app%03d:80", i), Backend: "10.0.0.1:80"})
	}
	var acked atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, l := range locals {
			if _, err := s.Put(l); err != nil {
				t.Error(err)
				return
			}
			acked.Store(int64(i + 1))
		}
	}()
	copies := 0
	for i := 0; ; i++ {
		select {
		case <-done:
			if copies == 0 {
				t.Error("no copy was taken while writing")
			}
			return
		default:
		}
		min := acked.Load()
		data, err := os.ReadFile(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, JournalFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		got := keys(openStore(t, dir).List())
		if int64(len(got)) < min {
			t.Fatalf("copy %d holds %d registrations; %d were acknowledged before it", i, len(got), min)
		}
		if want := keys(locals[:len(got)]); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("copy %d is not a prefix: %v", i, got)
		}
		copies++
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				l := mustLocal(t, Entry{VIP: fmt.Sprintf("/w%d:80", w), Backend: fmt.Sprintf("10.0.%d.%d:80", w, i+1)})
				if _, err := s.Put(l); err != nil {
					t.Error(err)
				}
				_ = s.List()
				if i%2 == 1 {
					if _, err := s.Delete(l.Key()); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := len(s.List()); n != 4*13 {
		t.Errorf("%d registrations, want %d", n, 4*13)
	}
	if got, want := keys(openStore(t, dir).List()), keys(s.List()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reopened store differs:\n got %v\nwant %v", got, want)
	}
}

func TestStoreCorruptFileIsMovedAside(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":     `{"version":1,"backends":[{"vip":"/a:80","back`,
		"not json":      "\x00\x01garbage",
		"empty":         "",
		"wrong shape":   `[{"vip":"/a:80","backend":"10.0.0.1:80"}]`,
		"unknown field": `{"version":1,"backends":[],"extra":true}`,
		"no version":    `{"backends":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			log, hook := test.NewNullLogger()
			s, err := OpenStore(dir, log)
			if err != nil {
				t.Fatalf("OpenStore: %v", err)
			}
			if n := len(s.List()); n != 0 {
				t.Errorf("%d registrations from a corrupt file", n)
			}
			aside := s.Recovered()
			if !strings.HasPrefix(aside, path+".bad-") {
				t.Fatalf("Recovered = %q, want %s.bad-<time>", aside, path)
			}
			kept, err := os.ReadFile(aside)
			if err != nil || string(kept) != content {
				t.Errorf("the set-aside file holds %q (%v), want the original bytes", kept, err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("corrupt state file still in place (stat: %v)", err)
			}
			if e := hook.LastEntry(); e == nil || e.Level != logrus.ErrorLevel || !strings.Contains(e.Message, aside) {
				t.Errorf("last log entry = %+v, want an error naming %s", e, aside)
			}
			// The store works, and the next start is clean.
			if _, err := s.Put(mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})); err != nil {
				t.Fatal(err)
			}
			if again := openStore(t, dir); again.Recovered() != "" || len(again.List()) != 1 {
				t.Errorf("reopen after recovery: Recovered %q, %d registrations", again.Recovered(), len(again.List()))
			}
		})
	}
}

func TestStoreInvalidEntriesAreCopiedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	content := `{"version":1,"backends":[
		{"vip":"/good:80","backend":"10.0.0.1:80"},
		{"vip":"/bad:80","backend":"10.0.0.1"},
		{"vip":"/odd:80","backend":"10.0.0.1:80","colour":"red"},
		{"vip":"/Good:80","backend":"10.0.0.1:80","weight":3},
		{"vip":"/also-good:80","backend":"10.0.0.2:80"}]}`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	s, err := OpenStore(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(s.List()), []string{"/also-good:80 10.0.0.2:80", "/good:80 10.0.0.1:80"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	if g, _ := s.Get("/good:80 10.0.0.1:80"); g.Weight != 1 {
		t.Errorf("duplicate replaced the first registration: %+v", g)
	}
	kept, err := os.ReadFile(s.Recovered())
	if err != nil || string(kept) != content {
		t.Errorf("copy aside = %q, %v; want the original", kept, err)
	}
	var e *logrus.Entry
	for _, entry := range hook.AllEntries() {
		if entry.Level == logrus.ErrorLevel {
			e = entry
		}
	}
	if e == nil {
		t.Fatalf("no error logged: %+v", hook.AllEntries())
	}
	for _, want := range []string{"backend 1", `backend "10.0.0.1"`, `backend 2: unknown field "colour"`, "backend 3: /good:80 10.0.0.1:80 is there twice"} {
		if !strings.Contains(e.Data["reason"].(string), want) {
			t.Errorf("logged reason %q does not mention %q", e.Data["reason"], want)
		}
	}
	// The state file now holds only the valid registrations.
	if again := openStore(t, dir); again.Recovered() != "" || len(again.List()) != 2 {
		t.Errorf("reopen: Recovered %q, %d registrations", again.Recovered(), len(again.List()))
	}
}

func TestStoreRefusesNewerVersion(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	content := `{"version":2,"backends":[]}`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenStore(dir, quietLog())
	if err == nil || !strings.Contains(err.Error(), "newer l4lb") {
		t.Fatalf("OpenStore = %v, want a refusal naming a newer l4lb", err)
	}
	if data, _ := os.ReadFile(path); string(data) != content {
		t.Errorf("state file changed to %q", data)
	}
}

func TestStoreRemovesLeftoverTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, StateFile+".tmp-123")
	if err := os.WriteFile(left, []byte(`{"version":1,"backends":[{"vip":"/half`), 0o644); err != nil {
		t.Fatal(err)
	}
	openStore(t, dir)
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover %s still there (stat: %v)", left, err)
	}
}

func TestStoreFileFormat(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	l := mustLocal(t, Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Check: "http://hz"})
	if _, err := s.Put(l); err != nil {
		t.Fatal(err)
	}
	if s.Path() != filepath.Join(dir, JournalFile) {
		t.Errorf("Path = %s", s.Path())
	}
	_ = s.Close()
	j, err := journal.Open(s.Path(), journal.Options{Kind: journalKind, Version: journalVersion, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	raw, ok := j.Get(l.Key())
	if !ok || j.Len() != 1 {
		t.Fatalf("journal holds %d records, none under %q", j.Len(), l.Key())
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"vip": "/app:80", "backend": "10.0.0.1:80", "framework": "marathon", "protocol": "tcp",
		"weight": 1.0, "check": "http:///hz", "check_interval": "1s", "check_timeout": "1s", "check_rise": 2.0, "check_fall": 2.0, "scheduler": "wlc"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("record = %s\nwant %v", raw, want)
	}
	if fi, _ := os.Stat(s.Path()); fi.Mode().Perm() != 0o644 {
		t.Errorf("journal mode %v, want 0644", fi.Mode().Perm())
	}
}

func TestStoreMigratesStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	content := `{"version":1,"backends":[
		{"vip":"/a:80","backend":"10.0.0.1:80","weight":3},
		{"vip":"udp:///dns:53","backend":"[fd00::1]:53","check":"tcp"}]}`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	want := []string{"/a:80 10.0.0.1:80", "udp:///dns:53 [fd00::1]:53"}
	if got := keys(s.List()); fmt.Sprint(got) != fmt.Sprint(want) || s.Len() != 2 || s.Recovered() != "" {
		t.Fatalf("after migration: %v, Len %d, Recovered %q", got, s.Len(), s.Recovered())
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still there after migration (stat: %v)", path, err)
	}
	if kept, _ := os.ReadFile(filepath.Join(dir, MigratedFile)); string(kept) != content {
		t.Errorf("%s = %q, want the old file", MigratedFile, kept)
	}
	if _, err := s.Delete(want[0]); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	again := openStore(t, dir)
	if got := keys(again.List()); fmt.Sprint(got) != fmt.Sprint(want[1:]) {
		t.Errorf("reopened after migration: %v, want %v", got, want[1:])
	}
	if g, _ := again.Get(want[1]); g.Check.Kind != "tcp" {
		t.Errorf("migrated registration lost its check: %+v", g)
	}
	// A crash between the migration's write and the rename migrates again:
	// the state file's registrations replace those with their keys.
	_ = again.Close()
	if err := os.WriteFile(path, []byte(`{"version":1,"backends":[{"vip":"/a:80","backend":"10.0.0.1:80","weight":3}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := keys(openStore(t, dir).List()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("second migration: %v, want %v", got, want)
	}
}

func TestStoreJournalInvalidRecordsAreCopiedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, JournalFile)
	j, err := journal.Open(path, journal.Options{Kind: journalKind, Version: journalVersion, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ops := []journal.Op{
		{Key: "/good:80 10.0.0.1:80", Value: []byte(`{"vip":"/good:80","backend":"10.0.0.1:80"}`)},
		{Key: "/bad:80 10.0.0.1", Value: []byte(`{"vip":"/bad:80","backend":"10.0.0.1"}`)},
		{Key: "junk", Value: []byte(`{not json`)},
		{Key: "/Moved:80 10.0.0.2:80", Value: []byte(`{"vip":"/Moved:80","backend":"10.0.0.2:80"}`)},
	}
	if err := j.Apply(ops, nil); err != nil {
		t.Fatal(err)
	}
	_ = j.Close()
	before, _ := os.ReadFile(path)
	log, hook := test.NewNullLogger()
	s, err := OpenStore(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := []string{"/good:80 10.0.0.1:80", "/moved:80 10.0.0.2:80"}
	if got := keys(s.List()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	if kept, _ := os.ReadFile(s.Recovered()); string(kept) != string(before) || !strings.HasPrefix(s.Recovered(), path+".bad-") {
		t.Errorf("Recovered %q does not hold the journal as it was", s.Recovered())
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.ErrorLevel || !strings.Contains(e.Data["reason"].(string), `record "junk"`) {
		t.Errorf("last log entry %+v, want an error naming the bad record", e)
	}
	_ = s.Close()
	again := openStore(t, dir)
	if got := keys(again.List()); again.Recovered() != "" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reopen: Recovered %q, %v", again.Recovered(), got)
	}
}

func TestStoreNotAJournalIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, JournalFile)
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	if kept, _ := os.ReadFile(s.Recovered()); string(kept) != "garbage" || s.Len() != 0 {
		t.Errorf("Recovered %q holds %q; %d registrations", s.Recovered(), kept, s.Len())
	}
	if _, err := s.Put(mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})); err != nil {
		t.Fatal(err)
	}
}

// TestStorePutOfTheSameWritesNothing: a Put of the registration the store
// holds writes nothing and tells no one; a changed one is written, told,
// and read back by Get from the journal.
func TestStorePutOfTheSameWritesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	told := 0
	s.OnChange(func(string, *Local) { told++ })
	a := mustLocal(t, Entry{VIP: "/app:80", Backend: "10.0.0.1:8080"})
	if _, err := s.Put(a); err != nil {
		t.Fatal(err)
	}
	syncs := s.j.Stats().Syncs
	if created, err := s.Put(a); err != nil || created {
		t.Fatalf("Put of the same: created %v, %v", created, err)
	}
	if got := s.j.Stats().Syncs; got != syncs || told != 1 {
		t.Fatalf("Put of the same: %d syncs more, told %d times (want 0 more, once in all)", got-syncs, told)
	}
	a.Weight = 5
	if created, err := s.Put(a); err != nil || created {
		t.Fatalf("Put of a changed one: created %v, %v", created, err)
	}
	if got := s.j.Stats().Syncs; got != syncs+1 || told != 2 {
		t.Fatalf("Put of a changed one: %d syncs more, told %d times (want 1 more, twice in all)", got-syncs, told)
	}
	if l, ok := s.Get(a.Key()); !ok || l.Weight != 5 {
		t.Fatalf("Get after the change: %+v, %v", l, ok)
	}
}
