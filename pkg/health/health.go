package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Kind is how a target is checked.
type Kind string

// The kinds of check.
const (
	// TCP passes when a TCP connection to the target's address opens.
	TCP Kind = "tcp"
	// HTTP passes when "GET Path" on the target's address answers 2xx
	// (redirects are not followed; a 3xx fails).
	HTTP Kind = "http"
)

// Defaults for a target's zero fields. With these a backend that stops
// answering is unhealthy after about 2 s and one that comes back is healthy
// again after about 2 s.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = time.Second
	DefaultRise     = 2
	DefaultFall     = 2
)

// Target is one backend to check.
type Target struct {
	// Key identifies the target in transitions and Status; the agent uses
	// the registration's key.
	Key string
	// Addr is where the check connects: the backend's own address and port.
	Addr netip.AddrPort
	Kind Kind
	// Path is the HTTP request path ("/healthz"); "/" when empty. TCP
	// checks have none.
	Path string
	// Interval is the time from the start of one check to the start of the
	// next; DefaultInterval when zero.
	Interval time.Duration
	// Timeout bounds one check; DefaultTimeout when zero.
	Timeout time.Duration
	// Rise is how many consecutive passing checks make an unhealthy target
	// healthy; Fall how many consecutive failing checks make a healthy one
	// unhealthy. DefaultRise and DefaultFall when zero.
	Rise int
	Fall int
}

// withDefaults returns t with its zero fields set to the defaults, or an
// error naming what is wrong with it.
func (t Target) withDefaults() (Target, error) {
	if t.Key == "" {
		return t, errors.New("target has no key")
	}
	if !t.Addr.IsValid() || t.Addr.Port() == 0 {
		return t, fmt.Errorf("target %q: address %q is not an address and port", t.Key, t.Addr)
	}
	switch t.Kind {
	case TCP:
		if t.Path != "" {
			return t, fmt.Errorf("target %q: a tcp check has no path (got %q)", t.Key, t.Path)
		}
	case HTTP:
		if t.Path == "" {
			t.Path = "/"
		}
		if !strings.HasPrefix(t.Path, "/") {
			return t, fmt.Errorf("target %q: path %q does not start with /", t.Key, t.Path)
		}
	default:
		return t, fmt.Errorf("target %q: unknown check kind %q (want %q or %q)", t.Key, t.Kind, TCP, HTTP)
	}
	if t.Interval == 0 {
		t.Interval = DefaultInterval
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTimeout
	}
	if t.Rise == 0 {
		t.Rise = DefaultRise
	}
	if t.Fall == 0 {
		t.Fall = DefaultFall
	}
	switch {
	case t.Interval < 0:
		return t, fmt.Errorf("target %q: negative interval %s", t.Key, t.Interval)
	case t.Timeout < 0:
		return t, fmt.Errorf("target %q: negative timeout %s", t.Key, t.Timeout)
	case t.Rise < 0:
		return t, fmt.Errorf("target %q: negative rise %d", t.Key, t.Rise)
	case t.Fall < 0:
		return t, fmt.Errorf("target %q: negative fall %d", t.Key, t.Fall)
	}
	return t, nil
}

// Status is what the Checker knows of one target.
type Status struct {
	// Checked is false until the target's first check has finished; an
	// unchecked target is not healthy.
	Checked bool
	Healthy bool
	// Since is when the target entered its current state (when it was set,
	// for an unchecked target).
	Since time.Time
	// LastCheck is when the latest check finished; Result says what it saw
	// ("HTTP 200", "connected", or the error).
	LastCheck time.Time
	Result    string
	// LastError is the most recent failure, kept after later successes;
	// empty if the target never failed.
	LastError string
	// Successes and Failures count the current run of equal results.
	Successes int
	Failures  int
}

// Config configures a Checker.
type Config struct {
	// OnChange, if not nil, is called for each change of a target's health
	// (TakeChanged and Changed give the same changes without a callback),
	// and once for each target's first result. Calls come one at a time from
	// one goroutine, in order for each target. OnChange must return promptly
	// and must not call Close; it may call Status and Set. A call may come
	// for a target that a concurrent Set has just removed: ignore keys you
	// no longer know.
	OnChange func(key string, healthy bool, reason string)
	// Log receives a line for every transition; logrus' standard logger when
	// nil.
	Log logrus.FieldLogger
	// Now is the clock for Status times; time.Now when nil.
	Now func() time.Time
}

