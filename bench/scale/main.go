// Command scale measures l4lb's control plane at scale with real agents on
// loopback: each agent is `l4lb agent --dataplane none` on its own 127.x.y.i
// address (API, DNS and gossip on that address, unprivileged ports), with its
// state directory under a temporary directory. Backends are registered
// through the HTTP API (PUT /v1/backends), answers are read from the agents'
// DNS servers with a DNS client, costs from /proc/PID and /metrics. Every
// agent it starts is stopped when it exits.
//
//	scale -l4lb bin/l4lb [-scenario a,b] [sizes...]
//
// Scenario a: N backends registered on one node, one at a time; time until
// all are answered in DNS, the agent's CPU per registration over the first
// and the last window. Scenario b: a cluster of nodes, V VIPs x P backends
// spread over them; time until every node holds them all, memory, idle CPU
// and gossip bytes, and the time from a registration on node 1 to DNS on
// node 2, idle and while the last node makes changes. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

type config struct {
	binary        string
	scenarios     map[string]bool
	ipPrefix      string
	apiPort       int
	dnsPort       int
	gossipPort    int
	workDir       string
	keep          bool
	encrypt       bool
	agentLogLevel string
	startTimeout  time.Duration
	timeout       time.Duration
	jsonOut       bool

	// scenario a
	backends  int
	aPerVIP   int
	aConc     int
	window    int
	dnsSample int

	// scenario b
	nodes         int
	vips          int
	perVIP        int
	bConc         int
	settle        time.Duration
	idle          time.Duration
	samples       int
	sampleTimeout time.Duration
	sampleGap     time.Duration
	poll          time.Duration
	churnRate     int
	restart       bool
}

func main() {
	cfg := &config{}
	scen := flag.String("scenario", "a,b", "comma-separated scenarios to run: a (one node, many backends), b (cluster of many VIPs)")
	flag.StringVar(&cfg.binary, "l4lb", "", "path of the l4lb binary to measure (required)")
	flag.StringVar(&cfg.ipPrefix, "ip-prefix", "127.77.0.", "agents get the addresses PREFIX1, PREFIX2, ... (in 127.0.0.0/8)")
	flag.IntVar(&cfg.apiPort, "api-port", 62080, "port of each agent's HTTP API (on its own address)")
	flag.IntVar(&cfg.dnsPort, "dns-port", 5354, "port of each agent's DNS server (on its own address)")
	flag.IntVar(&cfg.gossipPort, "gossip-port", 7946, "port of each agent's gossip (on its own address)")
	flag.StringVar(&cfg.workDir, "workdir", "", "directory for the agents' state and logs (default: a new temporary directory, removed at exit unless -keep)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (agent logs, state) at exit")
	flag.BoolVar(&cfg.encrypt, "encrypt", true, "encrypt gossip with a fresh key, as a production cluster does")
	flag.StringVar(&cfg.agentLogLevel, "agent-log-level", "info", "--log-level of the agents (their logs go to the work directory)")
	flag.DurationVar(&cfg.startTimeout, "start-timeout", 60*time.Second, "longest wait for the agents to be ready")
	flag.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "longest time each scenario's registrations and convergence may take; past it the scenario reports what it reached")
	flag.BoolVar(&cfg.jsonOut, "json", false, "also print the figures as one JSON line")

	flag.IntVar(&cfg.backends, "backends", 10000, "a: backends registered on the node")
	flag.IntVar(&cfg.aPerVIP, "a-per-vip", 1, "a: backends per VIP (1: each registration makes a new name, so DNS shows each one)")
	flag.IntVar(&cfg.aConc, "a-concurrency", 1, "a: registrations in flight at once (1: one at a time)")
	flag.IntVar(&cfg.window, "window", 1000, "a: registrations in each CPU window (the first and the last; at most half of -backends)")
	flag.IntVar(&cfg.dnsSample, "dns-sample", 100, "a and b: names checked in DNS at the end, evenly spread, plus the last one")

	flag.IntVar(&cfg.nodes, "nodes", 3, "b: agents in the cluster (at least 2)")
	flag.IntVar(&cfg.vips, "vips", 10000, "b: named VIPs")
	flag.IntVar(&cfg.perVIP, "per-vip", 10, "b: backends per VIP, spread over the nodes round robin")
	flag.IntVar(&cfg.bConc, "b-concurrency", 1, "b: registrations in flight at once on each node")
	flag.DurationVar(&cfg.settle, "settle", 10*time.Second, "b: wait after convergence before the idle window")
	flag.DurationVar(&cfg.idle, "idle", 30*time.Second, "b: idle window for CPU and gossip bytes (0: skip)")
	flag.IntVar(&cfg.samples, "samples", 100, "b: latency samples, register on node 1 -> DNS on node 2, idle and under churn (0: skip)")
	flag.DurationVar(&cfg.sampleTimeout, "sample-timeout", 10*time.Second, "b: longest wait for one latency sample")
	flag.DurationVar(&cfg.sampleGap, "sample-gap", 50*time.Millisecond, "b: pause between latency samples")
	flag.DurationVar(&cfg.poll, "poll", 2*time.Millisecond, "b: DNS poll interval of a latency sample")
	flag.IntVar(&cfg.churnRate, "churn-rate", 100, "b: changes per second the last node makes during the second latency run (0: skip that run)")
	flag.BoolVar(&cfg.restart, "restart", true, "b: at the end, restart every agent on its state and time until every node holds everything again")
	quick := flag.Bool("quick", false, "smaller defaults for a run of about a minute: -backends 1000 -window 250 -vips 300 -settle 3s -idle 15s -samples 30 (flags given explicitly win)")
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range quickDefaults {
			if !set[name] {
				if err := flag.Set(name, v); err != nil {
					panic(err)
				}
			}
		}
	}

	cfg.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.scenarios[s] = true
		}
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// quickDefaults are the sizes -quick gives.
var quickDefaults = map[string]string{
	"backends": "1000", "window": "250", "vips": "300", "settle": "3s", "idle": "15s", "samples": "30",
}

