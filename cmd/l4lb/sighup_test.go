package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/api"
)

// TestSIGHUPRotatesKeysOfRunningAgents rotates the gossip key of two real
// `l4lb agent --dataplane none` processes the way the README tells an
// operator to (one key a line, the first encrypts: add the new key, switch
// to it, remove the old one, each time rewriting the key file and sending
// SIGHUP to every agent). After each round both agents are alive members of
// each other and a backend registered with `l4lb register` on either
// reaches the other's /v1/vips. Then an agent started with only the old key
// is refused (no member of the cluster, not ready) while one started
// beside it with only the new key joins; and a bad key file on SIGHUP is
// refused with a log line that names the file and the fault, the agent
// running on, gossiping under its current key.
func TestSIGHUPRotatesKeysOfRunningAgents(t *testing.T) {
	bin := buildL4LB(t)
	oldKey, newKey := testKey(1), testKey(2)
	taken := map[string]bool{}
	a := startProcAgent(t, bin, "node-a", taken, nil, oldKey)
	b := startProcAgent(t, bin, "node-b", taken, []*procAgent{a}, oldKey)
	a.waitReady(t, 30*time.Second)
	b.waitReady(t, 30*time.Second)
	pair := []*procAgent{a, b}
	requireMembers(t, pair, pair)
	t.Logf("node-a %s and node-b %s are members of each other, under the old key", a.addr, b.addr)

	for round, keys := range [][]string{{oldKey, newKey}, {newKey, oldKey}, {newKey}} {
		for _, p := range pair {
			p.writeKeys(t, keys...)
			p.hup(t)
		}
		for _, p := range pair {
			p.waitLog(t, "gossip keys reloaded", round+1, 10*time.Second, func(l logLine) error {
				if n, _ := l["keys"].(float64); int(n) != len(keys) {
					return fmt.Errorf("keys=%v, want %d", l["keys"], len(keys))
				}
				return nil
			})
		}
		requireMembers(t, pair, pair)
		for k, from := range pair {
			backend := fmt.Sprintf("192.0.2.%d:8080", 10*(round+1)+k)
			from.l4lb(t, bin, "register", "/rot/app:80", backend)
			pair[1-k].waitBackend(t, "/rot/app:80", backend, 15*time.Second)
		}
		t.Logf("round %d (key file: %d keys, the %s key first): SIGHUP to both, both reloaded, still members, a registration on each reached the other", round+1, len(keys), map[bool]string{true: "old", false: "new"}[keys[0] == oldKey])
	}

	stale := startProcAgent(t, bin, "node-stale", taken, []*procAgent{a}, oldKey)
	fresh := startProcAgent(t, bin, "node-fresh", taken, []*procAgent{a}, newKey)
	fresh.waitReady(t, 30*time.Second)
	requireMembers(t, []*procAgent{a, b, fresh}, []*procAgent{a, b, fresh})
	// The old-key agent has had as long as the new-key one took to join,
	// and a few seconds of retries more.
	time.Sleep(3 * time.Second)
	if stale.exited() {
		t.Fatalf("node-stale exited; it should keep trying its seed:\n%s", stale.logText())
	}
	for _, p := range []*procAgent{a, b, fresh} {
		if m, ok := p.members(t)["node-stale"]; ok {
			t.Errorf("%s lists node-stale (%s), which has only the removed key", p.name, m.State)
		}
	}
	if m := stale.members(t); len(m) != 1 {
		t.Errorf("node-stale, with only the removed key, sees members %v; want itself only", m)
	}
	if stale.ready() {
		t.Error("node-stale, with only the removed key, answers /readyz 200")
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("node-stale (old key only) is no member of node-a, node-b or node-fresh and not ready; node-fresh (new key only) joined")

	for k, bad := range []struct{ content, want string }{
		{"this is not a key\n", "line 1: not base64"},
		{base64.StdEncoding.EncodeToString([]byte("8 bytes!")) + "\n", "line 1: key of 8 bytes, want 16, 24 or 32"},
	} {
		a.writeRaw(t, bad.content)
		a.hup(t)
		a.waitLog(t, "reload: gossip keys unchanged", k+1, 10*time.Second, func(l logLine) error {
			e, _ := l["error"].(string)
			if l["level"] != "error" || !strings.Contains(e, a.keyFile) || !strings.Contains(e, bad.want) {
				return fmt.Errorf("level %v, error %q: want level error and an error naming %s and %q", l["level"], e, a.keyFile, bad.want)
			}
			return nil
		})
		if a.exited() {
			t.Fatalf("node-a exited after SIGHUP with a bad key file:\n%s", a.logText())
		}
		requireMembers(t, []*procAgent{a, b, fresh}, []*procAgent{a, b, fresh})
		backend := fmt.Sprintf("192.0.2.%d:8080", 100+k)
		b.l4lb(t, bin, "register", "/rot/app:80", backend)
		a.waitBackend(t, "/rot/app:80", backend, 15*time.Second)
		if n := len(a.logLines(t, "gossip keys reloaded")); n != 3 {
			t.Errorf("node-a logged %d successful reloads, want the 3 of the rotation only", n)
		}
	}
	t.Logf("a bad key file on SIGHUP: refused and logged (%q), node-a keeps running on the new key: a registration on node-b reached it", a.logLines(t, "reload: gossip keys unchanged")[0]["error"])
}

// testKey is a 32-byte gossip key, base64 as a key file holds it.
func testKey(seed byte) string {
	k := make([]byte, 32)
	for i := range k {
		k[i] = seed*100 + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// buildL4LB builds this command into a temporary directory.
func buildL4LB(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "l4lb")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// procAgent is one `l4lb agent --dataplane none` process, alone on an
// address of 127.0.0.0/8 of its own, on the default ports (gossip 7946,
// API 62080, DNS 10053), logging JSON to a file.
type procAgent struct {
	name, addr, keyFile, logFile string
	cmd                          *exec.Cmd
	done                         chan struct{} // closed when the process has ended
}

// Ports every procAgent uses on its own address.
const (
	procGossipPort = "7946"
	procAPIPort    = "62080"
	procDNSPort    = "10053"
)

// freeLoopbackAddr picks an address of 127.0.0.0/8 that no other test
// process listens on at the agent's ports and that taken does not hold.
func freeLoopbackAddr(t *testing.T, taken map[string]bool) string {
	t.Helper()
	for range 50 {
		addr := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		if taken[addr] || !portsFree(addr) {
			continue
		}
		taken[addr] = true
		return addr
	}
	t.Fatal("no free address of 127.0.0.0/8 in 50 tries")
	return ""
}

// portsFree reports whether the agent's TCP and UDP ports are free on addr.
func portsFree(addr string) bool {
	for _, port := range []string{procGossipPort, procAPIPort, procDNSPort} {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, port))
		if err != nil {
			return false
		}
		l.Close()
		if port == procAPIPort {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort(addr, port))
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// startProcAgent starts an agent joining seeds, with a key file holding
// keys; the test's cleanup stops it (SIGTERM, then SIGKILL after 10 s).
func startProcAgent(t *testing.T, bin, name string, taken map[string]bool, seeds []*procAgent, keys ...string) *procAgent {
	t.Helper()
	dir := t.TempDir()
	p := &procAgent{name: name, addr: freeLoopbackAddr(t, taken), keyFile: filepath.Join(dir, "gossip.key"), logFile: filepath.Join(dir, "agent.log"), done: make(chan struct{})}
	p.writeKeys(t, keys...)
	var join []string
	for _, s := range seeds {
		join = append(join, net.JoinHostPort(s.addr, procGossipPort))
	}
	logf, err := os.Create(p.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, "agent", "--dataplane", "none", "--node-name", name,
		"--bind", p.addr, "--gossip-port", procGossipPort, "--join", strings.Join(join, ","),
		"--api-listen", net.JoinHostPort(p.addr, procAPIPort), "--dns-listen", net.JoinHostPort(p.addr, procDNSPort),
		"--dns-forward=false", "--state-dir", filepath.Join(dir, "state"), "--gossip-key-file", p.keyFile,
		"--log-format", "json")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not stop within 10s of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("log of %s (%s):\n%s", name, p.addr, p.logText())
		}
	})
	return p
}