// Checker runs the checks of a set of targets. Its methods are safe for
// concurrent use.
type Checker struct {
	onChange func(key string, healthy bool, reason string)
	log      logrus.FieldLogger
	now      func() time.Time
	client   *http.Client
	// probe runs one check; (*Checker).probeTarget except in tests.
	probe func(ctx context.Context, t Target) (string, error)

	wake        chan struct{} // has an item when queue is not empty
	stop        chan struct{} // closed by Close to end the dispatcher
	dispatching sync.WaitGroup

	notify chan struct{} // has an item when changed is not empty (see Changed)

	// mu guards runs, states, queue, changed and closed.
	mu      sync.Mutex
	runs    map[string]*run
	states  map[string]*state
	queue   []transition
	changed map[string]bool // key -> healthy, since the last TakeChanged
	closed  bool
}

// run is the goroutine that checks one target with one configuration.
type run struct {
	target Target
	cancel context.CancelFunc
	done   chan struct{}
}

// state is a target's health. It outlives a run when Set changes a target's
// check, and is replaced when the target is removed and added again.
type state struct {
	Status
}

// transition is a change of health waiting for OnChange.
type transition struct {
	key     string
	state   *state // the state it belongs to; stale once it is replaced
	healthy bool
	reason  string
}

// New returns a Checker with no targets.
func New(cfg Config) *Checker {
	c := &Checker{
		onChange: cfg.OnChange,
		log:      cfg.Log,
		now:      cfg.Now,
		wake:     make(chan struct{}, 1),
		notify:   make(chan struct{}, 1),
		stop:     make(chan struct{}),
		runs:     map[string]*run{},
		states:   map[string]*state{},
		changed:  map[string]bool{},
	}
	if c.log == nil {
		c.log = logrus.StandardLogger()
	}
	c.log = c.log.WithField("component", "health")
	if c.now == nil {
		c.now = time.Now
	}
	c.probe = c.probeTarget
	c.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // a check goes to the backend, never through a proxy
			DisableKeepAlives:   true,
			MaxIdleConnsPerHost: -1,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.dispatching.Add(1)
	go c.dispatch()
	return c
}

// Set replaces the set of targets. New targets start unknown and are checked
// at once; removed ones stop, and Set returns only once their goroutines have
// ended; a target whose check changed is checked afresh but keeps its health
// until the new check's results move it by the usual thresholds. An invalid
// target is left out and named in the returned error; the others are applied.
// Set costs O(targets); Update costs O(change).
func (c *Checker) Set(targets []Target) error {
	wanted, errs := validTargets(targets)
	keep := make(map[string]bool, len(wanted))
	for _, t := range wanted {
		keep[t.Key] = true
	}
	c.mu.Lock()
	var remove []string
	for key := range c.runs {
		if !keep[key] {
			remove = append(remove, key)
		}
	}
	c.mu.Unlock()
	// A run started between the two locks (a concurrent Update) is kept:
	// Set and Update racing have no defined winner.
	if err := c.apply(wanted, remove); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// Update changes the set of targets by difference: the targets in add are
// added, or replace the target with their key as Set would (an unchanged
// target is left alone, a changed one keeps its health); the keys in
// remove stop and leave Status, and their pending changes leave
// TakeChanged. Update returns once the removed and replaced checks have
// ended. A key in both lists is removed, then added: it starts afresh,
// unknown. Unknown keys in remove are ignored. An invalid target is left out
// and named in the returned error; the rest is applied. Update costs
// O(len(add) + len(remove)), whatever the number of targets.
func (c *Checker) Update(add []Target, remove []string) error {
	wanted, errs := validTargets(add)
	if err := c.apply(wanted, remove); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// validTargets fills in the defaults of targets and leaves out (and names)
// the invalid ones and the second of two with one key.
func validTargets(targets []Target) ([]Target, []error) {
	var errs []error
	out := make([]Target, 0, len(targets))
	seen := make(map[string]bool, len(targets))
	for _, t := range targets {
		t, err := t.withDefaults()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[t.Key] {
			errs = append(errs, fmt.Errorf("target %q: given twice; the first is kept", t.Key))
			continue
		}
		seen[t.Key] = true
		out = append(out, t)
	}
	return out, errs
}

// apply removes the keys in remove, then starts or replaces the targets in
// add, and waits for the stopped runs to end.
func (c *Checker) apply(add []Target, remove []string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("health checker is closed")
	}
	var stopped []*run
	for _, key := range remove {
		if r, ok := c.runs[key]; ok {
			r.cancel()
			stopped = append(stopped, r)
			delete(c.runs, key)
		}
		delete(c.states, key)
		delete(c.changed, key)
	}
	now := c.now()
	for _, t := range add {
		if r, running := c.runs[t.Key]; running {
			if r.target == t {
				continue
			}
			r.cancel()
			stopped = append(stopped, r)
			delete(c.runs, t.Key)
		}
		s, known := c.states[t.Key]
		if !known {
			s = &state{Status: Status{Since: now}}
			c.states[t.Key] = s
		} else {
			s.Successes, s.Failures = 0, 0
		}
		c.runs[t.Key] = c.start(t, s)
	}
	c.mu.Unlock()

	for _, r := range stopped {
		<-r.done
	}
	return nil
}

// TakeChanged returns the targets whose health changed (or was first
// settled) since the previous call, each with its latest health, and
// forgets them: several changes of one target between two calls give one
// entry, its last. A removed target's changes are dropped with it. The
// cost is O(changes), not O(targets). nil when nothing changed.
func (c *Checker) TakeChanged() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.changed) == 0 {
		return nil
	}
	out := c.changed
	c.changed = map[string]bool{}
	return out
}

