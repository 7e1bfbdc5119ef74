package scenario

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/vip"
)

// Env is a running cluster of agents.
type Env struct {
	T       bed.T
	C       *bed.Cluster
	Bin     string // path of the l4lb binary
	DemoApp string // path of the l4lb-demoapp binary
	KeyFile string
	Agents  map[int]*bed.Process
	Apps    map[string]*bed.Process
	Say     func(format string, args ...any) // narration (t.Logf in tests)
	Plane   Plane                            // what the agents program (--dataplane)
	// AgentFlags are more flags for node i's agent (--docker-endpoint, say).
	AgentFlags map[int][]string
	kernels    map[int]ipvs.Interface
	outside    *Outside // the client outside the cluster (public.go)
}

// APIAddr is where every agent's API listens, inside its node.
const APIAddr = "127.0.0.1:62080"

// DNSAddr is where every agent serves DNS, inside its node, with the IPVS
// data plane (the agent holds it on its dummy interface). With nftables
// each agent serves DNS on its node's address (DNS).
const DNSAddr = "198.51.100.1"

// New builds an n-node cluster for agents on the IPVS data plane and writes
// a gossip key for it.
func New(t bed.T, n int, l4lb, demoapp string, say func(string, ...any)) *Env {
	t.Helper()
	return NewPlane(t, IPVS, n, l4lb, demoapp, say)
}

// NewPlane builds an n-node cluster for agents on data plane p and writes a
// gossip key for it. It fails the test when the kernel cannot run p.
func NewPlane(t bed.T, p Plane, n int, l4lb, demoapp string, say func(string, ...any)) *Env {
	t.Helper()
	e := &Env{T: t, C: bed.NewCluster(t, n), Bin: l4lb, DemoApp: demoapp, Agents: map[int]*bed.Process{}, Apps: map[string]*bed.Process{}, Say: say, Plane: p, kernels: map[int]ipvs.Interface{}}
	p.RequireKernel(t, e.C.Switch)
	for _, node := range e.C.Nodes {
		p.prepareNode(t, node)
	}
	e.KeyFile = filepath.Join(t.TempDir(), "gossip.key")
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(e.KeyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatalf("write gossip key: %v", err)
	}
	return e
}

// StartAgent starts node i's agent.
func (e *Env) StartAgent(i int) {
	e.T.Helper()
	n := e.C.Node(i)
	var join []string
	for _, m := range e.C.Nodes {
		if m.Index != i {
			join = append(join, m.Addr.String())
		}
	}
	args := []string{e.Bin, "agent",
		"--node-name", n.Name, "--bind", n.Addr.String(), "--join", strings.Join(join, ","),
		"--state-dir", n.StateDir, "--gossip-key-file", e.KeyFile,
		"--dns-upstreams", "127.0.0.1:1", "--log-level", "debug", "--drain-timeout", "20s",
		"--dataplane", string(e.plane()), "--dns-listen", net.JoinHostPort(e.DNS(i), "53"),
		"--stats-listen", net.JoinHostPort(n.Addr.String(), strconv.Itoa(StatsPort)),
	}
	args = append(args, publicFlags(i)...)
	args = append(args, e.AgentFlags[i]...)
	e.Agents[i] = n.Start(e.T, fmt.Sprintf("agent-%s-%d", n.Name, time.Now().UnixNano()), args...)
}

// WaitReady waits until node i's agent answers /readyz with 200.
func (e *Env) WaitReady(i int, within time.Duration) {
	e.T.Helper()
	n := e.C.Node(i)
	c := n.HTTPClient(2 * time.Second)
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		if p := e.Agents[i]; p != nil && p.Exited() {
			e.T.Fatalf("agent on %s exited:\n%s", n.Name, p.Log())
		}
		resp, err := c.Get("http://" + APIAddr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.T.Fatalf("agent on %s not ready within %s: %s", n.Name, within, last)
}

// L4LB runs the l4lb command line in node i and returns its output.
func (e *Env) L4LB(i int, args ...string) string {
	e.T.Helper()
	return e.C.Node(i).MustRun(e.T, append([]string{e.Bin}, args...)...)
}

// StartApp starts a demo app instance on node i, on the node's address.
func (e *Env) StartApp(i int, name string, port int) string {
	e.T.Helper()
	n := e.C.Node(i)
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(port))
	e.Apps[name] = n.Start(e.T, "app-"+name, e.DemoApp, "--listen", addr, "--name", name)
	// Wait until it answers.
	c := n.HTTPClient(time.Second)
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(50 * time.Millisecond) {
		if resp, err := c.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return addr
		}
	}
	e.T.Fatalf("demo app %s on %s does not answer", name, addr)
	return ""
}

// FailFile is the file that makes the demo app instance fail its health
// check while it exists.
func FailFile(name string) string { return "/tmp/l4lb-demoapp-" + name + ".fail" }

// plane is e.Plane, IPVS when unset.
func (e *Env) plane() Plane {
	if e.Plane == "" {
		return IPVS
	}
	return e.Plane
}

// DNS is the address node i's agent serves DNS on: DNSAddr with IPVS, the
// node's own address with nftables.
func (e *Env) DNS(i int) string {
	if e.plane() == NFTables {
		return e.C.Node(i).Addr.String()
	}
	return DNSAddr
}

