package gossip

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// benchCluster starts n nodes on one in-memory network, each joining a
// random earlier node, each publishing one backend, and waits until every
// node holds every record.
func benchCluster(b *testing.B, net *memnet.Network, n int) []*memNode {
	return benchClusterWith(b, net, n, nil)
}

// simulationTiming is for clusters too large to simulate in one process
// with production failure-detector timing: 1,000 memberlists share the
// benchmark machine's 2 cores, where production nodes each have their own.
// Probing is slowed down so that the simulation does not starve itself
// into false suspicions; dissemination (gossip interval, fan-out,
// retransmits) stays as in production, and that is what convergence
// measures.
func simulationTiming(c *Config) {
	c.Timing.ProbeInterval = 5 * time.Second
	c.Timing.ProbeTimeout = 2 * time.Second
	c.Timing.SuspicionMult = 6
}

func benchClusterWith(b *testing.B, net *memnet.Network, n int, tweak func(*Config)) []*memNode {
	b.Helper()
	start := time.Now()
	nodes := make([]*memNode, 0, n)
	var paced time.Duration
	for i := range n {
		// Each join sets off a storm of alive messages and records that
		// every node forwards. In one process all nodes share two cores,
		// so without pacing the inboxes fill faster than they drain, and
		// the queueing delay (which separate machines would not add)
		// times out probes. Wait for the receivers to catch up first.
		paceStart := time.Now()
		waitBacklog(b, net, n, time.Minute)
		paced += time.Since(paceStart)
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[rand.IntN(i)].tr.Addr(), nodes[0].tr.Addr()}
		}
		m := startMem(b, net, fmt.Sprintf("node-%04d", i), tweak, seeds...)
		m.c.log.Logger.SetLevel(0) // panic level only: keep the benchmark's output clean
		m.c.Publish(append(manyRegsFrom(i*benchBackends, benchBackends-1), benchReg(i, 0)))
		nodes = append(nodes, m)
		if (i+1)%100 == 0 {
			b.Logf("%d nodes started after %v (%v of it waiting for inboxes to drain); %s", i+1,
				time.Since(start).Round(time.Millisecond), paced.Round(time.Millisecond), pullsAndDrops(net, nodes))
		}
	}
	// A node that missed a join's alive message learns of the member at
	// the latest on push/pull, which memberlist runs less often in
	// larger clusters: allow two rounds.
	deadline := time.Now().Add(30*time.Second + 2*pushPullEvery(n, LANTiming().PushPullInterval))
	nextLog := time.Now().Add(15 * time.Second)
	for !converged(nodes) {
		if time.Now().After(nextLog) {
			nextLog = nextLog.Add(15 * time.Second)
			lackMembers, lackRecords := 0, 0
			for _, m := range nodes {
				if m.c.store.livePeerCount() != n-1 {
					lackMembers++
				}
				if m.c.store.visibleCount() != n {
					lackRecords++
				}
			}
			b.Logf("converging after %v: %d nodes lack a member, %d a record; %s", time.Since(start).Round(time.Second),
				lackMembers, lackRecords, pullsAndDrops(net, nodes))
		}
		if time.Now().After(deadline) {
			shown := 0
			for _, m := range nodes {
				if m.c.store.livePeerCount() == n-1 && m.c.store.visibleCount() == n {
					continue
				}
				if shown++; shown > 3 {
					break
				}
				st := m.c.store.state()
				b.Logf("%s: %d live peers, %d records in state, members %d", m.name, m.c.store.livePeerCount(), len(st), len(m.c.Members()))
				b.Logf("   stats %+v", m.c.Stats())
				for _, mm := range m.c.Members() {
					if _, ok := findNode(st, mm.Name); !ok {
						b.Logf("   missing %s: %+v", mm.Name, mm)
					}
				}
			}
			b.Fatalf("cluster of %d did not converge (memnet drops %d)", n, net.Drops.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Logf("%d nodes converged in %v; %s", n, time.Since(start).Round(time.Millisecond), pullsAndDrops(net, nodes))
	return nodes
}

// pullsAndDrops says how many pulls the nodes sent and how many packets
// memnet dropped so far: what a cluster build cost beyond gossip.
func pullsAndDrops(net *memnet.Network, nodes []*memNode) string {
	var pulls, dropped uint64
	for _, m := range nodes {
		st := m.c.Stats()
		pulls += st.PullsSent
		dropped += st.PullRequestsDropped
	}
	return fmt.Sprintf("%d pulls sent (%d requests dropped by their owner), memnet dropped %d packets", pulls, dropped, net.Drops.Load())
}

// waitBacklog waits until at most max packets wait in the network's
// inboxes, and fails the benchmark if that takes longer than timeout.
func waitBacklog(b *testing.B, net *memnet.Network, max int, timeout time.Duration) {
	b.Helper()
	start := time.Now()
	for net.Backlog() > max {
		if time.Since(start) > timeout {
			b.Fatalf("%d packets still unread after %v (memnet drops %d)", net.Backlog(), timeout, net.Drops.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pushPullEvery is memberlist's push/pull interval in a cluster of n
// nodes: base, scaled up by ceil(log2 n - log2 32) + 1 beyond 32 nodes
// (memberlist's pushPullScale).
func pushPullEvery(n int, base time.Duration) time.Duration {
	const threshold = 32
	if n <= threshold {
		return base
	}
	mult := math.Ceil(math.Log2(float64(n))-math.Log2(threshold)) + 1
	return time.Duration(mult) * base
}

func converged(nodes []*memNode) bool {
	n := len(nodes)
	{
		for _, m := range nodes {
			if m.c.store.livePeerCount() != n-1 {
				return false
			}
		}
		for _, m := range nodes {
			if m.c.store.visibleCount() != n {
				return false
			}
		}
		return true
	}
}

// benchBackends is how many backends each node of BenchmarkConvergence and
// the other cluster benchmarks publishes: L4LB_BENCH_BACKENDS, 1 by default
// (one of them changes in each measured change).
var benchBackends = func() int {
	if n, err := strconv.Atoi(os.Getenv("L4LB_BENCH_BACKENDS")); err == nil && n > 0 {
		return n
	}
	return 1
}()

func benchReg(node, change int) vip.Registration {
	return reg("/bench", 80, fmt.Sprintf("10.%d.%d.%d:%d", node/250, node%250, 1+change%250, 1000+change/250))
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// wireBytesSent sums the bytes every node put on the network.
func wireBytesSent(nodes []*memNode) uint64 {
	var total uint64
	for _, m := range nodes {
		total += m.c.Stats().WireBytesSent
	}
	return total
}

// BenchmarkConvergence measures, in a cluster of N nodes in one process,
// the time from one node publishing a change until every node's State
// holds it (one change at a time, one per iteration), and the bytes each node
// sends per second when idle (over one push/pull period) and while the
// cluster makes 100 changes per second. Run with a fixed count, e.g.
// -benchtime=30x.
// benchNodeCounts are the cluster sizes BenchmarkConvergence measures:
// L4LB_BENCH_NODES (comma-separated), else 10, 100 and 1,000.
func benchNodeCounts() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("L4LB_BENCH_NODES"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 1 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []int{10, 100, 1000}
	}
	return out
}

func BenchmarkConvergence(b *testing.B) {
	for _, n := range benchNodeCounts() {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			net := memnet.New()
			var tweak func(*Config)
			if n >= 500 {
				tweak = simulationTiming
				b.Logf("%d nodes in one process: probing slowed down (see simulationTiming)", n)
			}
			nodes := benchClusterWith(b, net, n, tweak)
			// Let the join storm settle: the receivers have caught up and
			// the last forwards have gone out.
			waitBacklog(b, net, n/10, 5*time.Minute)
			time.Sleep(2 * time.Second)
			// The live heap of the whole simulated cluster (every node's
			// copy of every record), for the memory arithmetic; reported
			// after the loop, whose start clears the metrics.
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap := float64(ms.HeapAlloc) / (1 << 20)

			var latencies []time.Duration
			loopBytes := wireBytesSent(nodes)
			loopStart := time.Now()
			for i := 0; b.Loop(); i++ {
				k := rand.IntN(n)
				origin := nodes[k]
				changed := benchReg(k, 0)
				changed.Weight = uint32(2 + i)
				if err := origin.c.PublishDelta([]vip.Registration{changed}, nil); err != nil {
					b.Fatal(err)
				}
				v := origin.c.store.selfVersion()
				start := time.Now()
				pending := slices.Clone(nodes)
				for len(pending) > 0 {
					if time.Since(start) > 30*time.Second {
						for _, m := range pending[:min(3, len(pending))] {
							var held Version
							if e := m.c.store.records[origin.name]; e != nil {
								held = e.rec.version
							}
							b.Logf("%s: origin %s is %q, holds %v want %v; stats %+v", m.name, origin.name,
								memberState(m.c, origin.name), held, v, m.c.Stats())
						}
						b.Fatalf("change %d: %d nodes still without it after 30s (memnet drops %d)", i, len(pending), net.Drops.Load())
					}
					pending = slices.DeleteFunc(pending, func(m *memNode) bool { return m.c.store.holds(origin.name, v) })
					if len(pending) > 0 {
						time.Sleep(2 * time.Millisecond)
					}
				}
				latencies = append(latencies, time.Since(start))
			}
			b.StopTimer()
			loopBytes = wireBytesSent(nodes) - loopBytes
			loopTime := time.Since(loopStart)
			slices.Sort(latencies)
			b.ReportMetric(float64(percentile(latencies, 50).Milliseconds()), "p50-ms")
			b.ReportMetric(float64(percentile(latencies, 99).Milliseconds()), "p99-ms")
			b.ReportMetric(float64(latencies[len(latencies)-1].Milliseconds()), "max-ms")
			b.ReportMetric(heap, "heap-MiB")

			// Idle: nothing changes for one push/pull period, whose
			// full-state exchanges dominate the idle traffic of a large
			// cluster and come in bursts.
			window := pushPullEvery(n, LANTiming().PushPullInterval)
			time.Sleep(time.Second) // let the last change's gossip finish
			before := wireBytesSent(nodes)
			time.Sleep(window)
			idle := float64(wireBytesSent(nodes)-before) / float64(n) / window.Seconds()
			b.ReportMetric(idle, "idle-B/s/node")
			// One change at a time: every byte sent while the changes
			// were measured, less the idle traffic of that time.
			perChange := (float64(loopBytes)/float64(n) - idle*loopTime.Seconds()) / float64(len(latencies))
			b.ReportMetric(perChange, "B/node/change")
			// Logged too: a failure of the stream below would drop the
			// metrics.
			b.Logf("one change at a time: p50 %v, p99 %v, max %v; %.0f B per node per change; idle %.0f B/s per node; heap %.0f MiB",
				percentile(latencies, 50).Round(time.Millisecond), percentile(latencies, 99).Round(time.Millisecond),
				latencies[len(latencies)-1].Round(time.Millisecond), perChange, idle, heap)

			// 100 changes per second, from random nodes, for 5 s.
			busy, lag, maxBacklog := changeStream(b, net, nodes, 100, 5*time.Second, idle)
			b.ReportMetric(busy, "100chg/s-B/s/node")
			b.ReportMetric(float64(lag.Milliseconds()), "100chg/s-lag-ms")
			b.ReportMetric(float64(maxBacklog), "100chg/s-max-backlog")
		})
	}
}

// changeStream makes rate changes per second from random nodes for
// window. It returns the bytes each node sent per second of the stream:
// everything sent from its start until every node held the last version of
// every node that changed, less the idle traffic (idle bytes per second
// per node) of the time past the window. A simulation that cannot keep up
// delivers late, and the bytes are counted all the same: memberlist sends
// each message a fixed number of times however late. It also returns that
// delay past the window (lag) and the most packets seen waiting in the
// inboxes, which say how far the simulation fell behind.
func changeStream(b *testing.B, net *memnet.Network, nodes []*memNode, rate int, window time.Duration, idle float64) (bytesPerNode float64, lag time.Duration, maxBacklog int) {
	b.Helper()
	n := len(nodes)
	last := map[int]Version{}
	before := wireBytesSent(nodes)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	end := time.Now().Add(window)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		j := rand.IntN(n)
		changed := benchReg(j, 0)
		changed.Weight = uint32(100000 + i)
		if err := nodes[j].c.PublishDelta([]vip.Registration{changed}, nil); err != nil {
			b.Fatal(err)
		}
		last[j] = nodes[j].c.store.selfVersion()
		if i%10 == 0 {
			maxBacklog = max(maxBacklog, net.Backlog())
		}
	}
	tick.Stop()

	start := time.Now()
	pending := slices.Clone(nodes)
	for len(pending) > 0 {
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("%d nodes still without the last changes 2 minutes after the stream (memnet drops %d)", len(pending), net.Drops.Load())
		}
		pending = slices.DeleteFunc(pending, func(m *memNode) bool {
			for j, v := range last {
				if !m.c.store.holds(nodes[j].name, v) {
					return false
				}
			}
			return true
		})
		if len(pending) > 0 {
			maxBacklog = max(maxBacklog, net.Backlog())
			time.Sleep(10 * time.Millisecond)
		}
	}
	lag = time.Since(start)
	// The last forwards go out after the last node has the change.
	waitBacklog(b, net, n/10, time.Minute)
	time.Sleep(time.Second)
	extra := time.Since(start)
	sent := float64(wireBytesSent(nodes)-before) - idle*float64(n)*extra.Seconds()
	return sent / float64(n) / window.Seconds(), lag, maxBacklog
}

// BenchmarkFailureDetection measures the time from a node's death
// (Shutdown, no goodbye) until its backends have left the State of every
// other node. Each iteration kills one node, then restarts it (same name,
// same address, new generation) and waits for it to be back everywhere, so
// the cluster keeps N members, as memberlist counts them too.
func BenchmarkFailureDetection(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			net := memnet.New()
			nodes := benchCluster(b, net, n)
			var took []time.Duration
			for i := 0; b.Loop(); i++ {
				k := rand.IntN(n)
				victim := nodes[k]
				start := time.Now()
				_ = victim.c.Shutdown()
				for {
					gone := true
					for _, m := range nodes {
						if m != victim && m.c.store.shows(victim.name) {
							gone = false
							break
						}
					}
					if gone {
						break
					}
					if time.Since(start) > 60*time.Second {
						b.Fatalf("victim still present after 60s")
					}
					time.Sleep(5 * time.Millisecond)
				}
				took = append(took, time.Since(start))
				b.StopTimer()
				tr, err := net.NewTransportAt(victim.tr.Addr())
				if err != nil {
					b.Fatal(err)
				}
				seed := nodes[(k+1)%n].tr.Addr()
				back := startMemAt(b, net, tr, victim.name, nil, seed)
				back.c.log.Logger.SetLevel(0)
				back.c.Publish([]vip.Registration{benchReg(k, i)})
				nodes[k] = back
				waitFor(b, 60*time.Second, "restarted node to be back everywhere", func() bool {
					for _, m := range nodes {
						if !m.c.store.shows(back.name) {
							return false
						}
					}
					return true
				})
				time.Sleep(time.Second)
				b.StartTimer()
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(percentile(took, 50).Milliseconds()), "p50-ms")
			b.ReportMetric(float64(percentile(took, 99).Milliseconds()), "p99-ms")
			b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "max-ms")
		})
	}
}

