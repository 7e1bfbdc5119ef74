package gossip

import (
	"errors"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// TestDuplicateNameIsRefused: a second process that joins under the name of
// a live member gets ErrNameConflict and stops; the live member keeps its
// name, its generation and its backends on every node, and the second
// process's record (published before it started) reaches nobody's State().
func TestDuplicateNameIsRefused(t *testing.T) {
	for run := range 5 {
		net := memnet.New()
		nodes := startMemCluster(t, net, 3, nil)
		orig := nodes[1]
		mine := []vip.Registration{reg("/orig", 80, "10.0.0.1:8080")}
		if err := orig.c.PublishDelta(mine, nil); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			waitFor(t, 5*time.Second, "the original's backends everywhere", func() bool { return holdsExactly(n.c, orig.name, mine) })
		}
		gen := orig.c.Generation()

		logger, _ := testLogger()
		dup, err := New(Config{NodeName: orig.name, Join: []string{nodes[0].tr.Addr()}, Logger: logger, Transport: net.NewTransport()})
		if err != nil {
			t.Fatal(err)
		}
		if err := dup.PublishDelta([]vip.Registration{reg("/dup", 80, "10.0.0.2:8080")}, nil); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := dup.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = dup.Shutdown() })
		select {
		case err := <-dup.NameConflict():
			if !errors.Is(err, ErrNameConflict) {
				t.Fatalf("run %d: NameConflict sent %v, want ErrNameConflict", run, err)
			}
			t.Logf("run %d: refused in %v: %v", run, time.Since(start).Round(time.Millisecond), err)
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d: the second process under %q was not refused within 5 s", run, orig.name)
		}
		if err := dup.PublishDelta([]vip.Registration{reg("/dup2", 80, "10.0.0.3:8080")}, nil); !errors.Is(err, ErrLeft) {
			t.Errorf("run %d: PublishDelta after the conflict = %v, want ErrLeft", run, err)
		}
		select {
		case err := <-orig.c.NameConflict():
			t.Fatalf("run %d: the original got a conflict too: %v", run, err)
		default:
		}
		// Settle, then every node holds the original's record only.
		time.Sleep(2 * time.Second)
		for _, n := range nodes {
			if !holdsExactly(n.c, orig.name, mine) {
				got, _ := nodeBackends(n.c, orig.name)
				t.Errorf("run %d: %s holds %v for %s, want the original's %v", run, n.name, got, orig.name, mine)
			}
		}
		if g := orig.c.Generation(); g != gen {
			t.Errorf("run %d: the original's generation moved from %d to %d", run, gen, g)
		}
		for _, n := range nodes {
			_ = n.c.Shutdown()
		}
	}
}