func (p *procAgent) api() string { return net.JoinHostPort(p.addr, procAPIPort) }

func (p *procAgent) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// writeKeys writes the agent's key file: one base64 key a line.
func (p *procAgent) writeKeys(t *testing.T, keys ...string) {
	t.Helper()
	p.writeRaw(t, strings.Join(keys, "\n")+"\n")
}

func (p *procAgent) writeRaw(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(p.keyFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP to the agent process, as `kill -HUP` does.
func (p *procAgent) hup(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("kill -HUP %s (pid %d): %v", p.name, p.cmd.Process.Pid, err)
	}
}

func (p *procAgent) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.api() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReady waits until the agent answers /readyz with 200; it fails at
// once, with the log, if the process ended.
func (p *procAgent) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	for start := time.Now(); time.Since(start) < within; time.Sleep(100 * time.Millisecond) {
		if p.exited() {
			t.Fatalf("%s exited before it was ready:\n%s", p.name, p.logText())
		}
		if p.ready() {
			return
		}
	}
	t.Fatalf("%s not ready within %v", p.name, within)
}

// members returns the agent's /v1/members by name.
func (p *procAgent) members(t *testing.T) map[string]api.Member {
	t.Helper()
	m, err := api.NewClient(p.api()).Members(context.Background())
	if err != nil {
		t.Fatalf("%s: GET /v1/members: %v", p.name, err)
	}
	out := map[string]api.Member{}
	for _, x := range m.Members {
		out[x.Name] = x
	}
	return out
}

