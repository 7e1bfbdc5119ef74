package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// healthyBackends is the agent's gauge of backends in its desired table.
const healthyBackends = `l4lb_backends{health="healthy"}`

// scenarioA registers cfg.backends backends on one agent, cfg.aConc at a
// time, and measures the time until DNS answers them and the agent's CPU per
// registration over the first and the last window.
//
// A window's CPU is read when the agent has done the window's work: before
// the window, and after it once the desired table holds every backend
// registered so far and DNS answers the last one's name. The agent works
// asynchronously after a PUT returns, so reading the CPU at the last PUT
// would leave part of the window's cost out.
func scenarioA(ctx context.Context, cfg *config, rep *report) error {
	n, w := cfg.backends, min(cfg.window, cfg.backends/2)
	what := fmt.Sprintf("a: %s backends, %d per VIP, on one node, %s", thousands(n), cfg.aPerVIP, inFlight(cfg.aConc))
	regs := make([]registration, n)
	for k := range regs {
		regs[k] = registration{label: fmt.Sprintf("/scale-a/v%d:80", k/cfg.aPerVIP), backend: backendAddr(k), weight: 1}
	}
	tStart := time.Now()
	c, err := startCluster(ctx, cfg, "a", 1)
	defer c.stop(10 * time.Second)
	if err != nil {
		return err
	}
	a := c.agents[0]
	probe := newDNSProbe(a.dns)
	pid := a.pid()
	deadline := time.Now().Add(cfg.timeout)
	var done atomic.Int64
	stopTicker := ticker("a: registered", n, &done, 10*time.Second)
	defer stopTicker()

	served := func(k int) error {
		return waitServed(ctx, a, probe, regs, k, deadline)
	}
	cpu := func() float64 {
		v, err := cpuSeconds(pid)
		if err != nil {
			progress("a: %v", err)
		}
		return v
	}

	progress("a: registering %d backends (%s), CPU windows of %d", n, inFlight(cfg.aConc), w)
	t0 := time.Now()
	cpu0 := cpu()
	// partial says how far the registrations got when one fails or the
	// -timeout passes.
	partial := func(err error) error {
		rep.add(what, fmt.Sprintf("only %s registered in %s", thousands(int(done.Load())), secs(time.Since(t0))), "", ptr(false))
		return err
	}
	_, latFirst, err := putAll(ctx, a, regs[:w], cfg.aConc, deadline, &done)
	if err != nil {
		return partial(err)
	}
	if err := served(w - 1); err != nil {
		return partial(err)
	}
	cpu1 := cpu()
	var latMid []time.Duration
	if n-w > w {
		if _, latMid, err = putAll(ctx, a, regs[w:n-w], cfg.aConc, deadline, &done); err != nil {
			return partial(err)
		}
		if err := served(n - w - 1); err != nil {
			return partial(err)
		}
	}
	cpu2 := cpu()
	_, latLast, err := putAll(ctx, a, regs[n-w:], cfg.aConc, deadline, &done)
	if err != nil {
		return partial(err)
	}
	putsDone := time.Since(t0)
	if err := served(n - 1); err != nil {
		return partial(err)
	}
	cpu3 := cpu()
	stopTicker()

	// Every sampled name, the last one included, answered.
	var names []string
	seen := map[string]bool{}
	for _, k := range spread(n, cfg.dnsSample) {
		if nm := dnsName(regs[k].label); !seen[nm] {
			seen[nm] = true
			names = append(names, nm)
		}
	}
	at, pending := probe.waitAnswers(ctx, names, 20*time.Millisecond, deadline)
	if len(pending) > 0 {
		return fmt.Errorf("%d of %d sampled names not answered by %s before the -timeout, e.g. %s", len(pending), len(names), a.dns, pending[0])
	}
	allServed := at.Sub(t0)
	total := at.Sub(tStart)
	mem, _ := readMemory(pid)
	vipsHeld, backendsHeld, verr := countVIPs(ctx, a, "/scale-a/")

	all := append(append(append([]time.Duration(nil), latFirst...), latMid...), latLast...)
	sAll, sFirst, sLast := sortDurations(all), sortDurations(latFirst), sortDurations(latLast)
	perFirst := (cpu1 - cpu0) / float64(w)
	perLast := (cpu3 - cpu2) / float64(w)
	ratio := perLast / perFirst

	rep.add(what+": time until all are answered in DNS", secs(allServed), "", nil)
	rep.add("a: registration calls (PUT /v1/backends), all", fmt.Sprintf("%s, %.0f/s; latency p50 %s, p99 %s", secs(putsDone), float64(n)/putsDone.Seconds(), ms(percentile(sAll, 50)), ms(percentile(sAll, 99))), "", nil)
	rep.add(fmt.Sprintf("a: agent CPU per registration, first %s", thousands(w)), ms(time.Duration(perFirst*float64(time.Second))), "", nil)
	rep.add(fmt.Sprintf("a: agent CPU per registration, last %s", thousands(w)), ms(time.Duration(perLast*float64(time.Second))), "", nil)
	ratioRes := fmt.Sprintf("%.2fx", ratio)
	if cpuFirst, cpuLast := cpu1-cpu0, cpu3-cpu2; min(cpuFirst, cpuLast) < 0.5 {
		// /proc counts CPU in ticks of 1/clockTicks s: below half a second a
		// window's figure is off by a few per cent or more.
		ratioRes += fmt.Sprintf(" (windows used %.2f s and %.2f s of CPU, counted in %.0f ms ticks: too coarse, take a larger -window)", cpuFirst, cpuLast, 1000/clockTicks)
	}
	if perFirst == 0 {
		ratioRes = "no CPU counted in the first window: take a larger -window"
	}
	rep.add("a: CPU per registration, last / first", ratioRes, "<= 1.5x", ptr(perFirst > 0 && ratio <= 1.5))
	rep.add("a: PUT latency p50 / p99, first / last window", fmt.Sprintf("%s / %s; %s / %s",
		ms(percentile(sFirst, 50)), ms(percentile(sFirst, 99)), ms(percentile(sLast, 50)), ms(percentile(sLast, 99))), "", nil)
	rep.add("a: total wall time (agent start to all answered)", secs(total), "", nil)
	rep.add("a: agent RSS at the end (peak)", fmt.Sprintf("%s (%s)", mib(mem.rss), mib(mem.hwm)), "", nil)
	check := fmt.Sprintf("%d names answered (%d sampled + the last); /v1/vips: %s VIPs, %s backends", len(names), len(names)-1, thousands(vipsHeld), thousands(backendsHeld))
	wantVIPs := (n + cfg.aPerVIP - 1) / cfg.aPerVIP
	ok := verr == nil && vipsHeld == wantVIPs && backendsHeld == n
	if verr != nil {
		check += " (" + verr.Error() + ")"
	}
	rep.add("a: check", check, fmt.Sprintf("%s VIPs, %s backends", thousands(wantVIPs), thousands(n)), ptr(ok))

	rep.fig("a_backends", float64(n))
	rep.fig("a_window", float64(w))
	rep.fig("a_all_served_s", allServed.Seconds())
	rep.fig("a_puts_s", putsDone.Seconds())
	rep.fig("a_cpu_per_reg_first_ms", perFirst*1000)
	rep.fig("a_cpu_per_reg_last_ms", perLast*1000)
	rep.fig("a_cpu_ratio", ratio)
	rep.fig("a_total_s", total.Seconds())
	rep.fig("a_rss_mib", float64(mem.rss)/(1<<20))
	return nil
}

