package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// event is one call of OnChange.
type event struct {
	key     string
	healthy bool
	reason  string
}

// recorder collects OnChange calls and lets a test wait for them.
type recorder struct {
	mu     sync.Mutex
	events []event
	added  chan struct{}
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 1000)} }

func (r *recorder) onChange(key string, healthy bool, reason string) {
	r.mu.Lock()
	r.events = append(r.events, event{key, healthy, reason})
	r.mu.Unlock()
	r.added <- struct{}{}
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// next waits for the next event for key after the first skip ones.
func (r *recorder) waitFor(t *testing.T, key string, healthy bool, within time.Duration) event {
	t.Helper()
	deadline := time.After(within)
	for {
		for _, e := range r.snapshot() {
			if e.key == key && e.healthy == healthy {
				return e
			}
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("no transition of %q to healthy=%v within %s; saw %+v", key, healthy, within, r.snapshot())
		}
	}
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newChecker(t *testing.T, rec *recorder) *Checker {
	t.Helper()
	c := New(Config{OnChange: rec.onChange, Log: quietLog()})
	t.Cleanup(c.Close)
	return c
}

// listen opens a TCP listener on a 127.0.0.0/8 address.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	return l
}

func addrPort(t *testing.T, l net.Listener) netip.AddrPort {
	t.Helper()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// acceptAndClose accepts connections until l is closed.
func acceptAndClose(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		_ = conn.Close()
	}
}

// fast is a target timing that keeps tests short.
func fast(t Target) Target {
	t.Interval = 10 * time.Millisecond
	t.Timeout = 200 * time.Millisecond
	return t
}

func TestTCPCheckUpDownUp(t *testing.T) {
	rec := newRecorder()
	c := newChecker(t, rec)
	l := listen(t, "127.0.0.21:0")
	go acceptAndClose(l)
	addr := addrPort(t, l)

	if err := c.Set([]Target{fast(Target{Key: "b", Addr: addr, Kind: TCP, Rise: 2, Fall: 2})}); err != nil {
		t.Fatal(err)
	}
	up := rec.waitFor(t, "b", true, 2*time.Second)
	if !strings.Contains(up.reason, "first check") {
		t.Errorf("first transition reason = %q, want it to say it is the first check", up.reason)
	}

	_ = l.Close()
	down := rec.waitFor(t, "b", false, 2*time.Second)
	if !strings.Contains(down.reason, "2 checks failed") || !strings.Contains(down.reason, "refused") {
		t.Errorf("down reason = %q, want 2 failed checks and the refusal", down.reason)
	}
	st := c.Status()["b"]
	if st.Healthy || !st.Checked || st.LastError == "" {
		t.Errorf("status after down = %+v, want checked, unhealthy, with last error", st)
	}

	l2 := listen(t, addr.String())
	defer l2.Close()
	go acceptAndClose(l2)
	waitEvents(t, rec, 3, 2*time.Second)
	ev := rec.snapshot()
	if got := ev[2]; got.key != "b" || !got.healthy || !strings.Contains(got.reason, "2 checks passed") {
		t.Errorf("third transition = %+v, want healthy after 2 passed checks", got)
	}
}

func waitEvents(t *testing.T, rec *recorder, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for len(rec.snapshot()) < n {
		select {
		case <-rec.added:
		case <-deadline:
			t.Fatalf("want %d transitions within %s, saw %+v", n, within, rec.snapshot())
		}
	}
}

// httpBackend is an HTTP server on 127.0.0.0/8 whose answer a test controls.
type httpBackend struct {
	addr   netip.AddrPort
	status atomic.Int32
	delay  atomic.Int64 // nanoseconds before answering
	paths  chan string
}

func newHTTPBackend(t *testing.T, ip string) *httpBackend {
	t.Helper()
	b := &httpBackend{paths: make(chan string, 10000)}
	b.status.Store(200)
	l := listen(t, ip+":0")
	b.addr = addrPort(t, l)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case b.paths <- r.URL.Path:
		default:
		}
		if d := time.Duration(b.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if s := int(b.status.Load()); s >= 300 && s < 400 {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(int(b.status.Load()))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

func TestHTTPCheck(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		delay   time.Duration
		healthy bool
		reason  string // part of the first transition's reason
	}{
		{name: "200 passes", status: 200, healthy: true, reason: "status 200"},
		{name: "204 passes", status: 204, healthy: true, reason: "status 204"},
		{name: "500 fails", status: 500, healthy: false, reason: "status 500"},
		{name: "404 fails", status: 404, healthy: false, reason: "status 404"},
		{name: "redirect is not followed and fails", status: 302, healthy: false, reason: "status 302"},
		{name: "slow answer times out", status: 200, delay: time.Second, healthy: false, reason: "no answer within 50ms"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newHTTPBackend(t, fmt.Sprintf("127.0.1.%d", i+1))
			b.status.Store(int32(tc.status))
			b.delay.Store(int64(tc.delay))
			rec := newRecorder()
			c := newChecker(t, rec)
			target := fast(Target{Key: "app", Addr: b.addr, Kind: HTTP, Path: "/healthz"})
			target.Timeout = 50 * time.Millisecond
			if err := c.Set([]Target{target}); err != nil {
				t.Fatal(err)
			}
			e := rec.waitFor(t, "app", tc.healthy, 2*time.Second)
			if !strings.Contains(e.reason, tc.reason) {
				t.Errorf("reason = %q, want it to contain %q", e.reason, tc.reason)
			}
			if p := <-b.paths; p != "/healthz" {
				t.Errorf("check asked for %q, want /healthz", p)
			}
			if got := rec.snapshot(); len(got) != 1 {
				t.Errorf("transitions = %+v, want exactly the first result", got)
			}
		})
	}
}

func TestHTTPCheckRecovers(t *testing.T) {
	b := newHTTPBackend(t, "127.0.2.1")
	b.status.Store(500)
	rec := newRecorder()
	c := newChecker(t, rec)
	if err := c.Set([]Target{fast(Target{Key: "app", Addr: b.addr, Kind: HTTP, Rise: 3, Fall: 2})}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "app", false, 2*time.Second)
	b.status.Store(200)
	e := rec.waitFor(t, "app", true, 2*time.Second)
	if !strings.Contains(e.reason, "3 checks passed") {
		t.Errorf("recovery reason = %q, want 3 passed checks (rise 3)", e.reason)
	}
	if p := <-b.paths; p != "/" {
		t.Errorf("default path = %q, want /", p)
	}
}

// script is a probe whose results a test gives in order; once they run out
// it blocks until the check is cancelled.
type script struct {
	mu      sync.Mutex
	results map[string][]bool
	done    chan string // gets the key when a key's script has run out
}

func (s *script) probe(ctx context.Context, t Target) (string, error) {
	s.mu.Lock()
	rs := s.results[t.Key]
	if len(rs) == 0 {
		s.mu.Unlock()
		select {
		case s.done <- t.Key:
		default:
		}
		<-ctx.Done()
		return "", ctx.Err()
	}
	ok := rs[0]
	s.results[t.Key] = rs[1:]
	s.mu.Unlock()
	if ok {
		return "pass", nil
	}
	return "", errors.New("fail")
}

// model is the rule the Checker promises: the first result settles the state,
// then Fall failures in a row make a healthy target unhealthy and Rise
// successes in a row make an unhealthy one healthy.
func model(results []bool, rise, fall int) []bool {
	var out []bool
	checked, healthy := false, false
	run := 0
	for i, ok := range results {
		if i > 0 && ok == results[i-1] {
			run++
		} else {
			run = 1
		}
		switch {
		case !checked:
			checked, healthy = true, ok
			out = append(out, ok)
		case ok && !healthy && run >= rise, !ok && healthy && run >= fall:
			healthy = ok
			out = append(out, ok)
		}
	}
	return out
}

func runScript(t *testing.T, results []bool, rise, fall int) []bool {
	t.Helper()
	rec := newRecorder()
	c := New(Config{OnChange: rec.onChange, Log: quietLog()})
	defer c.Close()
	s := &script{results: map[string][]bool{"k": results}, done: make(chan string, 1)}
	c.probe = s.probe
	target := Target{Key: "k", Addr: netip.MustParseAddrPort("127.0.0.1:1"), Kind: TCP, Interval: time.Nanosecond, Rise: rise, Fall: fall}
	if err := c.Set([]Target{target}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("script did not run out")
	}
	want := len(model(results, rise, fall))
	waitEvents(t, rec, want, 2*time.Second)
	c.Close() // no more transitions can come
	var got []bool
	for _, e := range rec.snapshot() {
		got = append(got, e.healthy)
	}
	return got
}

func TestRiseFallThresholds(t *testing.T) {
	P, F := true, false
	cases := []struct {
		name       string
		rise, fall int
		results    []bool
		want       []bool
	}{
		{"first pass is healthy at once", 3, 3, []bool{P}, []bool{P}},
		{"first fail is unhealthy at once", 3, 3, []bool{F}, []bool{F}},
		{"one failure short of fall keeps healthy", 2, 3, []bool{P, F, F, P, F, F}, []bool{P}},
		{"fall failures in a row", 2, 3, []bool{P, F, F, F}, []bool{P, F}},
		{"rise successes in a row", 3, 1, []bool{F, P, P, F, P, P, P}, []bool{F, P}},
		{"rise and fall of 1 follow every change", 1, 1, []bool{P, F, P, F}, []bool{P, F, P, F}},
		{"no check results, no transition", 2, 2, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if m := model(tc.results, tc.rise, tc.fall); fmt.Sprint(m) != fmt.Sprint(tc.want) {
				t.Fatalf("the test's model gives %v, the case wants %v", m, tc.want)
			}
			if got := runScript(t, tc.results, tc.rise, tc.fall); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("transitions = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRiseFallProperty checks the thresholds rule on random result sequences.
func TestRiseFallProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 40 {
		rise, fall := 1+r.IntN(4), 1+r.IntN(4)
		results := make([]bool, r.IntN(40))
		for j := range results {
			results[j] = r.IntN(3) > 0
		}
		got := runScript(t, results, rise, fall)
		if want := model(results, rise, fall); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("case %d rise %d fall %d results %v: transitions %v, want %v", i, rise, fall, results, got, want)
		}
	}
}

func TestUncheckedTargetIsNotHealthy(t *testing.T) {
	c := New(Config{Log: quietLog()})
	defer c.Close()
	s := &script{results: map[string][]bool{}, done: make(chan string, 1)}
	c.probe = s.probe
	if err := c.Set([]Target{{Key: "k", Addr: netip.MustParseAddrPort("127.0.0.1:1"), Kind: TCP}}); err != nil {
		t.Fatal(err)
	}
	<-s.done // the first check is in progress and will not end
	st, ok := c.Status()["k"]
	if !ok || st.Checked || st.Healthy {
		t.Errorf("status before the first result = %+v (present %v), want present, unchecked, not healthy", st, ok)
	}
}

func TestSetRemovesAndChangesTargets(t *testing.T) {
	b1 := newHTTPBackend(t, "127.0.3.1")
	b2 := newHTTPBackend(t, "127.0.3.2")
	rec := newRecorder()
	c := newChecker(t, rec)
	t1 := fast(Target{Key: "one", Addr: b1.addr, Kind: HTTP, Path: "/a"})
	t2 := fast(Target{Key: "two", Addr: b2.addr, Kind: HTTP})
	if err := c.Set([]Target{t1, t2}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "one", true, 2*time.Second)
	rec.waitFor(t, "two", true, 2*time.Second)

	// Remove "two" and change "one"'s path: "one" keeps its health.
	t1.Path = "/b"
	if err := c.Set([]Target{t1}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Status()["two"]; ok {
		t.Error("removed target still in Status")
	}
	if st := c.Status()["one"]; !st.Healthy {
		t.Errorf("changed target lost its health: %+v", st)
	}
	// "two" gets no more checks once Set has returned.
	drain(b2.paths)
	time.Sleep(50 * time.Millisecond) // five intervals
	if n := len(b2.paths); n != 0 {
		t.Errorf("removed target was checked %d more times", n)
	}
	// "one" now asks for the new path.
	drain(b1.paths)
	if p := <-b1.paths; p != "/b" {
		t.Errorf("changed target asks for %q, want /b", p)
	}
	if got := rec.snapshot(); len(got) != 2 {
		t.Errorf("transitions = %+v, want none from the change", got)
	}
}

func drain(ch chan string) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestSetRejectsInvalidTargetsAndKeepsOthers(t *testing.T) {
	c := New(Config{Log: quietLog()})
	defer c.Close()
	s := &script{results: map[string][]bool{}, done: make(chan string, 10)}
	c.probe = s.probe
	addr := netip.MustParseAddrPort("127.0.0.1:9")
	err := c.Set([]Target{
		{Key: "good", Addr: addr, Kind: TCP},
		{Key: "", Addr: addr, Kind: TCP},
		{Key: "nokind", Addr: addr},
		{Key: "noport", Addr: netip.AddrPortFrom(addr.Addr(), 0), Kind: TCP},
		{Key: "tcppath", Addr: addr, Kind: TCP, Path: "/x"},
		{Key: "relpath", Addr: addr, Kind: HTTP, Path: "x"},
		{Key: "neg", Addr: addr, Kind: TCP, Fall: -1},
		{Key: "good", Addr: addr, Kind: HTTP},
	})
	if err == nil {
		t.Fatal("Set accepted invalid targets")
	}
	for _, want := range []string{"no key", `"nokind": unknown check kind`, `"noport"`, `"tcppath": a tcp check has no path`, `"relpath": path "x"`, `"neg": negative fall`, `"good": given twice`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	st := c.Status()
	if len(st) != 1 {
		t.Errorf("status has %d targets, want only the good one: %+v", len(st), st)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	rec := newRecorder()
	c := New(Config{OnChange: rec.onChange, Log: quietLog()})
	var targets []Target
	for i := range 20 {
		l := listen(t, fmt.Sprintf("127.0.4.%d:0", i+1))
		go acceptAndClose(l)
		defer l.Close()
		targets = append(targets, fast(Target{Key: fmt.Sprint(i), Addr: addrPort(t, l), Kind: TCP}))
	}
	if err := c.Set(targets); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, rec, 20, 2*time.Second)
	c.Close()
	c.Close() // idempotent
	n := len(rec.snapshot())
	time.Sleep(30 * time.Millisecond)
	if m := len(rec.snapshot()); m != n {
		t.Errorf("%d transitions after Close", m-n)
	}
	if err := c.Set(targets); err == nil {
		t.Error("Set after Close succeeded")
	}
	// The 20 acceptAndClose goroutines are still running; the checker's
	// goroutines (20 loops and the dispatcher) must be gone.
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > before+20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+20 {
		t.Errorf("%d goroutines after Close, want at most %d", g, before+20)
	}
}

func TestStatusTimesComeFromTheClock(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := newRecorder()
	c := New(Config{OnChange: rec.onChange, Log: quietLog(), Now: func() time.Time { return at }})
	defer c.Close()
	s := &script{results: map[string][]bool{"k": {false}}, done: make(chan string, 1)}
	c.probe = s.probe
	if err := c.Set([]Target{{Key: "k", Addr: netip.MustParseAddrPort("127.0.0.1:1"), Kind: TCP}}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "k", false, 2*time.Second)
	st := c.Status()["k"]
	if !st.Since.Equal(at) || !st.LastCheck.Equal(at) || st.LastError != "fail" || st.Failures != 1 {
		t.Errorf("status = %+v, want Since and LastCheck %s, LastError fail, 1 failure", st, at)
	}
}

func BenchmarkTCPCheck(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.31:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go acceptAndClose(l)
	c := New(Config{Log: quietLog()})
	defer c.Close()
	target, _ := Target{Key: "b", Addr: l.Addr().(*net.TCPAddr).AddrPort(), Kind: TCP}.withDefaults()
	for b.Loop() {
		if _, err := c.probeTarget(context.Background(), target); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHTTPCheck(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.32:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	c := New(Config{Log: quietLog()})
	defer c.Close()
	target, _ := Target{Key: "b", Addr: l.Addr().(*net.TCPAddr).AddrPort(), Kind: HTTP, Path: "/healthz"}.withDefaults()
	for b.Loop() {
		if _, err := c.probeTarget(context.Background(), target); err != nil {
			b.Fatal(err)
		}
	}
}

// counting is a probe that records how many checks each key started and
// gives each key's results from a script (then blocks until cancelled).
type counting struct {
	mu      sync.Mutex
	starts  map[string]int
	results map[string][]bool
}

func (p *counting) probe(ctx context.Context, t Target) (string, error) {
	p.mu.Lock()
	p.starts[t.Key]++
	rs := p.results[t.Key]
	if len(rs) == 0 {
		p.mu.Unlock()
		<-ctx.Done()
		return "", ctx.Err()
	}
	p.results[t.Key] = rs[1:]
	p.mu.Unlock()
	if rs[0] {
		return "pass", nil
	}
	return "", errors.New("fail")
}

func (p *counting) startsOf(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts[key]
}

func scripted(t *testing.T, results map[string][]bool) (*Checker, *counting) {
	t.Helper()
	c := New(Config{Log: quietLog()})
	t.Cleanup(c.Close)
	p := &counting{starts: map[string]int{}, results: results}
	c.probe = p.probe
	return c, p
}

func target(key string) Target {
	return Target{Key: key, Addr: netip.MustParseAddrPort("127.0.0.1:1"), Kind: TCP, Interval: time.Millisecond, Rise: 1, Fall: 1}
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within 2.5 s", what)
}

func TestUpdateByDifference(t *testing.T) {
	c, p := scripted(t, map[string][]bool{"a": {true}, "b": {false}})
	if err := c.Update([]Target{target("a"), target("b")}, nil); err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "both checked", func() bool {
		_, ca := c.Health("a")
		_, cb := c.Health("b")
		return ca && cb
	})
	if h, _ := c.Health("a"); !h {
		t.Error("a is not healthy after a passing check")
	}
	if h, checked := c.Health("b"); h || !checked {
		t.Errorf("b: healthy %v checked %v, want unhealthy and checked", h, checked)
	}
	startsA := p.startsOf("a")
	// Re-adding an unchanged target does nothing; removing one leaves the
	// other alone; a change keeps health.
	if err := c.Update([]Target{target("a")}, []string{"b", "never"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Status()["b"]; ok || c.Len() != 1 {
		t.Errorf("b still there after its removal: %v, Len %d", c.Status(), c.Len())
	}
	time.Sleep(20 * time.Millisecond)
	if got := p.startsOf("a"); got != startsA {
		t.Errorf("an unchanged target was restarted (%d checks, then %d)", startsA, got)
	}
	changed := target("a")
	changed.Interval = 2 * time.Millisecond
	if err := c.Update([]Target{changed}, nil); err != nil {
		t.Fatal(err)
	}
	if h, checked := c.Health("a"); !h || !checked {
		t.Errorf("a changed check lost its health: %v %v", h, checked)
	}
	// A key in both lists starts afresh.
	if err := c.Update([]Target{changed}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, checked := c.Health("a"); checked {
		t.Error("a re-added target kept its old health")
	}
	// Invalid targets are named; the rest applies.
	err := c.Update([]Target{{Key: "bad"}, target("c"), target("c")}, nil)
	if err == nil || !strings.Contains(err.Error(), `"bad"`) || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("Update error = %v, want the invalid and the duplicate target named", err)
	}
	if _, ok := c.Status()["c"]; !ok {
		t.Error("the valid target of a partly invalid Update was not added")
	}
}

// TestUpdateEqualsSet: after any sequence of Updates, the checker runs
// exactly the targets a Set of the same final set would run.
func TestUpdateEqualsSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	c, _ := scripted(t, map[string][]bool{})
	model := map[string]Target{}
	for step := range 200 {
		var add []Target
		var remove []string
		for range rng.IntN(5) {
			tg := target(fmt.Sprint(rng.IntN(20)))
			tg.Interval = time.Duration(1+rng.IntN(3)) * time.Millisecond
			add = append(add, tg)
		}
		for range rng.IntN(4) {
			remove = append(remove, fmt.Sprint(rng.IntN(20)))
		}
		if err := c.Update(add, remove); err != nil && !strings.Contains(err.Error(), "given twice") {
			t.Fatal(err)
		}
		for _, k := range remove {
			delete(model, k)
		}
		seen := map[string]bool{}
		for _, tg := range add {
			if !seen[tg.Key] {
				seen[tg.Key] = true
				tg, _ = tg.withDefaults()
				model[tg.Key] = tg
			}
		}
		c.mu.Lock()
		got := map[string]Target{}
		for k, r := range c.runs {
			got[k] = r.target
		}
		states := len(c.states)
		c.mu.Unlock()
		if fmt.Sprint(got) != fmt.Sprint(model) || states != len(model) {
			t.Fatalf("step %d: runs %v (%d states), want %v", step, got, states, model)
		}
	}
	// The rebuild: Set of the model on a fresh checker runs the same.
	fresh, _ := scripted(t, map[string][]bool{})
	var all []Target
	for _, tg := range model {
		all = append(all, tg)
	}
	if err := fresh.Set(all); err != nil {
		t.Fatal(err)
	}
	fresh.mu.Lock()
	defer fresh.mu.Unlock()
	for k, r := range fresh.runs {
		if model[k] != r.target {
			t.Errorf("Set runs %+v for %s, Updates %+v", r.target, k, model[k])
		}
	}
}

func TestTakeChangedCoalesces(t *testing.T) {
	// a: healthy, then unhealthy; b: unhealthy; c: healthy, then removed.
	c, p := scripted(t, map[string][]bool{"a": {true, false}, "b": {false}, "c": {true}})
	if got := c.TakeChanged(); got != nil {
		t.Errorf("TakeChanged before any check = %v", got)
	}
	if err := c.Update([]Target{target("a"), target("b"), target("c")}, nil); err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "all scripts ran", func() bool { return p.startsOf("a") >= 3 && p.startsOf("b") >= 2 && p.startsOf("c") >= 2 })
	select {
	case <-c.Changed():
	case <-time.After(2 * time.Second):
		t.Fatal("Changed did not signal")
	}
	if err := c.Update(nil, []string{"c"}); err != nil {
		t.Fatal(err)
	}
	got := c.TakeChanged()
	if want := map[string]bool{"a": false, "b": false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TakeChanged = %v, want %v (a's two changes as one, c's dropped with it)", got, want)
	}
	if got := c.TakeChanged(); got != nil {
		t.Errorf("second TakeChanged = %v, want nothing", got)
	}
}
