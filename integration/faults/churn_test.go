//go:build faults

package faults

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/source"
)

// churnRate and churnFor are the churn: 100 changes a second for
// 60 s, spread over the three agents' APIs.
const (
	churnRate = 100
	churnFor  = 60 * time.Second
)

// TestChurnUnderCPULoadNoFalseDeaths: while busy loops keep the guest's
// CPU saturated, the agents take 100 registrations and deregistrations a
// second for 60 s; no live node may be seen dead by another (polled every
// 200 ms on every node) nor have its backends taken out (no agent logs a
// live member gone), no request through the VIP may fail, and the cluster
// converges afterwards. memberlist may still declare a starved node dead:
// those declarations are counted and reported; the agents check them by
// dialling the node's gossip port (gossip/confirm.go) and keep its
// backends. Then, still under load, node3's agent is killed: its backend
// must leave the other kernels within 3 s.
func TestChurnUnderCPULoadNoFalseDeaths(t *testing.T) {
	c := newCluster(t)
	hogs := startHogs(t, 2, churnFor+40*time.Second)
	loop := c.startLoop([]int{1, 2, 3}, loopEvery, churnFor+time.Minute)

	var deaths, suspicions sync.Map // "observer>member>state" -> first time
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	for i := 1; i <= 3; i++ {
		watch.Add(1)
		go func() {
			defer watch.Done()
			cl := c.client(i)
			for {
				select {
				case <-stopWatch:
					return
				case <-time.After(200 * time.Millisecond):
				}
				ms, err := cl.Members(context.Background())
				if err != nil {
					continue
				}
				for _, m := range ms.Members {
					key := fmt.Sprintf("node%d sees %s %s", i, m.Name, m.State)
					switch m.State {
					case "dead", "left":
						deaths.LoadOrStore(key, time.Now())
					case "suspect":
						suspicions.LoadOrStore(key, time.Now())
					}
				}
			}
		}()
	}

	changes, errs, skipped := churn(t, c, churnRate, churnFor)
	close(stopWatch)
	watch.Wait()
	var dead, susp []string
	deaths.Range(func(k, v any) bool { dead = append(dead, k.(string)); return true })
	suspicions.Range(func(k, v any) bool { susp = append(susp, k.(string)); return true })

	conv, err := c.converge([]int{1, 2, 3}, c.want(1, 2, 3), time.Minute)
	// From the agents' logs: every death memberlist declared (the poll
	// above misses one refuted within 200 ms), and every member the agents
	// took out (its backends left their state). Read before the kill below.
	var declared, gone []string
	for i := 1; i <= 3; i++ {
		for _, l := range strings.Split(c.e.Agents[i].Log(), "\n") {
			switch {
			case strings.Contains(l, "as failed, suspect timeout reached"):
				declared = append(declared, fmt.Sprintf("node%d: %s", i, strings.TrimSpace(l)))
			case strings.Contains(l, "member gone; its backends leave the cluster state"):
				gone = append(gone, fmt.Sprintf("node%d: %s", i, strings.TrimSpace(l)))
			}
		}
	}
	start := time.Now()
	c.e.KillAgent(3, syscall.SIGKILL)
	took := c.outWithin([]int{1, 2}, c.apps[3], start, 3*time.Second)
	ok, fail, failures := loop.halt()
	hogs()
	t.Logf("churn under CPU load: %d changes in %v (%.0f/s; %d refused or failed, %d ticks skipped with %d calls in flight on a node), false deaths: %d (members taken out %d, seen dead by the poll %d %v; declared by memberlist and kept by the port check %d), suspicions seen %d, requests %d ok %d failed, converged %v after the churn; SIGKILL under load -> out of the kernels of node1 and node2 in %v",
		changes, churnFor, float64(changes)/churnFor.Seconds(), errs, skipped, churnInFlight, len(gone)+len(dead), len(gone), len(dead), dead, len(declared), len(susp), ok, fail, conv.Round(time.Millisecond), took.Round(time.Millisecond))
	for _, l := range declared {
		t.Logf("declared by memberlist: %s", l)
	}
	if err != nil {
		t.Error(err)
	}
	if len(gone) > 0 || len(dead) > 0 {
		t.Errorf("%d false deaths under load (members taken out; seen dead: %v):\n%s", len(gone)+len(dead), dead, strings.Join(gone, "\n"))
	}
	if fail > 0 {
		t.Errorf("%d requests failed:\n%s", fail, strings.Join(failures, "\n"))
	}
	if took > 3*time.Second {
		t.Errorf("under load, the dead node's backend served for %v, want < 3 s", took)
	}
}

