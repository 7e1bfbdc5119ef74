package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/l4lb/l4lb/pkg/api"
)

// agentProc is one `l4lb agent --dataplane none` process on its own
// loopback address, with its API, DNS and gossip on that address.
type agentProc struct {
	name   string
	ip     string
	apiURL string // http://ip:port
	dns    string // ip:port
	gossip string // ip:port
	dir    string // its state directory and log
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	api    *api.Client
	http   *http.Client
}

// cluster is the agents of one scenario; stop ends them all.
type cluster struct {
	agents   []*agentProc
	scenario string
	keyFile  string
}

// startCluster starts n agents on 127.x.y.1 .. 127.x.y.n (the -ip-prefix);
// the first one is the seed the others join. It returns once every agent's
// /readyz answers 200, or an error with the failing agent's log tail. The
// caller must call stop, also on error.
func startCluster(ctx context.Context, cfg *config, scenario string, n int) (*cluster, error) {
	c := &cluster{scenario: scenario}
	keyFile := ""
	if cfg.encrypt {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return c, fmt.Errorf("gossip key: %w", err)
		}
		keyFile = filepath.Join(cfg.workDir, scenario+"-gossip.key")
		if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			return c, fmt.Errorf("gossip key: %w", err)
		}
	}
	c.keyFile = keyFile
	for i := 1; i <= n; i++ {
		a, err := startAgent(cfg, scenario, i, c.join(i), keyFile)
		if a != nil {
			c.agents = append(c.agents, a)
		}
		if err != nil {
			return c, err
		}
	}
	return c, c.waitReady(ctx, cfg)
}

// join is the --join of agent i: none for the seed, node 1 for the others.
func (c *cluster) join(i int) string {
	if i == 1 {
		return ""
	}
	return c.agents[0].gossip
}

func (c *cluster) waitReady(ctx context.Context, cfg *config) error {
	deadline := time.Now().Add(cfg.startTimeout)
	for _, a := range c.agents {
		if err := a.waitReady(ctx, deadline); err != nil {
			return err
		}
	}
	return nil
}

// restart stops every agent and starts each again with the same flags and
// state directory, without waiting for them to be ready.
func (c *cluster) restart(cfg *config) error {
	c.stop(10 * time.Second)
	for i := range c.agents {
		a, err := startAgent(cfg, c.scenario, i+1, c.join(i+1), c.keyFile)
		if err != nil {
			return err
		}
		c.agents[i] = a
	}
	return nil
}

func startAgent(cfg *config, scenario string, i int, join, keyFile string) (*agentProc, error) {
	ip := fmt.Sprintf("%s%d", cfg.ipPrefix, i)
	if net.ParseIP(ip) == nil || !net.ParseIP(ip).IsLoopback() {
		return nil, fmt.Errorf("agent address %s: want an address in 127.0.0.0/8 (see -ip-prefix)", ip)
	}
	a := &agentProc{
		name:   fmt.Sprintf("node%d", i),
		ip:     ip,
		apiURL: "http://" + net.JoinHostPort(ip, strconv.Itoa(cfg.apiPort)),
		dns:    net.JoinHostPort(ip, strconv.Itoa(cfg.dnsPort)),
		gossip: net.JoinHostPort(ip, strconv.Itoa(cfg.gossipPort)),
		dir:    filepath.Join(cfg.workDir, fmt.Sprintf("%s-node%d", scenario, i)),
		exited: make(chan struct{}),
	}
	// Many concurrent requests to one agent: keep their connections.
	a.http = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
	a.api = &api.Client{Addr: strings.TrimPrefix(a.apiURL, "http://"), HTTP: a.http}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", a.name, err)
	}
	args := []string{"agent",
		"--node-name", a.name,
		"--bind", ip,
		"--gossip-port", strconv.Itoa(cfg.gossipPort),
		"--api-listen", strings.TrimPrefix(a.apiURL, "http://"),
		"--dns-listen", a.dns,
		"--dns-forward=false",
		"--dataplane", "none",
		"--state-dir", filepath.Join(a.dir, "state"),
		"--log-level", cfg.agentLogLevel,
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	if keyFile != "" {
		args = append(args, "--gossip-key-file", keyFile)
	}
	logf, err := os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.name, err)
	}
	a.cmd = exec.Command(cfg.binary, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	// If this tool dies without its cleanup, the agents die with it.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", a.name, cfg.binary, err)
	}
	go func() {
		_ = a.cmd.Wait()
		logf.Close()
		close(a.exited)
	}()
	progress("%s: started %s agent pid %d on %s (API %s, DNS %s, gossip %s)", scenario, a.name, a.cmd.Process.Pid, ip, a.apiURL, a.dns, a.gossip)
	return a, nil
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

