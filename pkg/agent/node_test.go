package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/source"
)

func newLocalNode(t *testing.T) (*localNode, *fakeCluster) {
	t.Helper()
	var net fakeNet
	cl := net.join("node1")
	core := startCore(t, CoreConfig{Node: "node1"}, cl)
	store, err := source.OpenStore(t.TempDir(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	checker := health.New(health.Config{Log: quietLog(), OnChange: func(key string, healthy bool, reason string) {
		core.HealthChanged(map[string]bool{key: healthy})
	}})
	t.Cleanup(checker.Close)
	a := &localNode{core: core, store: store, checker: checker, log: quietLog()}
	store.OnChange(a.storeChanged)
	return a, cl
}

func published(cl *fakeCluster) map[string]bool {
	out := map[string]bool{}
	for _, n := range cl.State() {
		for _, r := range n.Backends {
			out[r.Backend.String()] = true
		}
	}
	return out
}

// Registrations made at the same time all reach gossip: none is lost to a
// stale list of the store overtaking a newer one.
func TestConcurrentRegistrationsAreAllPublished(t *testing.T) {
	a, cl := newLocalNode(t)
	const n = 24
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: fmt.Sprintf("10.0.0.%d:80", i+1)}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	eventually(t, "all registrations published", func() bool { return len(published(cl)) == n })
	for i := 0; i < n; i += 2 {
		removed, _, err := a.Deregister(source.Entry{VIP: "/app:80", Backend: fmt.Sprintf("10.0.0.%d:80", i+1)})
		if err != nil || !removed {
			t.Fatalf("deregister: %v %v", removed, err)
		}
	}
	eventually(t, "half withdrawn", func() bool { return len(published(cl)) == n/2 })
}

func TestBadRegistrationIsInvalidAndChangesNothing(t *testing.T) {
	a, cl := newLocalNode(t)
	if _, _, err := a.Register(source.Entry{VIP: "/keep:80", Backend: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.Register(source.Entry{VIP: "/bad name:80", Backend: "10.0.0.2:80"})
	var invalid *api.InvalidError
	if !errors.As(err, &invalid) {
		t.Fatalf("bad VIP: err = %v, want an InvalidError", err)
	}
	if removed, _, err := a.Deregister(source.Entry{VIP: "/other:80", Backend: "10.0.0.1:80"}); removed || err != nil {
		t.Errorf("deregistering an unknown backend: removed=%v err=%v", removed, err)
	}
	eventually(t, "the good registration stays", func() bool { p := published(cl); return len(p) == 1 && p["10.0.0.1:80"] })
	if got := a.store.List(); len(got) != 1 {
		t.Errorf("store holds %d registrations, want 1", len(got))
	}
}

// A backend with a health check is published as healthy only after a check
// passes; here nothing listens, so it stays out.
func TestCheckedBackendWaitsForItsCheck(t *testing.T) {
	a, cl := newLocalNode(t)
	if _, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: "127.0.0.1:1", Check: "tcp"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "published", func() bool { return len(published(cl)) == 1 })
	for _, n := range cl.State() {
		for _, r := range n.Backends {
			if r.Health != "unhealthy" {
				t.Errorf("a backend whose check never passed is published %q", r.Health)
			}
		}
	}
}

// An IP VIP on the service key (address, port, protocol) the table gives a
// named VIP is refused at once (the table would leave it out), and nothing
// is stored; on another port of that address it is served.
func TestIPVIPOnANamedVIPsAddressIsRefused(t *testing.T) {
	a, _ := newLocalNode(t)
	if _, _, err := a.Register(source.Entry{VIP: "/app:80", Backend: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	var addr string
	eventually(t, "the named VIP is placed", func() bool {
		tab := a.core.Table()
		if len(tab.VIPs) != 1 {
			return false
		}
		addr = tab.VIPs[0].Addr.String()
		return true
	})
	if _, _, err := a.Register(source.Entry{VIP: addr + ":443", Backend: "10.0.0.2:443"}); err != nil {
		t.Errorf("an IP VIP on another port of a named VIP's address: %v; the table keeps both", err)
	}
	_, _, err := a.Register(source.Entry{VIP: addr + ":80", Backend: "10.0.0.2:80"})
	var invalid *api.InvalidError
	if !errors.As(err, &invalid) || !strings.Contains(err.Error(), "the named VIP /app (marathon) holds") {
		t.Fatalf("IP VIP on %s: err = %v, want an InvalidError naming /app", addr, err)
	}
	if n := a.store.Len(); n != 2 {
		t.Errorf("store holds %d registrations, want 2", n)
	}
}

// Deregistering a backend that the services directory publishes names the
// file to edit, and withdraws nothing.
func TestDeregisterOfADirectoryBackendNamesItsFile(t *testing.T) {
	a, cl := newLocalNode(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.json")
	if err := os.WriteFile(file, []byte(`{"vip": "/app:80", "backend": "10.0.0.7:80"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a.dir = source.NewDir(source.DirConfig{Path: dir, Log: quietLog()})
	set, _ := a.dir.Scan()
	a.replace(SourceDir, set)
	eventually(t, "published", func() bool { return published(cl)["10.0.0.7:80"] })
	removed, _, err := a.Deregister(source.Entry{VIP: "/app:80", Backend: "10.0.0.7:80"})
	if removed || err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("deregister: removed=%v err=%v, want an error naming %s", removed, err, file)
	}
	if !published(cl)["10.0.0.7:80"] {
		t.Error("the directory's backend was withdrawn")
	}
}

// Concurrent registrations and deregistrations of one key, with no lock
// across the store's fsync: whatever order they took effect in, what the
// node publishes ends as what the store holds.
func TestConcurrentChangesOfOneKeyEndAsTheStore(t *testing.T) {
	for round := 0; round < 5; round++ {
		a, cl := newLocalNode(t)
		e := source.Entry{VIP: "/app:80", Backend: "10.0.0.1:80"}
		var wg sync.WaitGroup
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				var err error
				if i%2 == 0 {
					w := uint32(i)
					x := e
					x.Weight = &w
					_, _, err = a.Register(x)
				} else {
					_, _, err = a.Deregister(e)
				}
				if err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		l, held := a.store.Get(local(t, e).Key())
		eventually(t, "published equals the store", func() bool {
			for _, n := range cl.State() {
				for _, r := range n.Backends {
					return held && r.Weight == l.Weight
				}
			}
			return !held
		})
	}
}