// TestRepeatedRestartsCutNothing: ten rounds of restarting every agent at
// once under the request loop.
func TestRepeatedRestartsCutNothing(t *testing.T) {
	c := newCluster(t)
	for round := 1; round <= 10; round++ {
		t.Logf("round %d", round)
		restart(t, c, 1, 2, 3)
	}
}

// startHogs starts n busy loops in the guest, bounded by limit; the
// returned func stops them.
func startHogs(t *testing.T, n int, limit time.Duration) func() {
	t.Helper()
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("timeout", fmt.Sprint(int(limit.Seconds())), "sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start a busy loop: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	stop := func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		cmds = nil
	}
	t.Cleanup(stop)
	return stop
}

// churnInFlight bounds the calls in flight on each node: enough to offer
// the rate although each call waits for its fsync (slow in the guest); a
// tick that finds them all busy is skipped and counted.
const churnInFlight = 8

// churn registers and deregisters backends of a second VIP through the
// agents' APIs, rate a second in all (a third through each node's API, in
// parallel, up to churnInFlight calls at once on each), for d, and ends with
// none of them registered. It returns the number of changes made, of those
// that failed, and of ticks skipped because every call slot was busy.
func churn(t *testing.T, c *cluster, rate int, d time.Duration) (changes, failed, skipped int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := 1; i <= 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.client(i)
			tick := time.NewTicker(3 * time.Second / time.Duration(rate))
			defer tick.Stop()
			// One backend per key slot; a slot's calls take turns (its
			// lock), so that a register and its deregister never race.
			type slot struct {
				sync.Mutex
				registered bool
			}
			var slots [50]slot
			sem := make(chan struct{}, churnInFlight)
			var calls sync.WaitGroup
			var n, bad, skip int
			var nmu sync.Mutex
			for k := 0; time.Now().Before(end); k++ {
				<-tick.C
				select {
				case sem <- struct{}{}:
				default:
					nmu.Lock()
					skip++
					nmu.Unlock()
					continue
				}
				calls.Add(1)
				go func() {
					defer calls.Done()
					defer func() { <-sem }()
					sl := &slots[k%len(slots)]
					sl.Lock()
					defer sl.Unlock()
					e := source.Entry{VIP: "/faults/churn:80", Backend: fmt.Sprintf("%s:%d", c.e.C.Node(i).Addr, 20000+k%len(slots))}
					var err error
					if sl.registered {
						_, err = cl.Deregister(context.Background(), e)
					} else {
						_, err = cl.Register(context.Background(), e)
					}
					nmu.Lock()
					defer nmu.Unlock()
					n++
					if err != nil {
						bad++
						return
					}
					sl.registered = !sl.registered
				}()
			}
			calls.Wait()
			for j := range slots {
				if !slots[j].registered {
					continue
				}
				e := source.Entry{VIP: "/faults/churn:80", Backend: fmt.Sprintf("%s:%d", c.e.C.Node(i).Addr, 20000+j)}
				if _, err := cl.Deregister(context.Background(), e); err != nil {
					bad++
				}
			}
			mu.Lock()
			changes += n
			failed += bad
			skipped += skip
			mu.Unlock()
		}()
	}
	wg.Wait()
	return changes, failed, skipped
}