// Dig asks node i's DNS server for name and returns the answers (dig +short).
func (e *Env) Dig(i int, name, qtype string) []string {
	e.T.Helper()
	out, err := e.C.Node(i).Run("dig", "@"+e.DNS(i), "+short", "+tries=1", "+time=2", name, qtype)
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

// WaitDig waits until node i's DNS answers name with something.
func (e *Env) WaitDig(i int, name string, within time.Duration) string {
	e.T.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if a := e.Dig(i, name, "A"); len(a) > 0 {
			return a[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.T.Fatalf("node%d: dig %s: no answer within %s", i, name, within)
	return ""
}

// Get makes one request on a new connection from node i.
func (e *Env) Get(i int, url string) (string, error) {
	resp, err := e.C.Node(i).HTTPClient(3 * time.Second).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// Spread makes n requests from node i and counts who answered.
func (e *Env) Spread(i int, url string, n int) map[string]int {
	seen := map[string]int{}
	for k := 0; k < n; k++ {
		who, err := e.Get(i, url)
		if err != nil {
			who = "error: " + err.Error()
		}
		seen[who]++
	}
	return seen
}

// VIPs fetches node i's `l4lb vips -o json`.
func (e *Env) VIPs(i int) api.VIPs {
	e.T.Helper()
	var v api.VIPs
	out := e.L4LB(i, "vips", "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.T.Fatalf("l4lb vips -o json on node%d: %v\n%s", i, err, out)
	}
	return v
}

// RealServers returns the backends of the TCP VIP service addr
// ("11.x.y.z:10000") in node i's kernel, address -> weight, as the plane's
// operator command shows them (`ipvsadm -Ln`; `nft list map inet l4lb
// slots-...`, where the weight is the number of slots).
func (e *Env) RealServers(i int, addr string) map[string]int {
	e.T.Helper()
	out, err := e.plane().servedBackends(e.T, e.C.Node(i), addr)
	if err != nil {
		e.T.Fatalf("node%d: read the %s table: %v", i, e.plane(), err)
	}
	return out
}

// WaitRealServers polls node i's kernel until cond holds of its real
// servers for addr, and returns how long that took.
func (e *Env) WaitRealServers(i int, addr string, within time.Duration, what string, cond func(map[string]int) bool) time.Duration {
	e.T.Helper()
	start := time.Now()
	var last map[string]int
	for time.Since(start) < within {
		last = e.RealServers(i, addr)
		if cond(last) {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.T.Fatalf("node%d: %s: not within %s; real servers of %s: %v", i, what, within, addr, last)
	return 0
}

// kernel returns a netlink handle on node i's IPVS, opened once; reading
// through it costs far less than running ipvsadm, so it can be polled often.
func (e *Env) kernel(i int) ipvs.Interface {
	e.T.Helper()
	if k, ok := e.kernels[i]; ok {
		return k
	}
	k, err := ipvs.OpenKernel(ipvs.KernelConfig{Namespace: e.C.Node(i).Path(), Interface: "minuteman", Timeout: 5 * time.Second})
	if err != nil {
		e.T.Fatalf("open node%d's IPVS: %v", i, err)
	}
	e.kernels[i] = k
	e.T.Cleanup(func() { k.Close() })
	return k
}

// InKernel reports whether node i's kernel has backend with a weight above
// 0 in the virtual service svc ("11.1.2.3:80", TCP).
func (e *Env) InKernel(i int, svc, backend string) bool {
	e.T.Helper()
	if e.plane() == NFTables {
		rs, err := NFTables.servedBackends(e.T, e.C.Node(i), svc)
		return err == nil && rs[backend] > 0
	}
	ap := netip.MustParseAddrPort(svc)
	be := netip.MustParseAddrPort(backend)
	k := e.kernel(i)
	ds, err := k.Destinations(ipvs.Service{ServiceKey: vip.ServiceKey{Addr: ap.Addr(), Port: ap.Port(), Protocol: vip.TCP}})
	if err != nil {
		return false
	}
	for _, d := range ds {
		if d.Addr == be && d.Weight > 0 {
			return true
		}
	}
	return false
}

// HeldConn is one TCP connection through a VIP, kept open across steps.
type HeldConn struct {
	conn net.Conn
	rd   *bufio.Reader
}

// Hold opens a keep-alive HTTP connection from node i to addr and makes a
// first request on it; it returns the connection and who answered.
func (e *Env) Hold(i int, addr string) (*HeldConn, string, error) {
	c, err := e.C.Node(i).Dial("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, "", err
	}
	h := &HeldConn{conn: c, rd: bufio.NewReader(c)}
	who, err := h.Request()
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return h, who, nil
}

// Request sends one more request on the held connection.
func (h *HeldConn) Request() (string, error) {
	_ = h.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(h.conn, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(h.rd, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// Close closes the held connection.
func (h *HeldConn) Close() { h.conn.Close() }

// KillAgent kills node i's agent with sig and waits for it to end.
func (e *Env) KillAgent(i int, sig syscall.Signal) {
	e.T.Helper()
	p := e.Agents[i]
	if err := p.Signal(sig); err != nil {
		e.T.Fatalf("signal agent on node%d: %v", i, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = p.Wait(ctx)
	if !p.Exited() {
		e.T.Fatalf("agent on node%d did not stop on %v", i, sig)
	}
}

// Percentile returns the p-th percentile (0..100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(float64(len(s)-1) * p / 100)
	return s[k]
}

// FormatSpread renders a who-answered count for people.
func FormatSpread(seen map[string]int) string {
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s x%d", k, seen[k])
	}
	return strings.Join(parts, ", ")
}
