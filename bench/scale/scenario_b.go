package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Series of the agents' /metrics that scenario b reads.
const (
	programmedVIPs  = `l4lb_vips{state="programmed"}`
	wireBytesSent   = `l4lb_gossip_wire_bytes_total{direction="sent"}`
	wireBytesRecvd  = `l4lb_gossip_wire_bytes_total{direction="received"}`
	ownBytesSent    = `l4lb_gossip_bytes_total{direction="sent"}`
	maxLatencyFails = 3 // a latency run stops after this many samples in a row time out
)

// scenarioB starts cfg.nodes agents, registers cfg.vips VIPs x cfg.perVIP
// backends spread round robin over them, and measures convergence, memory,
// idle cost and the registration-to-DNS latency across nodes, idle and
// under churn.
func scenarioB(ctx context.Context, cfg *config, rep *report) error {
	nn, nv, per := cfg.nodes, cfg.vips, cfg.perVIP
	total := nv * per
	what := fmt.Sprintf("b: %d nodes, %s VIPs x %d backends", nn, thousands(nv), per)
	perNode := make([][]registration, nn)
	labels := make([]string, nv)
	for i := 0; i < nv; i++ {
		labels[i] = fmt.Sprintf("/scale-b/v%d:80", i)
		for j := 0; j < per; j++ {
			k := i*per + j
			perNode[k%nn] = append(perNode[k%nn], registration{label: labels[i], backend: backendAddr(k), weight: 1})
		}
	}
	c, err := startCluster(ctx, cfg, "b", nn)
	defer c.stop(10 * time.Second)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(cfg.timeout)

	// Registrations: every node at once, cfg.bConc in flight on each.
	progress("b: registering %s backends over %d nodes (%s on each)", thousands(total), nn, inFlight(cfg.bConc))
	var done atomic.Int64
	stopTicker := ticker("b: registered", total, &done, 10*time.Second)
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, nn)
	lats := make([][]time.Duration, nn)
	for i, a := range c.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, lats[i], errs[i] = putAll(ctx, a, perNode[i], cfg.bConc, deadline, &done)
		}()
	}
	wg.Wait()
	stopTicker()
	putsDone := time.Since(t0)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sAll := sortDurations(all)
	regRes := fmt.Sprintf("%s, %.0f/s; latency p50 %s, p99 %s", secs(putsDone), float64(len(all))/putsDone.Seconds(), ms(percentile(sAll, 50)), ms(percentile(sAll, 99)))
	if err := errors.Join(errs...); err != nil {
		rep.add(what+": registration calls, "+inFlight(cfg.bConc)+" per node", fmt.Sprintf("only %s of %s: %s", thousands(len(all)), thousands(total), regRes), "", ptr(false))
		return err
	}
	rep.add(what+": registration calls, "+inFlight(cfg.bConc)+" per node", regRes, "", nil)
	rep.fig("b_nodes", float64(nn))
	rep.fig("b_vips", float64(nv))
	rep.fig("b_per_vip", float64(per))
	rep.fig("b_puts_s", putsDone.Seconds())

	// Convergence: every node's table holds every VIP and backend, and its
	// DNS answers a sample of the names and the last one.
	progress("b: registrations done after %s; waiting until every node holds them all", secs(putsDone))
	conv, held, err := waitConverged(ctx, c, nv, total, t0, deadline)
	convWhat := fmt.Sprintf("b: time until every node holds all %s VIPs and %s backends (from the first PUT)", thousands(nv), thousands(total))
	if err != nil {
		rep.add(convWhat, fmt.Sprintf("not within -timeout %s: %s", cfg.timeout, held), "<= 60 s", ptr(false))
		return err
	}
	var names []string
	for _, i := range spread(nv, cfg.dnsSample) {
		names = append(names, dnsName(labels[i]))
	}
	for _, a := range c.agents {
		at, pending := newDNSProbe(a.dns).waitAnswers(ctx, names, 20*time.Millisecond, deadline)
		if len(pending) > 0 {
			rep.add(convWhat, fmt.Sprintf("%s: %d of %d sampled names unanswered at the -timeout", a.name, len(pending), len(names)), "<= 60 s", ptr(false))
			return fmt.Errorf("%s: DNS does not answer %s", a.name, pending[0])
		}
		if d := at.Sub(t0); d > conv {
			conv = d
		}
	}
	rep.add(convWhat, secs(conv), "<= 60 s", ptr(conv <= 60*time.Second))
	rep.add("b: of which after the last PUT returned (propagation)", secs(conv-putsDone), "", nil)
	rep.fig("b_converged_s", conv.Seconds())
	rep.fig("b_converged_after_puts_s", (conv - putsDone).Seconds())
	progress("b: converged after %s", secs(conv))

	// One look at /v1/vips on every node, as an operator would.
	var checks []string
	checkOK := true
	for _, a := range c.agents {
		v, b, err := countVIPs(ctx, a, "/scale-b/")
		if err != nil {
			checks = append(checks, fmt.Sprintf("%s: %v", a.name, err))
			checkOK = false
			continue
		}
		checks = append(checks, fmt.Sprintf("%s %s/%s", a.name, thousands(v), thousands(b)))
		checkOK = checkOK && v == nv && b == total
	}
	rep.add("b: check: /v1/vips of each node (VIPs/backends); DNS of each node answers "+fmt.Sprint(len(names))+" sampled names",
		strings.Join(checks, ", "), fmt.Sprintf("%s/%s", thousands(nv), thousands(total)), ptr(checkOK))

	// Idle: memory, CPU and gossip bytes over cfg.idle.
	if cfg.idle > 0 {
		progress("b: settling %s, then idle for %s", cfg.settle, cfg.idle)
		if !sleep(ctx, cfg.settle) {
			return ctx.Err()
		}
		if err := idleFigures(ctx, cfg, c, rep); err != nil {
			return err
		}
	}
	if err := c.alive(); err != nil {
		return err
	}

	// Latency: register on node 1, poll node 2's DNS.
	extra := 0 // VIPs of one backend each that the latency runs registered
	if cfg.samples > 0 {
		progress("b: %d latency samples, idle", cfg.samples)
		lat, fails, err := latencyRun(ctx, cfg, c, "i")
		extra += len(lat) + fails
		if err != nil {
			return err
		}
		addLatency(rep, "b: register on node1 -> answered by DNS on node2, idle", "b_lat_idle", lat, fails, cfg.samples)
		if cfg.churnRate > 0 {
			churner := c.agents[nn-1]
			progress("b: %d latency samples while %s makes %d changes/s", cfg.samples, churner.name, cfg.churnRate)
			before := scrapeAll(ctx, c)
			ch := startChurn(ctx, churner, perNode[nn-1], cfg.churnRate)
			if !sleep(ctx, time.Second) {
				ch.stop()
				return ctx.Err()
			}
			lat, fails, err := latencyRun(ctx, cfg, c, "c")
			extra += len(lat) + fails
			res := ch.stop()
			after := scrapeAll(ctx, c)
			if err != nil {
				return err
			}
			rate := float64(res.done) / res.took.Seconds()
			addLatency(rep, fmt.Sprintf("b: the same while %s makes %d changes/s (achieved %.0f/s, %d errors, %d ticks skipped with 8 in flight)",
				churner.name, cfg.churnRate, rate, res.errs, res.skipped), "b_lat_churn", lat, fails, cfg.samples)
			rep.fig("b_churn_achieved_per_s", rate)
			if res.firstErr != nil {
				progress("b: churn error: %v", res.firstErr)
			}
			var each []string
			var worst float64
			for i, a := range c.agents {
				d := (after[i][wireBytesSent] - before[i][wireBytesSent]) / res.took.Seconds()
				worst = max(worst, d)
				each = append(each, fmt.Sprintf("%s %s", a.name, thousands(int(d))))
			}
			rep.add("b: gossip bytes/s sent per node during the churn, max (each)", fmt.Sprintf("%s (%s)", thousands(int(worst)), strings.Join(each, ", ")), "", nil)
			rep.fig("b_churn_gossip_sent_bps_max", worst)
		}
	}
	if err := c.alive(); err != nil {
		return err
	}
	if cfg.restart {
		return restartFigure(ctx, cfg, c, rep, nv+extra, total+extra, names)
	}
	return nil
}

