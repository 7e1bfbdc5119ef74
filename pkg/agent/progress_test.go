package agent

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// progressNode is one agent without a kernel: gossip on the in-memory
// network, a Core whose tables count as programmed when built, and the
// reporter of what was applied.
type progressNode struct {
	a      *localNode
	cancel context.CancelFunc
}

func startProgressNode(t testing.TB, net *memnet.Network, name string, seeds ...string) (*progressNode, string) {
	t.Helper()
	tr := net.NewTransport()
	cluster, err := gossip.New(gossip.Config{NodeName: name, Transport: tr, Join: seeds})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rep := newAppliedReporter(cluster, nil)
	core := NewCore(CoreConfig{Node: name, OnApplied: rep.applied}, cluster)
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { _ = core.Run(ctx) }()
	go rep.run(ctx)
	t.Cleanup(func() { cancel(); _ = cluster.Shutdown() })
	return &progressNode{a: &localNode{core: core, cluster: cluster}, cancel: cancel}, tr.Addr()
}

func waitProgress(t *testing.T, n *progressNode, e source.Entry, want string, cond func(api.Progress) bool) api.Progress {
	t.Helper()
	var p api.Progress
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if p, err = n.a.Progress(e, want); err == nil && cond(p) {
			return p
		}
	}
	t.Fatalf("progress %s never held: %+v, %v", want, p, err)
	return p
}

// Register and deregister are done only once every live node reports a
// table built from the version that carries them; a node that reports
// nothing keeps them pending.
func TestProgressFollowsEveryLiveNode(t *testing.T) {
	net := memnet.New()
	a, seed := startProgressNode(t, net, "a")
	b, _ := startProgressNode(t, net, "b", seed)
	c, _ := startProgressNode(t, net, "c", seed)
	e := source.Entry{VIP: "/app:80", Backend: "10.0.0.1:8080"}
	if _, err := a.a.Progress(e, api.WaitRegistered); err == nil {
		t.Fatal("progress of a backend not registered: no error")
	}
	l, err := e.Parse()
	if err != nil {
		t.Fatal(err)
	}
	a.a.core.Update(SourceAPI, []source.Local{l}, nil)
	p := waitProgress(t, a, e, api.WaitRegistered, func(p api.Progress) bool { return p.Done })
	if p.Live != 3 || !slices.Equal(p.Applied, []string{"a", "b", "c"}) || p.Version == "" {
		t.Fatalf("registered: %+v", p)
	}
	// c stops reporting (its Core and reporter stop; gossip stays up):
	// the next change stays pending on c.
	c.cancel()
	time.Sleep(100 * time.Millisecond)
	a.a.core.Update(SourceAPI, nil, []string{l.Key()})
	p = waitProgress(t, a, e, api.WaitDrained, func(p api.Progress) bool {
		return slices.Equal(p.Applied, []string{"a", "b"}) && slices.Equal(p.Pending, []string{"c"})
	})
	if p.Done || p.Reason == "" {
		t.Fatalf("drained with c behind: %+v", p)
	}
	if _, err := b.a.Progress(e, api.WaitDrained); err != nil {
		t.Fatalf("b: %v", err)
	}
	if _, err := a.a.Progress(source.Entry{VIP: "/app:80", Backend: "10.0.0.1:8080"}, api.WaitRegistered); err == nil {
		t.Fatal("registered wait on a deregistered backend: no error")
	}
}