// waitReady polls /readyz until it answers 200.
func (a *agentProc) waitReady(ctx context.Context, deadline time.Time) error {
	for {
		select {
		case <-a.exited:
			return fmt.Errorf("%s exited before it was ready; its log ends:\n%s", a.name, a.logTail(20))
		default:
		}
		if resp, err := a.get(ctx, "/readyz"); err == nil && resp == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready by the deadline; its log ends:\n%s", a.name, a.logTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *agentProc) get(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.apiURL+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// metrics scrapes /metrics into series -> value.
func (a *agentProc) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.apiURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", a.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: %s", a.name, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// logTail is the last n lines of the agent's log.
func (a *agentProc) logTail(n int) string {
	b, err := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends every agent: SIGTERM (they leave the cluster), then SIGKILL
// for any still running after grace.
func (c *cluster) stop(grace time.Duration) {
	for _, a := range c.agents {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, a := range c.agents {
		select {
		case <-a.exited:
		case <-deadline:
		}
	}
	for _, a := range c.agents {
		select {
		case <-a.exited:
		default:
			progress("%s did not stop within %s: SIGKILL", a.name, grace)
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
	}
}

// alive returns an error naming the first agent that has exited.
func (c *cluster) alive() error {
	for _, a := range c.agents {
		select {
		case <-a.exited:
			return fmt.Errorf("%s exited; its log ends:\n%s", a.name, a.logTail(20))
		default:
		}
	}
	return nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100 // Linux's USER_HZ on every common architecture
}()

// cpuSeconds is the user+system CPU time the process has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	ticks, err := parseStatTicks(b)
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	return float64(ticks) / clockTicks, nil
}

// parseStatTicks returns utime+stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// and parentheses, so fields are counted after its last ')'.
func parseStatTicks(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no ')' in /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field k is f[k-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the command name, want at least 13", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/PID/stat utime/stime: %w", err)
	}
	return u + s, nil
}

// memory is a process's resident set now and at its peak, in bytes.
type memory struct{ rss, hwm uint64 }

func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	return parseStatus(f)
}

// parseStatus reads VmRSS and VmHWM ("VmRSS:	  12345 kB") of
// /proc/PID/status.
func parseStatus(r io.Reader) (memory, error) {
	var m memory
	var found int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("/proc/PID/status %s: %q", name, rest)
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/PID/status %s: %w", name, err)
		}
		if name == "VmRSS" {
			m.rss = v << 10
		} else {
			m.hwm = v << 10
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if found != 2 {
		return m, errors.New("/proc/PID/status: no VmRSS or VmHWM")
	}
	return m, nil
}

// parseMetrics reads the Prometheus text format into a map from the series
// as written ("l4lb_vips{state=\"programmed\"}") to its value. Comments,
// blank lines and lines with a timestamp's extra field are handled; a value
// that is not a number is an error.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the last '}' when there are labels (label
		// values may hold spaces), else at the first space.
		var series, rest string
		if j := strings.LastIndexByte(line, '}'); j >= 0 {
			series, rest = line[:j+1], line[j+1:]
		} else if j := strings.IndexByte(line, ' '); j >= 0 {
			series, rest = line[:j], line[j:]
		} else {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 {
			return nil, fmt.Errorf("metrics line %q: want a value and an optional timestamp", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[series] = v
	}
	return out, sc.Err()
}

// dnsProbe asks one agent's DNS server for A records.
type dnsProbe struct {
	client *dns.Client
	addr   string
}

func newDNSProbe(addr string) *dnsProbe {
	return &dnsProbe{client: &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}, addr: addr}
}

// answers says whether name has an A record now.
func (p *dnsProbe) answers(name string) (bool, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.RecursionDesired = false
	in, _, err := p.client.Exchange(m, p.addr)
	if err != nil {
		return false, fmt.Errorf("DNS %s A at %s: %w", name, p.addr, err)
	}
	if in.Rcode != dns.RcodeSuccess {
		return false, nil
	}
	for _, rr := range in.Answer {
		if _, ok := rr.(*dns.A); ok {
			return true, nil
		}
	}
	return false, nil
}

// waitAnswers polls until every name has an A record at p, every interval,
// until deadline. It returns when the last one answered, or the names still
// unanswered at the deadline.
func (p *dnsProbe) waitAnswers(ctx context.Context, names []string, interval time.Duration, deadline time.Time) (time.Time, []string) {
	pending := append([]string(nil), names...)
	for {
		var still []string
		for _, n := range pending {
			if ok, _ := p.answers(n); !ok {
				still = append(still, n)
			}
		}
		pending = still
		if len(pending) == 0 {
			return time.Now(), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}, pending
		}
		time.Sleep(interval)
	}
}
