package gossip

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// testLogger returns a logger that writes nowhere and a hook that keeps
// every entry, for assertions on logs.
func testLogger() (*logrus.Entry, *test.Hook) {
	l := logrus.New()
	l.Out = io.Discard
	l.Level = logrus.InfoLevel
	hook := test.NewLocal(l)
	return logrus.NewEntry(l), hook
}

// memNode describes one node on an in-memory network.
type memNode struct {
	name string
	tr   *memnet.Transport
	c    *Cluster
	hook *test.Hook
}

// startMem starts a node named name on net, joining seeds; tweak may adjust
// the config.
func startMem(t testing.TB, net *memnet.Network, name string, tweak func(*Config), seeds ...string) *memNode {
	t.Helper()
	return startMemAt(t, net, net.NewTransport(), name, tweak, seeds...)
}

func startMemAt(t testing.TB, net *memnet.Network, tr *memnet.Transport, name string, tweak func(*Config), seeds ...string) *memNode {
	t.Helper()
	logger, hook := testLogger()
	cfg := Config{
		NodeName:  name,
		Join:      seeds,
		Logger:    logger,
		Transport: tr,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("new %s: %v", name, err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	return &memNode{name: name, tr: tr, c: c, hook: hook}
}

// startMemCluster starts n nodes, each joining the first.
func startMemCluster(t testing.TB, net *memnet.Network, n int, tweak func(*Config)) []*memNode {
	t.Helper()
	nodes := make([]*memNode, 0, n)
	for i := range n {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].tr.Addr()}
		}
		nodes = append(nodes, startMem(t, net, fmt.Sprintf("node-%02d", i), tweak, seeds...))
	}
	return nodes
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reg builds a registration of backend for the named VIP name:port.
func reg(name string, port uint16, backend string) vip.Registration {
	return vip.Registration{
		VIP:       vip.Spec{Protocol: vip.TCP, Name: name, Port: port},
		Framework: vip.DefaultFramework,
		Backend:   netip.MustParseAddrPort(backend),
		Weight:    1,
		Health:    vip.Healthy,
		Claim:     vip.Claim{Addr: netip.MustParseAddr("11.0.0.1"), Since: time.Unix(1700000000, 5).UTC()},
	}
}

// nodeBackends returns the backends State() holds for node, and whether
// the node is in State() at all.
func nodeBackends(c *Cluster, node string) ([]vip.Registration, bool) {
	for _, n := range c.State() {
		if n.Node == node {
			return n.Backends, true
		}
	}
	return nil, false
}

// holdsExactly reports whether c's State() has node with exactly regs.
func holdsExactly(c *Cluster, node string, regs []vip.Registration) bool {
	got, ok := nodeBackends(c, node)
	return ok && equalRegistrations(got, normalizeRegistrations(regs))
}

// memberState returns what c believes of node.
func memberState(c *Cluster, node string) MemberState {
	for _, m := range c.Members() {
		if m.Name == node {
			return m.State
		}
	}
	return ""
}

// waitForNoFatal is waitFor that marks the test failed and returns.
func waitForNoFatal(t testing.TB, timeout time.Duration, what string, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out after %v waiting for %s", timeout, what)
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// key returns a 32-byte gossip key filled with b.
func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// freePort finds a port free for both UDP and TCP on ip.
func freePort(t testing.TB, ip string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// manyRegs returns n distinct registrations.
func manyRegs(n int) []vip.Registration {
	out := make([]vip.Registration, n)
	for i := range out {
		out[i] = reg(fmt.Sprintf("/app-%d", i%97), uint16(8000+i%13), fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 1000+i%7))
	}
	return out
}
