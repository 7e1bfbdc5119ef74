package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/gossip"
)

// handedOut holds the ports freeLoopbackPort gave this test process: a
// port closed after the probe may be handed again by the kernel, and an
// agent whose API and gossip ports are the same one cannot start.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freeLoopbackPort returns a port free for TCP and UDP on 127.0.0.1, one
// not returned before in this process.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if handedOut.ports[port] {
			l.Close()
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1")
	return 0
}

// loopbackAgent is the Options of an agent on 127.0.0.1 with no data
// plane, on free ports, joining seeds (host:port).
func loopbackAgent(t *testing.T, name string, seeds ...string) Options {
	t.Helper()
	l := logrus.New()
	l.Out = io.Discard
	if testing.Verbose() {
		l.Out = os.Stderr
	}
	return Options{
		NodeName: name, Bind: "127.0.0.1", GossipPort: freeLoopbackPort(t), Join: seeds,
		APIListen: "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t)),
		DNSListen: []string{"127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))},
		Domain:    "l4lb.thisdcos.directory", DNSTTL: 5 * time.Second,
		VIPCIDR: netip.MustParsePrefix("11.0.0.0/8"), VIP6CIDR: netip.MustParsePrefix("fd01:c::/64"),
		StateDir: t.TempDir(), DataPlane: "none", Log: logrus.NewEntry(l),
	}
}

// runningAgent is an agent run in this process by startAgent.
type runningAgent struct {
	o    Options
	done chan struct{} // closed when Run returned
	err  error         // Run's result, once done is closed
}

// startAgent runs o until the test ends.
func startAgent(t *testing.T, o Options) *runningAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{o: o, done: make(chan struct{})}
	go func() { r.err = Run(ctx, o); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("agent %s did not stop within 10 s", o.NodeName)
		}
	})
	return r
}

// waitReady waits until every agent answers /readyz with 200, and fails
// with the agent's own error at once if one of them stopped.
func waitReady(t *testing.T, agents ...*runningAgent) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range agents {
		for !ready(r.o.APIListen) {
			select {
			case <-r.done:
				t.Fatalf("agent %s stopped before it was ready: %v", r.o.NodeName, r.err)
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent %s not ready within 10 s (API %s)", r.o.NodeName, r.o.APIListen)
			}
		}
	}
}

// ready says whether the agent at api answers /readyz with 200.
func ready(api string) bool {
	resp, err := http.Get("http://" + api + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestDuplicateNodeNameExits: a second agent under the --node-name of a
// live agent stops with an error that names the conflict, while the first
// keeps running and ready.
func TestDuplicateNodeNameExits(t *testing.T) {
	a := loopbackAgent(t, "node-a")
	doneA := startAgent(t, a)
	b := loopbackAgent(t, "node-b", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.GossipPort)))
	waitReady(t, doneA, startAgent(t, b))

	dup := loopbackAgent(t, "node-a", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.GossipPort)))
	start := time.Now()
	doneDup := startAgent(t, dup)
	select {
	case <-doneDup.done:
		err := doneDup.err
		if !errors.Is(err, gossip.ErrNameConflict) || !strings.Contains(err.Error(), "--node-name") {
			t.Fatalf("the duplicate agent ended with %v, want an ErrNameConflict naming --node-name", err)
		}
		t.Logf("duplicate refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("an agent under a live agent's --node-name still runs after 10 s")
	}
	select {
	case <-doneA.done:
		t.Fatalf("the first agent stopped: %v", doneA.err)
	case <-time.After(time.Second):
	}
	if !ready(a.APIListen) {
		t.Error("the first agent is no longer ready")
	}
}
