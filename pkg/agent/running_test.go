package agent

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// seesBackend says whether the agent at apiAddr has backend in its table
// for the VIP labelled label.
func seesBackend(apiAddr, label, backend string) bool {
	v, err := api.NewClient(apiAddr).VIPs(context.Background())
	if err != nil {
		return false
	}
	for _, x := range v.VIPs {
		if x.Label != label {
			continue
		}
		for _, b := range x.Backends {
			if b.Address == backend {
				return true
			}
		}
	}
	return false
}

// gossipAddr is o's gossip address, host:port.
func gossipAddr(o Options) string { return net.JoinHostPort(o.Bind, strconv.Itoa(o.GossipPort)) }

// TestServicesDirectoryThroughRunningAgents: a file written into a running
// agent's --services-dir reaches another agent's table, a change of it
// too, and its removal takes the backend out.
func TestServicesDirectoryThroughRunningAgents(t *testing.T) {
	dir := t.TempDir()
	a := loopbackAgent(t, "node-a")
	a.ServicesDir = dir
	ra := startAgent(t, a)
	b := loopbackAgent(t, "node-b", gossipAddr(a))
	waitReady(t, ra, startAgent(t, b))

	file := filepath.Join(dir, "app.json")
	if err := os.WriteFile(file, []byte(`{"vip": "/svc/app:80", "backend": "10.0.0.1:8080"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file's backend on node-b", func() bool { return seesBackend(b.APIListen, "/svc/app:80", "10.0.0.1:8080") })
	if err := os.WriteFile(file, []byte(`[{"vip": "/svc/app:80", "backend": "10.0.0.2:8080"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the changed file on node-b", func() bool {
		return seesBackend(b.APIListen, "/svc/app:80", "10.0.0.2:8080") && !seesBackend(b.APIListen, "/svc/app:80", "10.0.0.1:8080")
	})
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the removed file's backend gone from node-b", func() bool { return !seesBackend(b.APIListen, "/svc/app:80", "10.0.0.2:8080") })
}

// writeKeys writes a gossip key file holding keys, the first encrypting.
func writeKeys(t *testing.T, path string, keys ...[]byte) {
	t.Helper()
	var s string
	for _, k := range keys {
		s += base64.StdEncoding.EncodeToString(k) + "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSIGHUPRotatesTheGossipKey: two running agents rotate their gossip
// key as an operator does (add the new key second, reload every node; move
// it first, reload; remove the old one, reload) while registrations keep
// flowing between them; at the end an agent with only the new key joins
// and one with only the old key does not.
func TestSIGHUPRotatesTheGossipKey(t *testing.T) {
	oldKey, newKey := make([]byte, 32), make([]byte, 32)
	for i := range oldKey {
		oldKey[i], newKey[i] = byte(i), byte(100+i)
	}
	var agents []Options
	var running []*runningAgent
	reload := map[string]chan struct{}{}
	for _, name := range []string{"node-a", "node-b"} {
		var seeds []string
		if len(agents) > 0 {
			seeds = []string{gossipAddr(agents[0])}
		}
		o := loopbackAgent(t, name, seeds...)
		o.GossipKeyFile = filepath.Join(t.TempDir(), "gossip.key")
		writeKeys(t, o.GossipKeyFile, oldKey)
		ch := make(chan struct{})
		o.Reload, reload[name] = ch, ch
		running = append(running, startAgent(t, o))
		agents = append(agents, o)
	}
	a, b := agents[0], agents[1]
	waitReady(t, running...)

	step := func(n int, keys ...[]byte) {
		t.Helper()
		for _, o := range agents {
			writeKeys(t, o.GossipKeyFile, keys...)
			select {
			case reload[o.NodeName] <- struct{}{}:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s did not take the reload", o.NodeName)
			}
		}
		backend := "10.0.1." + strconv.Itoa(n) + ":8080"
		if _, err := api.NewClient(a.APIListen).Register(context.Background(), source.Entry{VIP: "/rot/app:80", Backend: backend}); err != nil {
			t.Fatalf("step %d: register: %v", n, err)
		}
		eventually(t, "step "+strconv.Itoa(n)+": node-a's new backend on node-b", func() bool { return seesBackend(b.APIListen, "/rot/app:80", backend) })
	}
	step(1, oldKey, newKey)
	step(2, newKey, oldKey)
	step(3, newKey)

	fresh := loopbackAgent(t, "node-c", gossipAddr(a))
	fresh.GossipKeyFile = filepath.Join(t.TempDir(), "gossip.key")
	writeKeys(t, fresh.GossipKeyFile, newKey)
	startAgent(t, fresh)
	eventually(t, "node-c, with the new key only, joined and holds node-a's backends", func() bool {
		return seesBackend(fresh.APIListen, "/rot/app:80", "10.0.1.3:8080")
	})
	stale := loopbackAgent(t, "node-d", gossipAddr(a))
	stale.GossipKeyFile = filepath.Join(t.TempDir(), "gossip.key")
	writeKeys(t, stale.GossipKeyFile, oldKey)
	startAgent(t, stale)
	time.Sleep(3 * time.Second)
	if seesBackend(stale.APIListen, "/rot/app:80", "10.0.1.3:8080") || ready(stale.APIListen) {
		t.Error("node-d, with the removed key only, reached the cluster")
	}
}
