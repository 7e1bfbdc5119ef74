package docker

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// consumer applies what a Source reports, as the agent would, and checks
// that the reports make sense: a first call with everything, then
// differences that never remove what was not there.
type consumer struct {
	t       *testing.T
	mu      sync.Mutex
	calls   int
	set     map[string]source.Local
	addedAt map[string]time.Time // when the key last appeared
	goneAt  map[string]time.Time // when the key last went
	updates map[string]int       // how many times the key was in a report's set
	removes map[string]int       // how many times the key was removed
	bad     []string
	changed chan struct{}
}

func newConsumer(t *testing.T) *consumer {
	return &consumer{t: t, set: map[string]source.Local{}, addedAt: map[string]time.Time{}, goneAt: map[string]time.Time{},
		updates: map[string]int{}, removes: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (c *consumer) onChange(set []source.Local, removed []string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == 0 && len(removed) > 0 {
		c.bad = append(c.bad, fmt.Sprintf("first call removes %v", removed))
	}
	if c.calls > 0 && len(set) == 0 && len(removed) == 0 {
		c.bad = append(c.bad, "an empty report after the first")
	}
	c.calls++
	seen := map[string]bool{}
	for _, k := range removed {
		if _, ok := c.set[k]; !ok {
			c.bad = append(c.bad, "removed "+k+", which was not there")
		}
		delete(c.set, k)
		c.goneAt[k] = now
		c.removes[k]++
		seen[k] = true
	}
	for _, l := range set {
		k := l.Key()
		if seen[k] {
			c.bad = append(c.bad, "key "+k+" twice in one report")
		}
		seen[k] = true
		if _, ok := c.set[k]; !ok {
			c.addedAt[k] = now
		}
		c.set[k] = l
		c.updates[k]++
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// keys returns the keys the consumer has, sorted.
func (c *consumer) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (c *consumer) get(k string) (source.Local, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.set[k]
	return l, ok
}

// check fails the test for anything odd the consumer saw.
func (c *consumer) check() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bad {
		c.t.Errorf("source report: %s", b)
	}
	c.bad = nil
}

// waitFor waits until cond holds for the consumer's keys, for at most
// timeout from since, and returns how long after since it held.
func (c *consumer) waitFor(what string, since time.Time, timeout time.Duration, cond func(keys []string) bool) time.Duration {
	c.t.Helper()
	deadline := since.Add(timeout)
	for {
		if cond(c.keys()) {
			return time.Since(since)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			c.t.Fatalf("%s: not within %s; the source reported %v", what, timeout, c.keys())
		}
		select {
		case <-c.changed:
		case <-time.After(min(wait, 50*time.Millisecond)):
		}
	}
}

func has(want ...string) func([]string) bool {
	return func(keys []string) bool {
		for _, w := range want {
			if !slices.Contains(keys, w) {
				return false
			}
		}
		return true
	}
}

func hasNot(unwanted ...string) func([]string) bool {
	return func(keys []string) bool {
		for _, w := range unwanted {
			if slices.Contains(keys, w) {
				return false
			}
		}
		return true
	}
}

func exactly(want ...string) func([]string) bool {
	want = slices.Clone(want)
	slices.Sort(want)
	return func(keys []string) bool { return slices.Equal(keys, want) }
}

// runSource runs a Source for endpoint until the test ends, and waits for
// its first report.
func runSource(t *testing.T, endpoint string, cfg Config) (*Source, *consumer) {
	t.Helper()
	cfg.Endpoint = endpoint
	if !cfg.NodeAddr.IsValid() {
		cfg.NodeAddr = netip.MustParseAddr(nodeAddr)
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	log.SetOutput(testWriter{t})
	cfg.Log = log
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, c.onChange) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = s.Close()
		c.check()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		calls := c.calls
		c.mu.Unlock()
		if calls > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no first report from the source within 10 s: %+v", s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s, c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func published(vipLabel string, port uint16) string {
	return fmt.Sprintf("%s %s:%d", vipLabel, nodeAddr, port)
}

// The reporting deadline the issue sets for one container's change.
const reportWithin = time.Second

func TestDockerContainerLifecycle(t *testing.T) {
	e := sharedEngine(t)
	src, c := runSource(t, "unix://"+e.sock, Config{})
	if got := c.keys(); len(got) != 0 {
		t.Fatalf("first report of an empty engine: %v", got)
	}
	labels := map[string]string{"l4lb.vip.8080": "/dcos-101/app2:10000", "l4lb.framework": "dcos-101", "l4lb.public": "true"}

	// A start's deadline runs from when docker start returned: the engine
	// emits the start event just before it answers. The other deadlines
	// run from the call.
	a := e.create(box{name: "app-a", labels: labels, publish: []string{"8080/tcp"}})
	e.start(a)
	start := time.Now()
	keyA := published("/dcos-101/app2:10000", e.hostPort(a, "8080/tcp"))
	took := c.waitFor("one container published", start, reportWithin, exactly(keyA))
	t.Logf("one container: reported %s after docker start returned", took)

	b := e.create(box{name: "app-b", labels: labels, publish: []string{"8080/tcp"}})
	e.start(b)
	start = time.Now()
	keyB := published("/dcos-101/app2:10000", e.hostPort(b, "8080/tcp"))
	c.waitFor("two containers published", start, reportWithin, exactly(keyA, keyB))

	if name, ok := src.Owner(keyB); !ok || name != "app-b" {
		t.Errorf("Owner(%s) = %q, %v; want app-b", keyB, name, ok)
	}
	err := src.Owned(keyA)
	if err == nil || !strings.Contains(err.Error(), `Docker container "app-a"`) {
		t.Errorf("Owned(%s) = %v; want an error naming app-a", keyA, err)
	}
	if src.Owned("/other:80 10.0.0.1:80") != nil {
		t.Error("a key no container gives is owned")
	}
	bs := src.Backends()
	if len(bs) != 2 || bs[0].Via != ViaPublished || !bs[0].Public || bs[0].Health != "" || bs[0].Framework != "dcos-101" {
		t.Errorf("Backends = %+v", bs)
	}

	start = time.Now()
	timeout := 5
	if _, err := e.cli.ContainerStop(context.Background(), b, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("docker stop withdraws", start, reportWithin, exactly(keyA))

	start = time.Now()
	if _, err := e.cli.ContainerPause(context.Background(), a, client.ContainerPauseOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("docker pause withdraws", start, reportWithin, exactly())
	start = time.Now()
	if _, err := e.cli.ContainerUnpause(context.Background(), a, client.ContainerUnpauseOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("docker unpause publishes again", start, reportWithin, exactly(keyA))

	start = time.Now()
	if _, err := e.cli.ContainerKill(context.Background(), a, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("docker kill withdraws", start, reportWithin, exactly())

	// A signal that does not end the container withdraws nothing.
	e.start(a)
	keyA = published("/dcos-101/app2:10000", e.hostPort(a, "8080/tcp"))
	c.waitFor("docker start publishes again", time.Now(), reportWithin, exactly(keyA))
	if _, err := e.cli.ContainerKill(context.Background(), a, client.ContainerKillOptions{Signal: "SIGWINCH"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := c.keys(); !slices.Equal(got, []string{keyA}) || !e.inspect(a).State.Running {
		t.Errorf("after kill -s WINCH: %v (running %v), want %s kept", got, e.inspect(a).State.Running, keyA)
	}

	start = time.Now()
	if _, err := e.cli.ContainerRemove(context.Background(), a, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("docker rm -f withdraws", start, reportWithin, exactly())
	if st := src.Stats(); !st.Connected || st.Relists != 1 || st.Reconnects != 0 || st.Containers != 0 || st.Backends != 0 || st.Events == 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestDockerHealthcheck(t *testing.T) {
	e := sharedEngine(t)
	src, c := runSource(t, "unix://"+e.sock, Config{})
	check := func(port string) *container.HealthConfig {
		return &container.HealthConfig{Test: []string{"CMD", "/demoapp", "check", "http://127.0.0.1:" + port + "/healthz"},
			Interval: 250 * time.Millisecond, Timeout: 2 * time.Second, Retries: 1}
	}
	ok := e.run(box{name: "hc-ok", labels: map[string]string{"l4lb.vip.8080": "/hc-ok:80"}, publish: []string{"8080/tcp"}, health: check("8080")})
	failing := e.run(box{name: "hc-failing", labels: map[string]string{"l4lb.vip.8080": "/hc-failing:80"}, publish: []string{"8080/tcp"},
		cmd: []string{"serve", "-fail-after", "4s"}, health: check("8080")})
	never := e.run(box{name: "hc-never", labels: map[string]string{"l4lb.vip.8080": "/hc-never:80"}, publish: []string{"8080/tcp"},
		health: &container.HealthConfig{Test: []string{"CMD", "/demoapp", "check", "http://127.0.0.1:9/"}, Interval: 250 * time.Millisecond, Timeout: time.Second, Retries: 3, StartPeriod: 2 * time.Second}})
	own := e.run(box{name: "own-check", labels: map[string]string{"l4lb.vip.8080": "/own:80", "l4lb.check.8080": "http:///healthz"}, publish: []string{"8080/tcp"}})
	keyOK := published("/hc-ok:80", e.hostPort(ok, "8080/tcp"))
	keyFailing := published("/hc-failing:80", e.hostPort(failing, "8080/tcp"))
	keyNever := published("/hc-never:80", e.hostPort(never, "8080/tcp"))
	keyOwn := published("/own:80", e.hostPort(own, "8080/tcp"))
	c.waitFor("four containers published", time.Now(), 5*time.Second, exactly(keyOK, keyFailing, keyNever, keyOwn))

	verdict := func(key string) (vip.Health, string) {
		for _, b := range src.Backends() {
			if b.Key() == key {
				return b.Health, b.DockerHealth
			}
		}
		return "absent", ""
	}
	// Starting: published, but not healthy yet.
	if h, d := verdict(keyNever); h != vip.Unhealthy || d != "starting" {
		t.Errorf("hc-never at first: health %q, docker %q; want unhealthy (starting)", h, d)
	}
	waitHealth := func(key string, want vip.Health, wantDocker string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			h, d := verdict(key)
			if h == want && d == wantDocker {
				if got := src.DockerHealth()[key]; got != want {
					t.Errorf("DockerHealth()[%s] = %q, want %q", key, got, want)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: health %q (docker %q), want %q (%s) within %s", key, h, d, want, wantDocker, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitHealth(keyOK, vip.Healthy, "healthy", 5*time.Second)
	waitHealth(keyFailing, vip.Healthy, "healthy", 5*time.Second)
	waitHealth(keyFailing, vip.Unhealthy, "unhealthy", 10*time.Second)
	waitHealth(keyNever, vip.Unhealthy, "unhealthy", 10*time.Second)

	// A health change is reported as a change of the backend.
	c.mu.Lock()
	updates := c.updates[keyFailing]
	c.mu.Unlock()
	if updates < 3 {
		t.Errorf("hc-failing was reported %d times; want at least 3 (starting, healthy, unhealthy)", updates)
	}
	// Without a HEALTHCHECK, l4lb's own check from the label is carried.
	if _, in := src.DockerHealth()[keyOwn]; in {
		t.Error("a container without HEALTHCHECK has a Docker verdict")
	}
	l, _ := c.get(keyOwn)
	if l.Check.Kind != health.HTTP || l.Check.Path != "/healthz" {
		t.Errorf("own-check's check = %+v, want http:///healthz", l.Check)
	}
	if tg, ok := l.HealthTarget(); !ok || tg.Addr.Port() != e.hostPort(own, "8080/tcp") {
		t.Errorf("health target %+v, %v", tg, ok)
	}
}

func TestDockerAddressRule(t *testing.T) {
	e := sharedEngine(t)
	// "lan" stands for a macvlan network (this machine's kernel has none;
	// TestPlacePort covers the drivers): named routable in the Config.
	src, c := runSource(t, "unix://"+e.sock, Config{Networks: []string{"lan"}})
	e.run(box{name: "on-host", net: "host", labels: map[string]string{"l4lb.vip.9101": "/host:80"}, cmd: []string{"serve", "-listen", ":9101"}})
	mac := e.run(box{name: "on-lan", net: "lan", labels: map[string]string{"l4lb.vip.8080": "/mac:80"}})
	named := e.run(box{name: "on-app", net: "app", labels: map[string]string{"l4lb.vip.8080": "/named:80", "l4lb.network": "app"}})
	udp := e.run(box{name: "udp", labels: map[string]string{"l4lb.vip.53/udp": "/dns:53"}, publish: []string{"53/udp"}})
	hidden := e.run(box{name: "hidden", labels: map[string]string{"l4lb.vip.8080": "/hidden:80"}})
	e.run(box{name: "bad-labels", labels: map[string]string{"l4lb.vip.8080": "/x", "l4lb.wieght": "2"}, publish: []string{"8080/tcp"}})
	e.run(box{name: "not-ours", labels: map[string]string{"com.example": "1"}, publish: []string{"8080/tcp"}})

	macIP := e.inspect(mac).NetworkSettings.Networks["lan"].IPAddress
	appIP := e.inspect(named).NetworkSettings.Networks["app"].IPAddress
	want := []string{
		published("/host:80", 9101),
		"/mac:80 " + netip.AddrPortFrom(macIP, 8080).String(),
		"/named:80 " + netip.AddrPortFrom(appIP, 8080).String(),
		fmt.Sprintf("udp:///dns:53 %s:%d", nodeAddr, e.hostPort(udp, "53/udp")),
	}
	c.waitFor("host, routable network, named network and UDP published", time.Now(), 5*time.Second, exactly(want...))
	via := map[string]string{}
	for _, b := range src.Backends() {
		via[b.Container] = b.Via + " " + b.Network
	}
	if fmt.Sprint(via) != "map[on-app:network app on-host:host  on-lan:network lan udp:published ]" {
		t.Errorf("via = %v", via)
	}
	if l, _ := c.get(want[3]); l.VIP.Protocol != vip.UDP {
		t.Errorf("UDP backend %+v", l)
	}

	st := src.Stats()
	if r := st.Problems["hidden"]; !strings.Contains(r, "other nodes cannot reach it") || !strings.Contains(r, "port 8080/tcp is not published") {
		t.Errorf("hidden's problem = %q", r)
	}
	if r := st.Problems["bad-labels"]; !strings.Contains(r, `label l4lb.vip.8080: vip "/x"`) || !strings.Contains(r, "label l4lb.wieght: unknown") {
		t.Errorf("bad-labels' problem = %q", r)
	}
	if _, in := st.Problems["not-ours"]; in || len(st.Problems) != 2 || st.Unroutable != 1 || st.BadLabels != 1 {
		t.Errorf("Stats = %+v", st)
	}

	// Connected to a network other nodes reach, the hidden container
	// becomes reachable: the network event publishes it.
	start := time.Now()
	if _, err := e.cli.NetworkConnect(context.Background(), "lan", client.NetworkConnectOptions{Container: hidden}); err != nil {
		t.Fatal(err)
	}
	hiddenIP := e.inspect(hidden).NetworkSettings.Networks["lan"].IPAddress
	keyHidden := "/hidden:80 " + netip.AddrPortFrom(hiddenIP, 8080).String()
	c.waitFor("network connect publishes", start, reportWithin, has(keyHidden))
	if _, in := src.Stats().Problems["hidden"]; in {
		t.Error("hidden still listed as a problem")
	}
	start = time.Now()
	if _, err := e.cli.NetworkDisconnect(context.Background(), "lan", client.NetworkDisconnectOptions{Container: hidden}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("network disconnect withdraws", start, reportWithin, hasNot(keyHidden))
	if st := src.Stats(); st.Unroutable != 2 {
		t.Errorf("unroutable count %d after the container became unreachable again, want 2", st.Unroutable)
	}
}

// TestDockerKillHold: a container that survives the SIGTERM it was sent
// is withdrawn at once, and published again once KillHold is over.
func TestDockerKillHold(t *testing.T) {
	e := sharedEngine(t)
	_, c := runSource(t, "unix://"+e.sock, Config{KillHold: time.Second})
	id := e.run(box{name: "stubborn", labels: map[string]string{"l4lb.vip.8080": "/stubborn:80"}, publish: []string{"8080/tcp"}, cmd: []string{"serve", "-ignore-term"}})
	key := published("/stubborn:80", e.hostPort(id, "8080/tcp"))
	c.waitFor("published", time.Now(), 5*time.Second, exactly(key))
	start := time.Now()
	if _, err := e.cli.ContainerKill(context.Background(), id, client.ContainerKillOptions{Signal: "SIGTERM"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("docker kill -s TERM withdraws", start, reportWithin, exactly())
	took := c.waitFor("published again after KillHold", start, 5*time.Second, exactly(key))
	if took < 900*time.Millisecond || !e.inspect(id).State.Running {
		t.Errorf("published again %s after the signal (running %v); want after KillHold (1 s), while it runs", took, e.inspect(id).State.Running)
	}
}

// TestDockerSourceRestart: a new Source (an agent restart) lists what runs
// now: nothing duplicated, nothing lost.
func TestDockerSourceRestart(t *testing.T) {
	e := sharedEngine(t)
	var ids []string
	var keys []string
	for i := range 4 {
		id := e.run(box{name: fmt.Sprintf("r%d", i), labels: map[string]string{"l4lb.vip.8080": "/r:80,/r2:80"}, publish: []string{"8080/tcp"}})
		ids = append(ids, id)
		p := e.hostPort(id, "8080/tcp")
		keys = append(keys, published("/r:80", p), published("/r2:80", p))
	}
	_, c1 := runSource(t, "unix://"+e.sock, Config{})
	c1.waitFor("first source", time.Now(), 5*time.Second, exactly(keys...))

	// Before the second source (the restarted agent's) starts, one
	// container stops and two start.
	if _, err := e.cli.ContainerKill(context.Background(), ids[0], client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys[2:])
	for i := 4; i < 6; i++ {
		id := e.run(box{name: fmt.Sprintf("r%d", i), labels: map[string]string{"l4lb.vip.8080": "/r:80,/r2:80"}, publish: []string{"8080/tcp"}})
		p := e.hostPort(id, "8080/tcp")
		want = append(want, published("/r:80", p), published("/r2:80", p))
	}
	second, c2 := runSource(t, "unix://"+e.sock, Config{})
	c2.mu.Lock()
	calls := c2.calls
	c2.mu.Unlock()
	got := c2.keys()
	slices.Sort(want)
	if calls != 1 || !slices.Equal(got, want) {
		t.Errorf("restarted source's first report (%d calls): %v\nwant %v", calls, got, want)
	}
	if cur := second.Current(); len(cur) != len(want) {
		t.Errorf("Current() has %d backends, want %d", len(cur), len(want))
	}
	// And it follows from there.
	c1.waitFor("first source still following", time.Now(), 5*time.Second, exactly(want...))
}

// TestDockerEngineUnreachable: the engine's socket goes away without the
// engine stopping. A source keeps its backends for the grace period, one
// with a short grace withdraws them; both catch up on reconnection.
func TestDockerEngineUnreachable(t *testing.T) {
	e := sharedEngine(t)
	keep := e.run(box{name: "u-keep", labels: map[string]string{"l4lb.vip.8080": "/u:80"}, publish: []string{"8080/tcp"}})
	keyKeep := published("/u:80", e.hostPort(keep, "8080/tcp"))
	p1, p2 := newProxy(t, e.sock), newProxy(t, e.sock)
	long, c1 := runSource(t, "unix://"+p1.Path, Config{Grace: time.Minute, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	short, c2 := runSource(t, "unix://"+p2.Path, Config{Grace: time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	c1.waitFor("long-grace source", time.Now(), 5*time.Second, exactly(keyKeep))
	c2.waitFor("short-grace source", time.Now(), 5*time.Second, exactly(keyKeep))

	p1.Cut()
	p2.Cut()
	cutAt := time.Now()
	eventsBefore := long.Stats().Events
	// While they look away: u-keep stops, u-new starts.
	if _, err := e.cli.ContainerKill(context.Background(), keep, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	fresh := e.run(box{name: "u-new", labels: map[string]string{"l4lb.vip.8080": "/u:80"}, publish: []string{"8080/tcp"}})
	keyNew := published("/u:80", e.hostPort(fresh, "8080/tcp"))

	c2.waitFor("short grace withdraws", cutAt, 5*time.Second, exactly())
	if st := short.Stats(); st.Connected || !st.Withdrawn || st.LastError == "" {
		t.Errorf("short-grace Stats = %+v", st)
	}
	if time.Since(cutAt) < 2*time.Second {
		time.Sleep(2*time.Second - time.Since(cutAt))
	}
	if got := c1.keys(); !slices.Equal(got, []string{keyKeep}) {
		t.Errorf("long-grace source during the outage: %v, want its backends kept", got)
	}
	if st := long.Stats(); st.Connected || st.Withdrawn {
		t.Errorf("long-grace Stats during the outage = %+v", st)
	}

	p1.Restore()
	p2.Restore()
	back := time.Now()
	c1.waitFor("long-grace source catches up", back, 3*time.Second, exactly(keyNew))
	c2.waitFor("short-grace source catches up", back, 3*time.Second, exactly(keyNew))
	for _, s := range []*Source{long, short} {
		if st := s.Stats(); !st.Connected || st.Reconnects != 1 || st.Relists != 2 {
			t.Errorf("Stats after reconnection = %+v", st)
		}
	}
	// The events of the outage (kill and die of u-keep, create, connect
	// and start of u-new) are read on reconnection: the stream resumed
	// from the last event read, not from now.
	for deadline := time.Now().Add(3 * time.Second); long.Stats().Events < eventsBefore+4; {
		if time.Now().After(deadline) {
			t.Errorf("events read after reconnection: %d, want the outage's (at least 4) replayed", long.Stats().Events-eventsBefore)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Following again.
	start := time.Now()
	if _, err := e.cli.ContainerKill(context.Background(), fresh, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	c1.waitFor("events after reconnection", start, reportWithin, exactly())
	c2.waitFor("events after reconnection", start, reportWithin, exactly())
}

// TestDockerEngineRestart: the engine restarts with --live-restore, so
// its containers run on. The source keeps the backends while the engine is
// away, then lists again: the container that kept running is never
// withdrawn, the one whose process ended meanwhile is; events are followed
// again.
func TestDockerEngineRestart(t *testing.T) {
	e := startEngine(t, "", "--live-restore")
	t.Cleanup(e.remove)
	e.importDemo()
	stays := e.run(box{name: "stays", labels: map[string]string{"l4lb.vip.8080": "/stays:80"}, publish: []string{"8080/tcp"}})
	dies := e.run(box{name: "dies", labels: map[string]string{"l4lb.vip.8080": "/dies:80"}, publish: []string{"8080/tcp"}})
	keyStays, keyDies := published("/stays:80", e.hostPort(stays, "8080/tcp")), published("/dies:80", e.hostPort(dies, "8080/tcp"))
	src, c := runSource(t, "unix://"+e.sock, Config{Grace: time.Minute, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.waitFor("both published", time.Now(), 5*time.Second, exactly(keyStays, keyDies))
	pid := e.inspect(dies).State.Pid

	dir := e.dir
	e.stop()
	for deadline := time.Now().Add(5 * time.Second); src.Stats().Connected; {
		if time.Now().After(deadline) {
			t.Fatal("the source did not notice the engine stopping")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// While the engine is away, one container's process ends.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the process of container dies (pid %d): %v", pid, err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := c.keys(); !slices.Equal(got, []string{keyDies, keyStays}) {
		t.Errorf("while the engine is away: %v, want both kept", got)
	}

	e2 := startEngine(t, dir, "--live-restore")
	t.Cleanup(e2.remove)
	back := time.Now()
	took := c.waitFor("relisted after the engine's restart", back, 5*time.Second, exactly(keyStays))
	t.Logf("engine answering again -> relisted in %s", took)
	c.mu.Lock()
	if n := c.removes[keyStays]; n != 0 {
		t.Errorf("the container that ran on was withdrawn %d times", n)
	}
	c.mu.Unlock()
	if st := src.Stats(); !st.Connected || st.Reconnects != 1 || st.Withdrawn {
		t.Errorf("Stats = %+v", st)
	}
	start := time.Now()
	id := e2.run(box{name: "after", labels: map[string]string{"l4lb.vip.8080": "/after:80"}, publish: []string{"8080/tcp"}})
	c.waitFor("events followed after the restart", start, reportWithin, has(published("/after:80", e2.hostPort(id, "8080/tcp"))))
}

// TestDockerBurst: 200 containers started in a burst, then killed in a
// burst: nothing lost, converged within 5 s of the last call. Logs the
// time from each engine event to the source's report.
func TestDockerBurst(t *testing.T) {
	const n = 200
	e := sharedEngine(t)
	_, c := runSource(t, "unix://"+e.sock, Config{})

	clock := newEventClock(t, e)
	ids := make([]string, n)
	parallel(n, func(i int) {
		ids[i] = e.create(box{name: fmt.Sprintf("burst-%03d", i), net: "app", labels: map[string]string{"l4lb.vip.8080": "/burst:80", "l4lb.network": "app"}})
	})
	began := time.Now()
	parallel(n, func(i int) { e.start(ids[i]) })
	last := time.Now()
	t.Logf("started %d containers in %s", n, last.Sub(began).Round(time.Millisecond))
	keys := make([]string, n)
	keyOf := map[string]string{}
	parallel(n, func(i int) {
		keys[i] = "/burst:80 " + netip.AddrPortFrom(e.inspect(ids[i]).NetworkSettings.Networks["app"].IPAddress, 8080).String()
	})
	for i, k := range keys {
		keyOf[ids[i]] = k
	}
	took := c.waitFor("200 containers published", last, 5*time.Second, exactly(keys...))
	t.Logf("all %d published %s after the last start returned", n, took.Round(time.Millisecond))
	startLat := clock.latencies(c, keyOf, events.ActionStart)
	c.mu.Lock()
	if len(c.removes) != 0 {
		t.Errorf("withdrawals during the start burst: %v", c.removes)
	}
	c.mu.Unlock()

	began = time.Now()
	parallel(n, func(i int) {
		if _, err := e.cli.ContainerKill(context.Background(), ids[i], client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
			t.Errorf("kill %s: %v", ids[i], err)
		}
	})
	last = time.Now()
	took = c.waitFor("200 containers withdrawn", last, 5*time.Second, exactly())
	t.Logf("killed %d containers in %s; all withdrawn %s after the last kill returned", n, last.Sub(began).Round(time.Millisecond), took.Round(time.Millisecond))
	killLat := clock.latencies(c, keyOf, events.ActionKill)
	c.mu.Lock()
	for _, k := range keyOf {
		if c.removes[k] != 1 {
			t.Errorf("%s withdrawn %d times", k, c.removes[k])
		}
	}
	c.mu.Unlock()
	if len(startLat) < n*9/10 || len(killLat) < n*9/10 {
		t.Errorf("event times seen for %d starts and %d kills of %d", len(startLat), len(killLat), n)
	}
	t.Logf("FIGURE start event -> reported: p50 %s, p99 %s, max %s (%d containers)", pct(startLat, 50), pct(startLat, 99), pct(startLat, 100), len(startLat))
	t.Logf("FIGURE kill event -> withdrawn: p50 %s, p99 %s, max %s (%d containers)", pct(killLat, 50), pct(killLat, 99), pct(killLat, 100), len(killLat))
	if b, err := readLoad(); err == nil {
		t.Logf("FIGURE load average: %s", b)
	}
}

// TestDockerLatencyOneAtATime: 20 containers started, then killed, one at
// a time: the time from each engine event to the source's report on a
// quiet engine.
func TestDockerLatencyOneAtATime(t *testing.T) {
	const n = 20
	e := sharedEngine(t)
	_, c := runSource(t, "unix://"+e.sock, Config{})
	clock := newEventClock(t, e)
	keyOf := map[string]string{}
	var ids []string
	for i := range n {
		id := e.run(box{name: fmt.Sprintf("one-%02d", i), net: "app", labels: map[string]string{"l4lb.vip.8080": "/one:80", "l4lb.network": "app"}})
		k := "/one:80 " + netip.AddrPortFrom(e.inspect(id).NetworkSettings.Networks["app"].IPAddress, 8080).String()
		c.waitFor("published", time.Now(), reportWithin, has(k))
		keyOf[id] = k
		ids = append(ids, id)
	}
	for _, id := range ids {
		if _, err := e.cli.ContainerKill(context.Background(), id, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
			t.Fatal(err)
		}
		c.waitFor("withdrawn", time.Now(), reportWithin, hasNot(keyOf[id]))
	}
	startLat := clock.latencies(c, keyOf, events.ActionStart)
	killLat := clock.latencies(c, keyOf, events.ActionKill)
	if len(startLat) != n || len(killLat) != n {
		t.Errorf("event times seen for %d starts and %d kills of %d", len(startLat), len(killLat), n)
	}
	t.Logf("FIGURE one at a time: start event -> reported: p50 %s, p99 %s; kill event -> withdrawn: p50 %s, p99 %s (%d containers)",
		pct(startLat, 50), pct(startLat, 99), pct(killLat, 50), pct(killLat, 99), n)
	if b, err := readLoad(); err == nil {
		t.Logf("FIGURE load average: %s", b)
	}
}

// eventClock records when the engine says each container started and was
// first sent a signal, from a stream of its own.
type eventClock struct {
	mu    sync.Mutex
	start map[string]time.Time
	kill  map[string]time.Time
}

func newEventClock(t *testing.T, e *engine) *eventClock {
	ec := &eventClock{start: map[string]time.Time{}, kill: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream := e.cli.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "container").Add("event", "start", "kill")})
	go func() {
		for {
			select {
			case m := <-stream.Messages:
				ec.mu.Lock()
				switch m.Action {
				case events.ActionStart:
					ec.start[m.Actor.ID] = eventTime(m)
				case events.ActionKill:
					if _, seen := ec.kill[m.Actor.ID]; !seen {
						ec.kill[m.Actor.ID] = eventTime(m)
					}
				}
				ec.mu.Unlock()
			case <-stream.Err:
				return
			}
		}
	}()
	return ec
}

// latencies returns, for each container whose event was seen, the time
// from it to the consumer's report (added for start, removed for kill).
func (ec *eventClock) latencies(c *consumer, keyOf map[string]string, action events.Action) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	ec.mu.Lock()
	defer ec.mu.Unlock()
	var out []time.Duration
	for id, k := range keyOf {
		if action == events.ActionStart {
			if at, ok := ec.start[id]; ok {
				out = append(out, c.addedAt[k].Sub(at))
			}
		} else if at, ok := ec.kill[id]; ok {
			out = append(out, c.goneAt[k].Sub(at))
		}
	}
	return out
}

// parallel runs fn(0..n-1), eight at a time.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p+99)/100 - 1
	return s[max(0, min(i, len(s)-1))].Round(100 * time.Microsecond)
}

func readLoad() (string, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "", err
	}
	return strings.Join(strings.Fields(string(b))[:3], " "), nil
}