// Changed returns a channel that has a value whenever TakeChanged has
// something new: one value for any number of changes (coalesced). It is
// the same channel on every call; use it or OnChange, or both.
func (c *Checker) Changed() <-chan struct{} { return c.notify }

// Health returns the health of one target: checked is false while it has
// no result yet (or is not a target); then healthy is false too. O(1).
func (c *Checker) Health(key string) (healthy, checked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.states[key]
	if !ok || !s.Checked {
		return false, false
	}
	return s.Healthy, true
}

// Len returns how many targets are being checked.
func (c *Checker) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.runs)
}

// start begins checking t; c.mu is held.
func (c *Checker) start(t Target, s *state) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{target: t, cancel: cancel, done: make(chan struct{})}
	go c.loop(ctx, r, s)
	return r
}

// loop checks r's target every interval until ctx ends.
func (c *Checker) loop(ctx context.Context, r *run, s *state) {
	defer close(r.done)
	t := r.target
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		started := time.Now()
		result, err := c.probe(ctx, t)
		if ctx.Err() != nil {
			return
		}
		c.record(r, s, result, err)
		timer.Reset(t.Interval - time.Since(started))
	}
}

// record applies one check's result to s and queues the transition, if any.
func (c *Checker) record(r *run, s *state, result string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs[r.target.Key] != r {
		return // Set replaced or removed this run while it was checking
	}
	t := r.target
	now := c.now()
	s.LastCheck = now
	passed := err == nil
	if passed {
		s.Result = result
		s.Successes++
		s.Failures = 0
	} else {
		s.Result = err.Error()
		s.LastError = s.Result
		s.Failures++
		s.Successes = 0
	}
	var reason string
	switch {
	case !s.Checked:
		reason = "first check: " + s.Result
	case passed && !s.Healthy && s.Successes >= t.Rise:
		reason = fmt.Sprintf("%d checks passed: %s", s.Successes, s.Result)
	case !passed && s.Healthy && s.Failures >= t.Fall:
		reason = fmt.Sprintf("%d checks failed: %s", s.Failures, s.Result)
	default:
		return
	}
	s.Checked = true
	s.Healthy = passed
	s.Since = now
	c.log.WithFields(logrus.Fields{"backend": t.Addr.String(), "reason": reason}).
		Infof("%s is %s", t.Key, healthWord(passed))
	c.queue = append(c.queue, transition{key: t.Key, state: s, healthy: passed, reason: reason})
	c.changed[t.Key] = passed
	select {
	case c.wake <- struct{}{}:
	default:
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func healthWord(healthy bool) string {
	if healthy {
		return "healthy"
	}
	return "unhealthy"
}

// dispatch hands queued transitions to OnChange, one at a time.
func (c *Checker) dispatch() {
	defer c.dispatching.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			if len(c.queue) == 0 || c.closed {
				c.mu.Unlock()
				break
			}
			tr := c.queue[0]
			c.queue[0] = transition{}
			c.queue = c.queue[1:]
			current := c.states[tr.key] == tr.state
			c.mu.Unlock()
			if current && c.onChange != nil {
				c.onChange(tr.key, tr.healthy, tr.reason)
			}
		}
	}
}

// Status returns the status of every target, by key.
func (c *Checker) Status() map[string]Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Status, len(c.states))
	for key, s := range c.states {
		out[key] = s.Status
	}
	return out
}

// Close stops every check and waits for the goroutines to end, including a
// call to OnChange in progress. No call to OnChange starts after Close
// returns. Close is idempotent.
func (c *Checker) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	runs := c.runs
	c.runs = map[string]*run{}
	c.queue = nil
	for _, r := range runs {
		r.cancel()
	}
	c.mu.Unlock()
	for _, r := range runs {
		<-r.done
	}
	close(c.stop)
	c.dispatching.Wait()
	c.client.CloseIdleConnections()
}