// BenchmarkNoFalseDeathUnderCPULoad keeps every core busy (a spinning
// shell process per core and two spinning goroutines per core, for 15 s)
// while a cluster runs, and
// counts the members any node declared dead or suspect although none
// failed. It fails if there is a false death.
func BenchmarkNoFalseDeathUnderCPULoad(b *testing.B) {
	for _, n := range []int{3, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			net := memnet.New()
			nodes := benchCluster(b, net, n)
			var deaths, suspicions atomic.Int64
			for b.Loop() {
				const load = 15 * time.Second
				stop := make(chan struct{})
				var wg sync.WaitGroup
				// Busy processes compete for the cores at the OS level,
				// busy goroutines inside the Go scheduler; both are bounded
				// by the load time.
				var procs []*exec.Cmd
				for range runtime.NumCPU() {
					cmd := exec.Command("timeout", strconv.Itoa(int(load.Seconds())+1), "sh", "-c", "while :; do :; done")
					if err := cmd.Start(); err != nil {
						b.Fatalf("start busy process: %v", err)
					}
					procs = append(procs, cmd)
				}
				for range 2 * runtime.GOMAXPROCS(0) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						x := 0
						for {
							select {
							case <-stop:
								return
							default:
							}
							for range 100000 {
								x++
							}
						}
					}()
				}
				end := time.Now().Add(load)
				seen := map[string]bool{}
				for time.Now().Before(end) {
					for _, m := range nodes {
						for _, mm := range m.c.Members() {
							key := m.name + ">" + mm.Name + ">" + string(mm.State)
							if seen[key] {
								continue
							}
							switch mm.State {
							case MemberDead, MemberLeft:
								deaths.Add(1)
								seen[key] = true
							case MemberSuspect:
								suspicions.Add(1)
								seen[key] = true
							}
						}
					}
					time.Sleep(50 * time.Millisecond)
				}
				close(stop)
				wg.Wait()
				for _, p := range procs {
					// SIGTERM, which timeout passes on to its shell (a
					// SIGKILL would orphan the shell).
					_ = p.Process.Signal(syscall.SIGTERM)
					_ = p.Wait()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(deaths.Load()), "false-deaths")
			b.ReportMetric(float64(suspicions.Load()), "suspicions")
			if deaths.Load() > 0 {
				b.Fatalf("%d false deaths under CPU load", deaths.Load())
			}
		})
	}
}