// restartFigure stops every agent, starts them again on their state
// directories, and measures the time from the first start until every
// node's table holds nv VIPs and total backends again and its DNS answers
// names.
func restartFigure(ctx context.Context, cfg *config, c *cluster, rep *report, nv, total int, names []string) error {
	progress("b: restarting every agent on its state")
	what := fmt.Sprintf("b: every agent restarted on its state: first start -> every node holds all %s VIPs again and answers them in DNS", thousands(nv))
	t0 := time.Now()
	if err := c.restart(cfg); err != nil {
		return err
	}
	deadline := t0.Add(cfg.timeout)
	conv, held, err := waitConverged(ctx, c, nv, total, t0, deadline)
	if err != nil {
		rep.add(what, "not within -timeout: "+held, "", ptr(false))
		return err
	}
	for _, a := range c.agents {
		at, pending := newDNSProbe(a.dns).waitAnswers(ctx, names, 20*time.Millisecond, deadline)
		if len(pending) > 0 {
			rep.add(what, fmt.Sprintf("%s: %d of %d sampled names unanswered at the -timeout", a.name, len(pending), len(names)), "", ptr(false))
			return fmt.Errorf("%s: DNS does not answer %s after the restart", a.name, pending[0])
		}
		if d := at.Sub(t0); d > conv {
			conv = d
		}
	}
	rep.add(what, secs(conv), "", nil)
	rep.fig("b_restart_converged_s", conv.Seconds())
	return nil
}