func (cfg *config) check() error {
	var errs []error
	if cfg.binary == "" {
		errs = append(errs, errors.New("-l4lb is required: the l4lb binary to measure"))
	} else if _, err := os.Stat(cfg.binary); err != nil {
		errs = append(errs, fmt.Errorf("-l4lb: %w", err))
	}
	for s := range cfg.scenarios {
		if s != "a" && s != "b" {
			errs = append(errs, fmt.Errorf("-scenario %q: want a, b or a,b", s))
		}
	}
	if len(cfg.scenarios) == 0 {
		errs = append(errs, errors.New("-scenario: none given"))
	}
	if cfg.backends < 2 || cfg.aPerVIP < 1 || cfg.aConc < 1 || cfg.window < 1 {
		errs = append(errs, errors.New("-backends at least 2; -a-per-vip, -a-concurrency and -window at least 1"))
	}
	if cfg.nodes < 2 || cfg.nodes > 250 || cfg.vips < 1 || cfg.perVIP < 1 || cfg.bConc < 1 {
		errs = append(errs, errors.New("-nodes 2 to 250; -vips, -per-vip and -b-concurrency at least 1"))
	}
	if cfg.backends >= 1<<23 || cfg.vips*cfg.perVIP >= 1<<23 {
		errs = append(errs, errors.New("at most 8,388,607 backends"))
	}
	return errors.Join(errs...)
}

// row is one line of the result table.
type row struct {
	What   string `json:"what"`
	Result string `json:"result"`
	Target string `json:"target,omitempty"`
	Met    string `json:"met,omitempty"` // yes, no, or empty when there is no target
}

// report collects the rows and the raw figures of a run.
type report struct {
	mu      sync.Mutex
	rows    []row
	figures map[string]float64
}

func (r *report) add(what, result, target string, met *bool) {
	m := ""
	if met != nil {
		m = map[bool]string{true: "yes", false: "NO"}[*met]
	}
	r.mu.Lock()
	r.rows = append(r.rows, row{What: what, Result: result, Target: target, Met: m})
	r.mu.Unlock()
}

func (r *report) fig(name string, v float64) {
	r.mu.Lock()
	r.figures[name] = v
	r.mu.Unlock()
}

func ptr(b bool) *bool { return &b }

