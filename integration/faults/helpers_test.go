package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// The VIP every case serves: one instance of the demo app on every node.
const (
	appVIP  = "/faults/app:80"
	appPort = 8080
)

// cluster is three nodes, each with an agent and an app instance
// registered on appVIP.
type cluster struct {
	t    *testing.T
	e    *scenario.Env
	vip  string         // "11.x.y.z:80"
	apps map[int]string // node -> its instance's address
}

// newCluster starts the agents and the apps and waits until every kernel
// serves all three instances.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	e := scenario.New(t, 3, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	c := &cluster{t: t, e: e, apps: map[int]string{}}
	for i := 1; i <= 3; i++ {
		e.StartAgent(i)
	}
	for i := 1; i <= 3; i++ {
		e.WaitReady(i, 30*time.Second)
	}
	for i := 1; i <= 3; i++ {
		c.apps[i] = e.StartApp(i, fmt.Sprintf("app-%d", i), appPort)
		if _, err := c.client(i).Register(context.Background(), source.Entry{VIP: appVIP, Backend: c.apps[i]}); err != nil {
			t.Fatalf("register %s on node%d: %v", c.apps[i], i, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.vip == "" && time.Now().Before(deadline) {
		if v, err := c.client(1).VIPs(context.Background()); err == nil {
			for _, x := range v.VIPs {
				if x.Label == appVIP && x.Address != "" {
					c.vip = fmt.Sprintf("%s:%d", x.Address, x.Port)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.vip == "" {
		t.Fatalf("%s has no address on node1 after 20 s", appVIP)
	}
	if _, err := c.converge([]int{1, 2, 3}, c.want(1, 2, 3), 30*time.Second); err != nil {
		t.Fatalf("the cluster did not form: %v", err)
	}
	return c
}

// want is the backend set of appVIP when the instances of nodes are
// registered.
func (c *cluster) want(nodes ...int) map[string]bool {
	out := map[string]bool{}
	for _, i := range nodes {
		out[c.apps[i]] = true
	}
	return out
}

// converge polls until every node of nodes holds exactly want for appVIP,
// in its table (l4lb vips: each backend at weight 1, nothing else) and its
// kernel (ipvsadm -Ln: one virtual service, the VIP, with exactly want at
// weight 1, no draining leftover), and returns how long that took.
func (c *cluster) converge(nodes []int, want map[string]bool, within time.Duration) (time.Duration, error) {
	c.t.Helper()
	start := time.Now()
	var why string
	for {
		why = ""
		for _, i := range nodes {
			if w := c.differs(i, want); w != "" {
				why = fmt.Sprintf("node%d: %s", i, w)
				break
			}
		}
		if why == "" {
			return time.Since(start), nil
		}
		if time.Since(start) > within {
			return 0, fmt.Errorf("not converged within %v: %s", within, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// differs says how node i's table or kernel differs from want ("" when
// they do not).
func (c *cluster) differs(i int, want map[string]bool) string {
	n := c.e.C.Node(i)
	table, err := c.table(i)
	if err != nil {
		return err.Error()
	}
	if got := table[appVIP]; !sameSet(got, want) {
		return fmt.Sprintf("table has %s, want %s", show(got), showSet(want))
	}
	if len(table) != 1 {
		return fmt.Sprintf("table has %d VIPs, want 1: %v", len(table), table)
	}
	kout, err := n.Run("ipvsadm", "-Ln")
	if err != nil {
		return "ipvsadm: " + err.Error()
	}
	svcs, err := bed.ParseIPVSAdm(kout)
	if err != nil {
		return err.Error()
	}
	if len(svcs) != 1 || svcs[0].Address != c.vip {
		return fmt.Sprintf("kernel holds %d services, want only %s:\n%s", len(svcs), c.vip, kout)
	}
	got := map[string]int{}
	for _, r := range svcs[0].Real {
		got[r.Address] = r.Weight
	}
	if !sameSet(got, want) {
		return fmt.Sprintf("kernel has %s, want %s", show(got), showSet(want))
	}
	return ""
}

// sameSet says whether got holds exactly the addresses of want, each at
// weight 1.
func sameSet(got map[string]int, want map[string]bool) bool {
	if len(got) != len(want) {
		return false
	}
	for a, w := range got {
		if !want[a] || w != 1 {
			return false
		}
	}
	return true
}

func show(m map[string]int) string {
	var s []string
	for a, w := range m {
		s = append(s, fmt.Sprintf("%s=%d", a, w))
	}
	sort.Strings(s)
	return "[" + strings.Join(s, " ") + "]"
}

func showSet(m map[string]bool) string {
	var s []string
	for a := range m {
		s = append(s, a+"=1")
	}
	sort.Strings(s)
	return "[" + strings.Join(s, " ") + "]"
}

// inKernels says whether backend serves (weight > 0) in the kernel of any
// of nodes.
func (c *cluster) inKernels(nodes []int, backend string) bool {
	for _, i := range nodes {
		if c.e.InKernel(i, c.vip, backend) {
			return true
		}
	}
	return false
}

// outWithin polls every 10 ms until backend serves in none of nodes'
// kernels and returns how long that took from start, or fails the test
// after limit×3.
func (c *cluster) outWithin(nodes []int, backend string, start time.Time, limit time.Duration) time.Duration {
	c.t.Helper()
	for c.inKernels(nodes, backend) {
		if time.Since(start) > 3*limit {
			c.t.Fatalf("%s still serves in the kernels of nodes %v after %v", backend, nodes, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// stopAgents stops the agents of nodes at once with sig and waits for all.
func (c *cluster) stopAgents(sig syscall.Signal, nodes ...int) {
	c.t.Helper()
	var wg sync.WaitGroup
	for _, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.e.Agents[i].Signal(sig)
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, i := range nodes {
		p := c.e.Agents[i]
		_ = p.Wait(ctx)
		if !p.Exited() {
			c.t.Fatalf("agent on node%d did not stop on %v within 20 s", i, sig)
		}
	}
}

// requestLoop makes requests through the VIP from every node, each on a new
// connection, until stopped, and counts what failed.
type requestLoop struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	ok, fail int
	failures []string // the first ones, for the log
}

// startLoop starts a request every `every` from each of nodes, through the
// VIP; it stops by itself after limit (every loop is bounded).
func (c *cluster) startLoop(nodes []int, every, limit time.Duration) *requestLoop {
	l := &requestLoop{stop: make(chan struct{})}
	end := time.Now().Add(limit)
	for _, i := range nodes {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			n := c.e.C.Node(i)
			for time.Now().Before(end) {
				select {
				case <-l.stop:
					return
				default:
				}
				at := time.Now()
				who, err := get(n, c.vip)
				l.mu.Lock()
				if err != nil {
					l.fail++
					if len(l.failures) < 20 {
						l.failures = append(l.failures, fmt.Sprintf("%s from node%d: %v", at.Format("15:04:05.000"), i, err))
					}
				} else if strings.HasPrefix(who, "app-") {
					l.ok++
				} else {
					l.fail++
					if len(l.failures) < 20 {
						l.failures = append(l.failures, fmt.Sprintf("%s from node%d: answer %q", at.Format("15:04:05.000"), i, who))
					}
				}
				l.mu.Unlock()
				time.Sleep(every)
			}
		}()
	}
	return l
}

// halt stops the loop and returns its counts.
func (l *requestLoop) halt() (ok, fail int, failures []string) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fail, l.failures
}

// get makes one HTTP request to addr on a new connection from n.
func get(n *bed.Node, addr string) (string, error) {
	conn, err := n.Dial("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// table reads node i's table (GET /v1/vips, what `l4lb vips` shows) as
// VIP label -> backend -> weight.
func (c *cluster) table(i int) (map[string]map[string]int, error) {
	v, err := c.client(i).VIPs(context.Background())
	if err != nil {
		return nil, fmt.Errorf("GET /v1/vips: %w", err)
	}
	table := map[string]map[string]int{}
	for _, x := range v.VIPs {
		bs := map[string]int{}
		for _, b := range x.Backends {
			bs[b.Address] = int(b.Weight)
		}
		table[x.Label] = bs
	}
	return table, nil
}

// client is an API client of node i's agent.
func (c *cluster) client(i int) *api.Client {
	return &api.Client{Addr: scenario.APIAddr, HTTP: c.e.C.Node(i).HTTPClient(5 * time.Second)}
}

// watchKernels polls every node's kernel (over netlink) every period and
// notes each backend of appVIP found not serving (absent or at weight 0)
// while all three are registered. The returned func stops the watch and
// returns what it saw and how many rounds it made.
func (c *cluster) watchKernels(period time.Duration) func() ([]string, int) {
	for i := 1; i <= 3; i++ {
		c.e.InKernel(i, c.vip, c.apps[i]) // opens node i's handle here, not in the watcher
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var seen []string
	rounds := 0
	go func() {
		defer close(done)
		noted := map[string]bool{}
		for {
			select {
			case <-stop:
				return
			case <-time.After(period):
			}
			rounds++
			for i := 1; i <= 3; i++ {
				for j := 1; j <= 3; j++ {
					k := fmt.Sprintf("node%d's kernel: %s", i, c.apps[j])
					if !noted[k] && !c.e.InKernel(i, c.vip, c.apps[j]) {
						noted[k] = true
						seen = append(seen, fmt.Sprintf("%s not serving at %s", k, time.Now().Format("15:04:05.000")))
					}
				}
			}
		}
	}()
	return func() ([]string, int) {
		close(stop)
		<-done
		return seen, rounds
	}
}