// waitConverged polls every node's /metrics until each holds nv programmed
// VIPs and total backends in its table. Agents without those gauges are
// asked GET /v1/vips instead. It returns the time since t0 and what each
// node held.
func waitConverged(ctx context.Context, c *cluster, nv, total int, t0, deadline time.Time) (time.Duration, string, error) {
	held := make([]string, len(c.agents))
	for {
		all := true
		for i, a := range c.agents {
			v, b, err := holds(ctx, a)
			switch {
			case err != nil:
				held[i] = fmt.Sprintf("%s: %v", a.name, err)
				all = false
			default:
				held[i] = fmt.Sprintf("%s %s/%s", a.name, thousands(v), thousands(b))
				all = all && v >= nv && b >= total
			}
		}
		if all {
			return time.Since(t0), strings.Join(held, ", "), nil
		}
		if err := c.alive(); err != nil {
			return 0, strings.Join(held, ", "), err
		}
		if ctx.Err() != nil {
			return 0, strings.Join(held, ", "), ctx.Err()
		}
		if time.Now().After(deadline) {
			return 0, strings.Join(held, ", "), fmt.Errorf("not converged by the -timeout: %s", strings.Join(held, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holds is how many VIPs and backends a node's table holds now.
func holds(ctx context.Context, a *agentProc) (vips, backends int, err error) {
	m, err := a.metrics(ctx)
	if err == nil {
		v, ok1 := m[programmedVIPs]
		b, ok2 := m[healthyBackends]
		if ok1 && ok2 {
			return int(v), int(b), nil
		}
	}
	return countVIPs(ctx, a, "/scale-b/")
}

// idleFigures measures each agent's RSS, CPU and gossip bytes over
// cfg.idle while nothing changes.
func idleFigures(ctx context.Context, cfg *config, c *cluster, rep *report) error {
	// The agents' CPU is read around the window, after the first scrape of
	// /metrics and before the last: a scrape is work an operator's
	// Prometheus asks for (it grows with the VIPs: per-VIP series), not
	// idle work, and is reported on its own.
	n := len(c.agents)
	cpuA, cpu0 := make([]float64, n), make([]float64, n)
	for i, a := range c.agents {
		cpuA[i], _ = cpuSeconds(a.pid())
	}
	m0 := scrapeAll(ctx, c)
	for i, a := range c.agents {
		cpu0[i], _ = cpuSeconds(a.pid())
	}
	t0 := time.Now()
	if !sleep(ctx, cfg.idle) {
		return ctx.Err()
	}
	took := time.Since(t0).Seconds()
	cpu1 := make([]float64, n)
	for i, a := range c.agents {
		var err error
		if cpu1[i], err = cpuSeconds(a.pid()); err != nil {
			return err
		}
	}
	m1 := scrapeAll(ctx, c)
	var scrapeEach []string
	var scrapeMax float64
	for i := range c.agents {
		ms := (cpu0[i] - cpuA[i]) * 1000
		scrapeMax = max(scrapeMax, ms)
		scrapeEach = append(scrapeEach, fmt.Sprintf("%.0f", ms))
	}
	rep.add("b: one scrape of /metrics, agent CPU, max (each, ms; 10 ms clock ticks)", fmt.Sprintf("%.0f ms (%s)", scrapeMax, strings.Join(scrapeEach, ", ")), "", nil)
	rep.fig("b_scrape_cpu_ms_max", scrapeMax)
	var cpuEach, sentEach, recvEach, rssEach []string
	var cpuMax, sentMax, ownMax float64
	var rssMax uint64
	for i, a := range c.agents {
		pct := (cpu1[i] - cpu0[i]) / took * 100
		cpuMax = max(cpuMax, pct)
		cpuEach = append(cpuEach, fmt.Sprintf("%.2f", pct))
		sent := (m1[i][wireBytesSent] - m0[i][wireBytesSent]) / took
		recv := (m1[i][wireBytesRecvd] - m0[i][wireBytesRecvd]) / took
		own := (m1[i][ownBytesSent] - m0[i][ownBytesSent]) / took
		sentMax, ownMax = max(sentMax, sent), max(ownMax, own)
		sentEach = append(sentEach, thousands(int(sent)))
		recvEach = append(recvEach, thousands(int(recv)))
		mem, err := readMemory(a.pid())
		if err != nil {
			return err
		}
		rssMax = max(rssMax, mem.rss)
		rssEach = append(rssEach, fmt.Sprintf("%s %.1f (peak %.1f)", a.name, float64(mem.rss)/(1<<20), float64(mem.hwm)/(1<<20)))
	}
	if _, ok := m1[0][wireBytesSent]; !ok {
		rep.add("b: idle gossip bytes", "the agents' /metrics have no "+wireBytesSent, "", nil)
	}
	rep.add("b: RSS per agent after the idle window, max (each, MiB)", fmt.Sprintf("%s (%s)", mib(rssMax), strings.Join(rssEach, ", ")), "<= 64 MiB", ptr(rssMax <= 64<<20))
	rep.add(fmt.Sprintf("b: idle CPU per agent over %s, %% of a core, max (each)", cfg.idle), fmt.Sprintf("%.2f %% (%s)", cpuMax, strings.Join(cpuEach, ", ")), "<= 1 %", ptr(cpuMax <= 1))
	rep.add(fmt.Sprintf("b: idle gossip bytes/s sent per node over %s, max (each sent; each received)", cfg.idle),
		fmt.Sprintf("%s B/s (%s; %s)", thousands(int(sentMax)), strings.Join(sentEach, ", "), strings.Join(recvEach, ", ")), "<= 2,000 B/s", ptr(sentMax <= 2000))
	rep.fig("b_rss_mib_max", float64(rssMax)/(1<<20))
	rep.fig("b_idle_cpu_pct_max", cpuMax)
	rep.fig("b_idle_gossip_sent_bps_max", sentMax)
	rep.fig("b_idle_gossip_own_sent_bps_max", ownMax)
	return nil
}

// scrapeAll is every agent's /metrics; an agent that does not answer gives
// an empty map.
func scrapeAll(ctx context.Context, c *cluster) []map[string]float64 {
	out := make([]map[string]float64, len(c.agents))
	for i, a := range c.agents {
		m, err := a.metrics(ctx)
		if err != nil {
			progress("%v", err)
			m = map[string]float64{}
		}
		out[i] = m
	}
	return out
}

// latencyRun takes cfg.samples samples, one at a time: a new VIP with one
// backend registered on node 1, the time from just before its PUT until
// node 2's DNS answers its name (polled every cfg.poll). A sample that
// times out counts as a failure; the run stops after maxLatencyFails in a
// row.
func latencyRun(ctx context.Context, cfg *config, c *cluster, tag string) ([]time.Duration, int, error) {
	reg, dnsAt := c.agents[0], newDNSProbe(c.agents[1].dns)
	var lat []time.Duration
	fails, inRow := 0, 0
	for s := 0; s < cfg.samples; s++ {
		r := registration{label: fmt.Sprintf("/scale-lat/%s%d:80", tag, s), backend: fmt.Sprintf("10.250.%d.%d:8080", (s>>8)&255, s&255), weight: 1}
		name := dnsName(r.label)
		t := time.Now()
		if _, err := reg.api.Register(ctx, r.entry()); err != nil {
			return lat, fails, fmt.Errorf("latency sample %d: %w", s, err)
		}
		ok := false
		for time.Since(t) < cfg.sampleTimeout && ctx.Err() == nil {
			if yes, _ := dnsAt.answers(name); yes {
				ok = true
				break
			}
			time.Sleep(cfg.poll)
		}
		if ctx.Err() != nil {
			return lat, fails, ctx.Err()
		}
		if ok {
			lat = append(lat, time.Since(t))
			inRow = 0
		} else {
			fails++
			inRow++
			if inRow >= maxLatencyFails {
				progress("b: %d latency samples in a row timed out (%s): run stopped", inRow, cfg.sampleTimeout)
				break
			}
		}
		sleep(ctx, cfg.sampleGap)
	}
	return lat, fails, nil
}

func addLatency(rep *report, what, fig string, lat []time.Duration, fails, want int) {
	s := sortDurations(lat)
	res := fmt.Sprintf("p50 %s, p99 %s, max %s (%d samples)", ms(percentile(s, 50)), ms(percentile(s, 99)), ms(percentile(s, 100)), len(lat))
	met := len(lat) > 0 && fails == 0 && percentile(s, 99) <= 250*time.Millisecond
	if fails > 0 {
		res += fmt.Sprintf("; %d of %d timed out", fails, len(lat)+fails)
	}
	if len(lat)+fails < want {
		res += fmt.Sprintf("; stopped after %d of %d", len(lat)+fails, want)
	}
	rep.add(what, res, "p99 <= 250 ms", ptr(met))
	rep.fig(fig+"_p50_ms", float64(percentile(s, 50))/1e6)
	rep.fig(fig+"_p99_ms", float64(percentile(s, 99))/1e6)
	rep.fig(fig+"_timeouts", float64(fails))
}

// churn changes the weight of a node's backends, one PUT per tick, at most
// 8 in flight (a tick that finds 8 in flight is skipped and counted).
type churn struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time
	res    churnResult
	mu     sync.Mutex
}

type churnResult struct {
	done, errs, skipped int
	firstErr            error
	took                time.Duration
}

func startChurn(ctx context.Context, a *agentProc, regs []registration, rate int) *churn {
	ctx, cancel := context.WithCancel(ctx)
	ch := &churn{cancel: cancel, start: time.Now()}
	sem := make(chan struct{}, 8)
	ch.wg.Add(1)
	go func() {
		defer ch.wg.Done()
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				ch.mu.Lock()
				ch.res.skipped++
				ch.mu.Unlock()
				continue
			}
			r := regs[i%len(regs)]
			// Each pass over the node's backends flips their weight: 2, 1, 2...
			r.weight = uint32(2 - (i/len(regs))%2)
			ch.wg.Add(1)
			go func() {
				defer ch.wg.Done()
				defer func() { <-sem }()
				_, err := a.api.Register(ctx, r.entry())
				ch.mu.Lock()
				defer ch.mu.Unlock()
				switch {
				case err == nil:
					ch.res.done++
				case ctx.Err() != nil: // stopped: not the agent's failure
				default:
					ch.res.errs++
					if ch.res.firstErr == nil {
						ch.res.firstErr = err
					}
				}
			}()
		}
	}()
	return ch
}

// stop ends the churn and returns what it did.
func (ch *churn) stop() churnResult {
	took := time.Since(ch.start)
	ch.cancel()
	ch.wg.Wait()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.res.took = took
	return ch.res
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
