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
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
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

func TestStoreWriteFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := mustLocal(t, Entry{VIP: "/a:80", Backend: "10.0.0.1:80"})
	if _, err := s.Put(a); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}

	var tmpSeen string
	s.beforeRename = func(tmp string) error {
		tmpSeen = tmp
		// The new state is complete in the temporary file before the rename.
		data, err := os.ReadFile(tmp)
		if err != nil {
			return err
		}
		var st stateFile
		if err := json.Unmarshal(data, &st); err != nil {
			t.Errorf("temporary file is not a whole state: %v", err)
		}
		return errors.New("disk on fire")
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
			err := op()
			if err == nil || !strings.Contains(err.Error(), "disk on fire") {
				t.Fatalf("err = %v, want the write failure", err)
			}
			after, _ := os.ReadFile(s.Path())
			if string(after) != string(before) {
				t.Errorf("state file changed by a failed write:\n%s", after)
			}
			if got := s.List(); len(got) != 1 || got[0] != a {
				t.Errorf("List after failed write = %+v, want only %+v", got, a)
			}
			if _, err := os.Stat(tmpSeen); !os.IsNotExist(err) {
				t.Errorf("temporary file %s left behind (stat: %v)", tmpSeen, err)
			}
		})
	}
}

// TestStoreFileIsAlwaysWhole reads the state file while it is being
// rewritten: every read must decode as a whole state.
func TestStoreFileIsAlwaysWhole(t *testing.T) {
	s := openStore(t, t.TempDir())
	if _, err := s.Put(mustLocal(t, Entry{VIP: "/seed:80", Backend: "10.0.0.1:80"})); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	reads := 0
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			data, err := os.ReadFile(s.Path())
			if err != nil {
				t.Errorf("read state file: %v", err)
				return
			}
			var st stateFile
			if err := decodeStrict(data, &st); err != nil {
				t.Errorf("read a partial state file (%v):\n%s", err, data)
				return
			}
			reads++
		}
	}()
	for i := range 200 {
		l := mustLocal(t, Entry{VIP: fmt.Sprintf("/app%d:80", i%20), Backend: "10.0.0.1:80", Weight: u32(uint32(i))})
		if _, err := s.Put(l); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if reads == 0 {
		t.Error("the reader never read the file")
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
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.ErrorLevel {
		t.Fatalf("no error logged: %+v", e)
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
	if _, err := s.Put(mustLocal(t, Entry{VIP: "/app:80", Backend: "10.0.0.1:80", Check: "http://hz"})); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Version  int
		Backends []map[string]any
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"vip": "/app:80", "backend": "10.0.0.1:80", "framework": "marathon", "protocol": "tcp",
		"weight": 1.0, "check": "http:///hz", "check_interval": "1s", "check_timeout": "1s", "check_rise": 2.0, "check_fall": 2.0, "scheduler": "wlc"}
	if st.Version != 1 || len(st.Backends) != 1 || fmt.Sprint(st.Backends[0]) != fmt.Sprint(want) {
		t.Errorf("state file =\n%s\nwant version 1 and backend %v", data, want)
	}
	if fi, _ := os.Stat(s.Path()); fi.Mode().Perm() != 0o644 {
		t.Errorf("state file mode %v, want 0644", fi.Mode().Perm())
	}
}

func BenchmarkStorePut(b *testing.B) {
	s, err := OpenStore(b.TempDir(), quietLog())
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		if _, err := s.Put(mustLocal(b, Entry{VIP: fmt.Sprintf("/app%d:80", i), Backend: "10.0.0.1:80"})); err != nil {
			b.Fatal(err)
		}
	}
	l := mustLocal(b, Entry{VIP: "/bench:80", Backend: "10.0.0.1:80"})
	i := uint32(0)
	for b.Loop() {
		i++
		l.Weight = i % 100
		if _, err := s.Put(l); err != nil {
			b.Fatal(err)
		}
	}
}
