package scenario

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DeployResult is what a zero-downtime replacement measured.
type DeployResult struct {
	// Registered is how long `l4lb register --wait` of the new instance
	// took; Drained how long `l4lb deregister --wait` of the old one took.
	Registered, Drained time.Duration
	// Seen counts who answered the request loop; Failed the requests that
	// got no answer.
	Seen   map[string]int
	Failed []string
}

// Requests is how many requests the loop made.
func (r DeployResult) Requests() int {
	n := len(r.Failed)
	for _, c := range r.Seen {
		n += c
	}
	return n
}

// Deploy replaces app2's instance oldName (at oldAddr on node oldNode) by a
// new instance newName on node newNode, as a deploy script does: start the
// new one, `l4lb register --wait`, `l4lb deregister --wait` the old one,
// stop it; all under a request loop from node client (one new connection
// every 20 ms, bounded in count and time) that must lose no request.
func Deploy(e *Env, client, oldNode int, oldName, oldAddr string, newNode int, newName string) DeployResult {
	t := e.T
	t.Helper()
	svc := e.appService(client)
	url := "http://" + svc + "/"
	var stop atomic.Bool
	var mu sync.Mutex
	res := DeployResult{Seen: map[string]int{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(90 * time.Second)
		for n := 0; n < 4000 && !stop.Load() && time.Now().Before(deadline); n++ {
			who, err := e.Get(client, url)
			mu.Lock()
			if err != nil {
				res.Failed = append(res.Failed, err.Error())
			} else {
				res.Seen[who]++
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	neu := e.StartApp(newNode, newName, AppPort)
	args := []string{"register", AppVIP, neu, "--check", "http:///healthz", "--wait", "--timeout", "20s"}
	for _, v := range e.VIPs(newNode).VIPs {
		if v.Label == AppVIP && v.PublicPort != 0 {
			// The new instance asks for what the old ones ask for: the
			// public port is settled by vote, and the deploy must not
			// turn it off.
			args = append(args, "--public", "--public-port", strconv.Itoa(int(v.PublicPort)))
		}
	}
	out := e.L4LB(newNode, args...)
	res.Registered = time.Since(start)
	e.Say("$ l4lb register %s %s --check http:///healthz --wait   (on node%d)\n%s", AppVIP, neu, newNode, strings.TrimSpace(out))
	if !strings.Contains(out, "programmed on 3 of 3 live nodes") {
		t.Errorf("register --wait did not report 3 of 3 nodes:\n%s", out)
	}
	for _, i := range []int{1, 2, 3} {
		if !e.InKernel(i, svc, neu) {
			t.Errorf("register --wait returned, but node%d's kernel lacks %s with a weight", i, neu)
		}
	}
	start = time.Now()
	out = e.L4LB(oldNode, "deregister", AppVIP, oldAddr, "--wait", "--timeout", "30s")
	res.Drained = time.Since(start)
	e.Say("$ l4lb deregister %s %s --wait   (on node%d)\n%s", AppVIP, oldAddr, oldNode, strings.TrimSpace(out))
	for _, i := range []int{1, 2, 3} {
		if e.InKernel(i, svc, oldAddr) {
			t.Errorf("deregister --wait returned, but node%d still sends new connections to %s", i, oldAddr)
		}
	}
	mu.Lock()
	before := res.Seen[oldName]
	mu.Unlock()
	e.Apps[oldName].Kill()
	e.Say("%s stopped", oldName)
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	e.Say("request loop from node%d during the replacement: %d requests, %d failed: %s",
		client, res.Requests(), len(res.Failed), FormatSpread(res.Seen))
	if len(res.Failed) > 0 {
		t.Errorf("%d of %d requests failed during the deploy, want 0: %v", len(res.Failed), res.Requests(), res.Failed[:min(5, len(res.Failed))])
	}
	if res.Seen[oldName] != before {
		t.Errorf("%s answered %d requests after deregister --wait returned", oldName, res.Seen[oldName]-before)
	}
	if res.Seen[newName] == 0 || before == 0 || res.Requests() < 50 {
		t.Errorf("the loop did not see both instances: %s", FormatSpread(res.Seen))
	}
	return res
}

// DrainTimesOut deregisters backend (of node) with --wait while client holds
// a connection to it open: the command must give up at its 3 s timeout,
// exit non-zero and say that 1 connection remains; the held connection
// keeps working. It returns the command's output.
func DrainTimesOut(e *Env, client, node int, name, backend string) string {
	t := e.T
	t.Helper()
	svc := e.appService(client)
	held := e.holdOn(client, svc, name)
	defer held.Close()
	start := time.Now()
	out, err := e.C.Node(node).Run(e.Bin, "deregister", AppVIP, backend, "--wait", "--timeout", "3s")
	took := time.Since(start)
	e.Say("$ l4lb deregister %s %s --wait --timeout 3s   (on node%d, a connection held open)\n%s", AppVIP, backend, node, strings.TrimSpace(out))
	if err == nil {
		t.Errorf("deregister --wait exited 0 while a connection was open")
	}
	if took < 3*time.Second || took > 8*time.Second {
		t.Errorf("deregister --wait --timeout 3s took %v", took)
	}
	if !strings.Contains(out, "1 connections remain") {
		t.Errorf("deregister --wait at its timeout does not say how many remain:\n%s", out)
	}
	if again, err := held.Request(); err != nil || again != name {
		t.Errorf("the held connection broke while draining: %q, %v", again, err)
	}
	return out
}

// appService is app2's VIP as node i resolves it ("11.x.y.z:10000").
func (e *Env) appService(i int) string {
	e.T.Helper()
	return strings.TrimSpace(e.WaitDig(i, AppName, 10*time.Second)) + ":10000"
}