// manyRegsFrom returns n distinct registrations, numbered from start.
func manyRegsFrom(start, n int) []vip.Registration {
	out := make([]vip.Registration, n)
	for j := range out {
		i := start + j
		out[j] = reg(fmt.Sprintf("/app-%d", i%97), uint16(8000+i%13), fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 1000+i%7))
	}
	return out
}

// quiet waits until no node has a delta or notice of its own queue left
// to send (announcements aside), and fails after timeout.
func quiet(b *testing.B, nodes []*memNode, timeout time.Duration) {
	b.Helper()
	waitFor(b, timeout, "broadcast queues to drain", func() bool {
		for _, m := range nodes {
			if m.c.queue.NumQueued() > 0 {
				return false
			}
		}
		return true
	})
}

// idleRate returns the bytes per second all nodes together send while
// nothing changes, over window.
func idleRate(nodes []*memNode, window time.Duration) float64 {
	before := wireBytesSent(nodes)
	start := time.Now()
	time.Sleep(window)
	return float64(wireBytesSent(nodes)-before) / time.Since(start).Seconds()
}

// BenchmarkOneChange measures what one changed backend costs on the wire
// when its node holds N backends, in a 3-node cluster: every byte every
// node sent from the change until every node held it and every queue had
// drained, less the idle traffic of that time (measured before, over 10 s),
// per node. Also the time until both peers held it, and the pulls it took.
func BenchmarkOneChange(b *testing.B) {
	for _, n := range []int{10000, 50000} {
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			net := memnet.New()
			nodes := benchCluster(b, net, 3)
			owner := nodes[0]
			regs := manyRegsFrom(0, n)
			owner.c.Publish(regs) // replaces benchCluster's one backend
			if got := owner.c.store.backendCounts()[owner.name]; got != n {
				b.Fatalf("owner holds %d backends, want %d", got, n)
			}
			holdAll := func(v Version) bool {
				for _, m := range nodes {
					if !m.c.store.holds(owner.name, v) {
						return false
					}
				}
				return true
			}
			v := owner.c.store.selfVersion()
			waitFor(b, time.Minute, "every node to hold the record", func() bool { return holdAll(v) })
			quiet(b, nodes, time.Minute)
			time.Sleep(2 * time.Second)
			idle := idleRate(nodes, 10*time.Second)
			var sent, raw float64
			var pulls uint64
			var took []time.Duration
			for i := 0; b.Loop(); i++ {
				r := regs[(i*7919)%n]
				r.Weight = uint32(100 + i)
				before := wireBytesSent(nodes)
				var pullsBefore uint64
				for _, m := range nodes {
					pullsBefore += m.c.Stats().PullsSent
				}
				start := time.Now()
				if err := owner.c.PublishDelta([]vip.Registration{r}, nil); err != nil {
					b.Fatal(err)
				}
				v := owner.c.store.selfVersion()
				for !holdAll(v) {
					if time.Since(start) > 10*time.Second {
						b.Fatalf("change %d not everywhere after 10 s", i)
					}
					time.Sleep(time.Millisecond)
				}
				took = append(took, time.Since(start))
				quiet(b, nodes, 10*time.Second)
				elapsed := time.Since(start).Seconds()
				got := float64(wireBytesSent(nodes) - before)
				raw += got
				sent += got - idle*elapsed
				for _, m := range nodes {
					pulls += m.c.Stats().PullsSent
				}
				pulls -= pullsBefore
			}
			b.StopTimer()
			changes := float64(len(took))
			slices.Sort(took)
			b.ReportMetric(sent/changes/float64(len(nodes)), "B/node/change")
			b.ReportMetric(raw/changes/float64(len(nodes)), "raw-B/node/change")
			b.ReportMetric(idle/float64(len(nodes)), "idle-B/s/node")
			b.ReportMetric(float64(pulls)/changes, "pulls/change")
			b.ReportMetric(float64(percentile(took, 50).Milliseconds()), "p50-ms")
			b.ReportMetric(float64(percentile(took, 99).Milliseconds()), "p99-ms")
		})
	}
}

// BenchmarkIdle measures the bytes each node sends per second in a 3-node
// cluster where every node holds N backends and nothing changes, over two
// push/pull periods (30 s): probes, announcements and push/pull digests.
func BenchmarkIdle(b *testing.B) {
	for _, n := range []int{100, 10000, 100000} {
		b.Run(fmt.Sprintf("backends-per-node=%d", n), func(b *testing.B) {
			net := memnet.New()
			nodes := benchCluster(b, net, 3)
			for i, m := range nodes {
				m.c.Publish(manyRegsFrom(i*n, n)) // replaces benchCluster's one backend
			}
			waitFor(b, 2*time.Minute, "every node to hold every record", func() bool {
				for _, m := range nodes {
					counts := m.c.store.backendCounts()
					for _, o := range nodes {
						if counts[o.name] != n {
							return false
						}
					}
				}
				return true
			})
			quiet(b, nodes, time.Minute)
			time.Sleep(3 * time.Second)
			var rate float64
			for b.Loop() {
				rate = idleRate(nodes, 2*LANTiming().PushPullInterval)
			}
			b.ReportMetric(rate/float64(len(nodes)), "idle-B/s/node")
		})
	}
}