func run(cfg *config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.workDir == "" {
		d, err := os.MkdirTemp("", "l4lb-scale-")
		if err != nil {
			return err
		}
		cfg.workDir = d
	} else if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return err
	}
	if cfg.keep {
		progress("work directory (kept): %s", cfg.workDir)
	} else {
		defer os.RemoveAll(cfg.workDir)
	}
	start := time.Now().UTC()
	rep := &report{figures: map[string]float64{}}
	version, _ := exec.Command(cfg.binary, "version").Output()
	header := fmt.Sprintf("%s, %s (%s), %d CPUs, load average at start %s", start.Format(time.RFC3339), cfg.binary,
		strings.TrimSpace(string(version)), runtime.NumCPU(), loadAverage())

	var errs []error
	if cfg.scenarios["a"] && ctx.Err() == nil {
		if err := scenarioA(ctx, cfg, rep); err != nil {
			errs = append(errs, fmt.Errorf("scenario a: %w", err))
			rep.add("a: did not finish", err.Error(), "", ptr(false))
		}
	}
	if cfg.scenarios["b"] && ctx.Err() == nil {
		if err := scenarioB(ctx, cfg, rep); err != nil {
			errs = append(errs, fmt.Errorf("scenario b: %w", err))
			rep.add("b: did not finish", err.Error(), "", ptr(false))
		}
	}
	end := time.Now().UTC()
	fmt.Printf("\n%s\n", header)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tresult\ttarget\tmet?")
	fmt.Fprintln(tw, "----\t------\t------\t----")
	for _, r := range rep.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.What, r.Result, r.Target, r.Met)
	}
	tw.Flush()
	up, _ := exec.Command("uptime").Output()
	fmt.Printf("%s (%s run); uptime: %s\n", end.Format(time.RFC3339), end.Sub(start).Round(time.Second), strings.TrimSpace(string(up)))
	if cfg.jsonOut {
		b, err := json.Marshal(struct {
			Start   string             `json:"start"`
			End     string             `json:"end"`
			Binary  string             `json:"binary"`
			Version string             `json:"version"`
			LoadEnd string             `json:"load_end"`
			Rows    []row              `json:"rows"`
			Figures map[string]float64 `json:"figures"`
		}{start.Format(time.RFC3339), end.Format(time.RFC3339), cfg.binary, strings.TrimSpace(string(version)), loadAverage(), rep.rows, rep.figures})
		if err != nil {
			return err
		}
		fmt.Printf("JSON %s\n", b)
	}
	if ctx.Err() != nil {
		errs = append(errs, errors.New("interrupted"))
	}
	return errors.Join(errs...)
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// backendAddr is the backend address of the k-th registration: 10.a.b.c:8080
// from k+1, so that none is 10.0.0.0.
func backendAddr(k int) string {
	n := k + 1
	return fmt.Sprintf("10.%d.%d.%d:8080", (n>>16)&255, (n>>8)&255, n&255)
}

// dnsName is the path name under which the named VIP label ("/scale-a/v1:80")
// answers with the default framework and domain.
func dnsName(label string) string {
	name, _, _ := strings.Cut(label, ":")
	path, _, err := vip.DNSNames(name, "", "")
	if err != nil {
		panic(err) // the labels are ours and valid
	}
	return path
}

// spread picks n indices out of 0..total-1, evenly, always with the last.
func spread(total, n int) []int {
	if n >= total {
		n = total
	}
	seen := map[int]bool{}
	var out []int
	for i := 0; i < n; i++ {
		k := int(int64(i) * int64(total) / int64(n))
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if !seen[total-1] {
		out = append(out, total-1)
	}
	return out
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func sortDurations(d []time.Duration) []time.Duration {
	out := append([]time.Duration(nil), d...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// registration is one PUT /v1/backends.
type registration struct {
	label   string
	backend string
	weight  uint32
}

func (r registration) entry() source.Entry {
	w := r.weight
	return source.Entry{VIP: r.label, Backend: r.backend, Weight: &w}
}

// putAll registers regs on a with conc requests in flight, in order when
// conc is 1, until done, the first error or the deadline. It returns how
// many succeeded and each request's latency (in the order of completion).
func putAll(ctx context.Context, a *agentProc, regs []registration, conc int, deadline time.Time, done *atomic.Int64) (int, []time.Duration, error) {
	var (
		mu      sync.Mutex
		lat     = make([]time.Duration, 0, len(regs))
		firstEr error
		next    atomic.Int64
		ok      atomic.Int64
		wg      sync.WaitGroup
	)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(regs) || ctx.Err() != nil {
					return
				}
				t := time.Now()
				_, err := a.api.Register(ctx, regs[i].entry())
				d := time.Since(t)
				if err != nil {
					mu.Lock()
					if firstEr == nil {
						firstEr = fmt.Errorf("PUT /v1/backends %s %s on %s: %w", regs[i].label, regs[i].backend, a.name, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				ok.Add(1)
				if done != nil {
					done.Add(1)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstEr == nil && int(ok.Load()) < len(regs) {
		if ctx.Err() != nil && time.Now().After(deadline) {
			firstEr = fmt.Errorf("registered %d of %d on %s before the -timeout", ok.Load(), len(regs), a.name)
		} else {
			firstEr = fmt.Errorf("registered %d of %d on %s: %w", ok.Load(), len(regs), a.name, ctx.Err())
		}
	}
	return int(ok.Load()), lat, firstEr
}

// ticker prints a progress line every period until stop is called (once
// or more).
func ticker(what string, total int, done *atomic.Int64, period time.Duration) (stop func()) {
	ch := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ch:
				return
			case <-t.C:
				n := done.Load()
				progress("%s: %d of %d after %s (%.0f/s)", what, n, total, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// thousands writes n with comma separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