// waitServed waits until the agent's desired table holds at least k+1
// backends (its healthy-backends gauge, when it has one) and its DNS
// answers the name of regs[k].
func waitServed(ctx context.Context, a *agentProc, probe *dnsProbe, regs []registration, k int, deadline time.Time) error {
	name := dnsName(regs[k].label)
	for {
		okDNS, _ := probe.answers(name)
		okTable := true
		if okDNS {
			if m, err := a.metrics(ctx); err == nil {
				if v, has := m[healthyBackends]; has {
					okTable = v >= float64(k+1)
				}
			}
		}
		if okDNS && okTable {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-a.exited:
			return fmt.Errorf("%s exited; its log ends:\n%s", a.name, a.logTail(20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registration %d (%s %s) not served by the -timeout", k+1, regs[k].label, regs[k].backend)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countVIPs fetches GET /v1/vips once and counts the VIPs whose label starts
// with prefix and their backends.
func countVIPs(ctx context.Context, a *agentProc, prefix string) (vips, backends int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	v, err := a.api.VIPs(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, x := range v.VIPs {
		if strings.HasPrefix(x.Label, prefix) {
			vips++
			backends += len(x.Backends)
		}
	}
	return vips, backends, nil
}

func inFlight(c int) string {
	if c == 1 {
		return "one at a time"
	}
	return fmt.Sprintf("%d in flight", c)
}