// requireMembers waits up to 15 s until every agent of of lists every agent
// of want as alive, and fails if one does not or an agent process ended.
func requireMembers(t *testing.T, of, want []*procAgent) {
	t.Helper()
	var missing []string
	for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(200 * time.Millisecond) {
		missing = missing[:0]
		for _, p := range of {
			if p.exited() {
				t.Fatalf("%s exited:\n%s", p.name, p.logText())
			}
			m := p.members(t)
			for _, w := range want {
				if m[w.name].State != "alive" {
					missing = append(missing, fmt.Sprintf("%s sees %s as %q", p.name, w.name, m[w.name].State))
				}
			}
		}
		if len(missing) == 0 {
			return
		}
	}
	t.Fatalf("not all members alive within 15s: %s", strings.Join(missing, "; "))
}

// waitBackend waits until the agent's /v1/vips lists backend under label.
func (p *procAgent) waitBackend(t *testing.T, label, backend string, within time.Duration) {
	t.Helper()
	for start := time.Now(); time.Since(start) < within; time.Sleep(100 * time.Millisecond) {
		v, err := api.NewClient(p.api()).VIPs(context.Background())
		if err != nil {
			continue
		}
		for _, x := range v.VIPs {
			for _, b := range x.Backends {
				if x.Label == label && b.Address == backend {
					return
				}
			}
		}
	}
	t.Fatalf("%s: %s of %s not in /v1/vips within %v", p.name, backend, label, within)
}

// l4lb runs the l4lb command line against the agent's API.
func (p *procAgent) l4lb(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(args, "--api", p.api())...).CombinedOutput()
	if err != nil {
		t.Fatalf("l4lb %s (on %s): %v\n%s", strings.Join(args, " "), p.name, err, out)
	}
}

// logLine is one JSON line of an agent's log.
type logLine map[string]any

func (p *procAgent) logText() string {
	b, _ := os.ReadFile(p.logFile)
	return string(b)
}

// logLines returns the agent's log lines whose message is msg.
func (p *procAgent) logLines(t *testing.T, msg string) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader([]byte(p.logText())))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits until the agent has logged msg n times, and checks the
// n-th line with check.
func (p *procAgent) waitLog(t *testing.T, msg string, n int, within time.Duration, check func(logLine) error) {
	t.Helper()
	var got []logLine
	for start := time.Now(); time.Since(start) < within; time.Sleep(50 * time.Millisecond) {
		if got = p.logLines(t, msg); len(got) >= n {
			if err := check(got[n-1]); err != nil {
				t.Fatalf("%s: log line %d %q: %v", p.name, n, msg, err)
			}
			return
		}
	}
	t.Fatalf("%s: logged %q %d times within %v, want %d", p.name, msg, len(got), within, n)
}
