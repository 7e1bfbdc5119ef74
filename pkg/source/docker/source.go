package docker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// Defaults of a Config's zero fields.
const (
	DefaultGrace      = 30 * time.Second
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	DefaultSettle     = 10 * time.Millisecond
	DefaultKillHold   = 30 * time.Second
	// inspectWorkers is how many containers are inspected at once.
	inspectWorkers = 8
)

// Config configures a Source.
type Config struct {
	// Endpoint is the Docker engine's address, in DOCKER_HOST's forms:
	// "unix:///var/run/docker.sock", "tcp://10.0.0.1:2376". Empty means
	// the DOCKER_HOST environment variable, else the platform's default.
	// DOCKER_TLS_VERIFY, DOCKER_CERT_PATH and DOCKER_API_VERSION apply
	// either way.
	Endpoint string
	// NodeAddr is this node's address as other nodes reach it: the backend
	// address of published ports and of host-networked containers.
	// Required.
	NodeAddr netip.Addr
	// Networks names Docker networks, besides macvlan and ipvlan ones,
	// whose container addresses other nodes reach (a routed overlay, say).
	Networks []string
	// Grace is how long the backends are kept while the engine cannot be
	// reached; after it they are withdrawn. DefaultGrace when 0.
	Grace time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts to reach
	// the engine, doubling from one to the other. DefaultMinBackoff and
	// DefaultMaxBackoff when 0.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Settle is how long after an event the source waits for more before
	// inspecting the containers they name, so that a burst gives few
	// reports. DefaultSettle when 0.
	Settle time.Duration
	// KillHold is how long a container that was sent a terminating signal
	// (docker kill, docker stop) stays withdrawn while Docker still says it
	// runs. DefaultKillHold when 0.
	KillHold time.Duration
	// Log gets a line for each container that cannot be published, each
	// loss and return of the engine, and each grace expiry; logrus'
	// standard logger when nil.
	Log logrus.FieldLogger
}

// Backend is one backend a container gives, with where it comes from.
type Backend struct {
	source.Local
	// Container is the container's name (without Docker's leading "/");
	// ContainerID its full ID.
	Container   string
	ContainerID string
	// Via says how the address was found: ViaPublished, ViaHost or
	// ViaNetwork; Network names the network for ViaNetwork.
	Via     string
	Network string
	// Health is Docker's verdict when the container has a HEALTHCHECK:
	// vip.Healthy while Docker says healthy, vip.Unhealthy while it says
	// starting or unhealthy. Empty when the container has no HEALTHCHECK.
	Health vip.Health
	// DockerHealth is Docker's own word: "starting", "healthy",
	// "unhealthy"; empty without a HEALTHCHECK.
	DockerHealth string
	// Public is the l4lb.public label (also in each Local's Public).
	Public bool
}

// Stats describes a Source, for people and metrics.
type Stats struct {
	Endpoint string
	// Connected is true while the events stream is followed; Since is when
	// it last connected or was lost; LastError is why it was last lost or
	// could not connect.
	Connected bool
	Since     time.Time
	LastError string
	// Withdrawn is true when the engine has been out of reach longer than
	// the grace period and its backends were withdrawn.
	Withdrawn bool
	// Containers is how many running, labelled containers are known;
	// Backends how many backends are published.
	Containers int
	Backends   int
	// Problems maps the name of each container that is not published, or
	// only in part, to why: bad labels, or an address other nodes cannot
	// reach. These are the local errors to show.
	Problems map[string]string
	// Shadowed lists backends that two containers give, with the one that
	// is published: "KEY: container B (taken by A)".
	Shadowed []string
	// Unroutable and BadLabels count each time a container was found not
	// reachable by other nodes, or with bad labels (once per container
	// state, not per look).
	Unroutable uint64
	BadLabels  uint64
	// Events counts the engine's events read; Relists the full listings
	// (one per connection); Reconnects the connections after the first.
	Events     uint64
	Relists    uint64
	Reconnects uint64
}

// OwnedError is the error to answer a request to deregister (or register
// over) a backend that a container gives.
type OwnedError struct {
	Key       string
	Container string
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("backend %s is published by Docker container %q: stop the container or remove its %s label instead", e.Key, e.Container, LabelVIP+"<port>")
}

// Source publishes the backends of the containers that run on the local
// Docker engine and carry l4lb labels. Its methods are safe for concurrent
// use; Run may be called once.
type Source struct {
	cfg     Config
	cli     *client.Client
	log     logrus.FieldLogger
	running atomic.Bool

	// mu guards book, networks, killed, lastEvent, problems and the
	// fields of stats.
	mu        sync.Mutex
	book      *book
	networks  map[string]networkInfo // by network ID
	killed    map[string]time.Time   // container ID -> when a terminating signal was seen
	lastEvent int64                  // unix ns of the newest event read
	stats     Stats
}

// New returns a Source for cfg. It does not reach the engine: Run does.
func New(cfg Config) (*Source, error) {
	if !cfg.NodeAddr.IsValid() || cfg.NodeAddr.IsUnspecified() {
		return nil, fmt.Errorf("docker source: node address %q: want this node's address as other nodes reach it", cfg.NodeAddr)
	}
	cfg.NodeAddr = cfg.NodeAddr.Unmap()
	for _, n := range cfg.Networks {
		if err := checkNetworkName(n); err != nil {
			return nil, fmt.Errorf("docker source: routable networks: %w", err)
		}
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.KillHold <= 0 {
		cfg.KillHold = DefaultKillHold
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Endpoint != "" {
		if strings.HasPrefix(cfg.Endpoint, "ssh://") {
			return nil, fmt.Errorf("docker source: endpoint %q: ssh:// needs the docker CLI's helper; give the engine's unix:// or tcp:// address", cfg.Endpoint)
		}
		if _, err := client.ParseHostURL(cfg.Endpoint); err != nil {
			return nil, fmt.Errorf("docker source: endpoint %q: %w (want unix:///var/run/docker.sock or tcp://HOST:PORT)", cfg.Endpoint, err)
		}
		opts = append(opts, client.WithHost(cfg.Endpoint))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker source: endpoint %q: %w", cfg.Endpoint, err)
	}
	log := cfg.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	s := &Source{
		cfg:      cfg,
		cli:      cli,
		log:      log.WithField("component", "docker"),
		book:     newBook(),
		networks: map[string]networkInfo{},
		killed:   map[string]time.Time{},
	}
	s.stats.Endpoint = cli.DaemonHost()
	return s, nil
}

// Close releases the client's connections. Call it after Run has returned.
func (s *Source) Close() error { return s.cli.Close() }

// Run follows the engine until ctx ends, then returns nil. It calls
// onChange from its own goroutine, one call at a time:
//
//   - first with every backend known (set) and nothing removed, once the
//     first listing is done, or with nothing at all if the engine cannot
//     be reached at start;
//   - then with the differences only: set holds the backends added or
//     changed (a change of Docker's health verdict is a change), removed
//     the keys (source.Local.Key) withdrawn.
//
// A container that stops, dies, is killed, paused or removed is withdrawn.
// When the engine cannot be reached, Run retries with backoff and keeps the
// backends for the grace period, then withdraws them; on reconnection it
// lists the containers again and follows the events from where it stopped.
// onChange gets slices of its own and must not call Run. It may call the
// Source's other methods: Backend, Backends, DockerHealth and Owner then
// agree with the report it is given (only Run's goroutine changes them).
func (s *Source) Run(ctx context.Context, onChange func(set []source.Local, removed []string)) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("docker source: Run called twice")
	}
	first := true
	report := func(set []Backend, removed []string) {
		if first || len(set) > 0 || len(removed) > 0 {
			first = false
			onChange(locals(set), removed)
		}
	}
	backoff := s.cfg.MinBackoff
	var lostAt time.Time
	everConnected := false
	for {
		connected, err := s.follow(ctx, report, everConnected)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		if connected {
			everConnected = true
			backoff = s.cfg.MinBackoff
			lostAt = now
			s.mu.Lock()
			n := len(s.book.published)
			s.mu.Unlock()
			s.log.WithField("reason", err.Error()).Warnf("lost the Docker engine at %s: keeping its %d backends for %s while retrying", s.stats.Endpoint, n, s.cfg.Grace)
		} else if lostAt.IsZero() {
			lostAt = now
			s.log.WithField("reason", err.Error()).Warnf("cannot reach the Docker engine at %s; retrying", s.stats.Endpoint)
		}
		s.mu.Lock()
		if s.stats.Connected || s.stats.Since.IsZero() {
			s.stats.Since = now
		}
		s.stats.Connected = false
		s.stats.LastError = err.Error()
		s.mu.Unlock()
		if first {
			report(nil, nil)
		}

		wake := time.Now().Add(backoff)
		for {
			wait := time.Until(wake)
			deadline := lostAt.Add(s.cfg.Grace)
			withdrawn := s.Stats().Withdrawn
			if !withdrawn && time.Until(deadline) < wait {
				wait = time.Until(deadline)
			}
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
			if !withdrawn && !time.Now().Before(deadline) {
				s.withdrawAll(report)
			}
			if !time.Now().Before(wake) {
				break
			}
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// withdrawAll withdraws every backend once the grace period is over.
func (s *Source) withdrawAll(report func([]Backend, []string)) {
	s.mu.Lock()
	n := len(s.book.published)
	for id := range s.book.containers {
		s.book.remove(id)
	}
	set, removed := s.book.commit()
	s.stats.Withdrawn = true
	s.mu.Unlock()
	if n > 0 {
		s.log.WithField("reason", s.Stats().LastError).Errorf("the Docker engine at %s has been out of reach for %s: withdrew its %d backends", s.stats.Endpoint, s.cfg.Grace, n)
	}
	report(set, removed)
}

// follow connects to the engine, subscribes to its events, lists the
// running containers, and applies the events until the stream fails or ctx
// ends. connected says whether it got as far as following the events.
func (s *Source) follow(ctx context.Context, report func([]Backend, []string), reconnect bool) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := s.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return false, fmt.Errorf("ping: %w", err)
	}
	s.mu.Lock()
	since := s.lastEvent
	if since == 0 {
		// No event read yet: the next connection resumes from this one's
		// start.
		s.lastEvent = time.Now().UnixNano()
	}
	s.mu.Unlock()
	opts := client.EventsListOptions{Filters: make(client.Filters).
		Add("type", string(events.ContainerEventType), string(events.NetworkEventType)).
		Add("event", "start", "restart", "unpause", "pause", "stop", "die", "kill", "oom", "destroy", "rename", "update",
			"health_status", "connect", "disconnect", "create")}
	if since != 0 {
		opts.Since = fmt.Sprintf("%d.%09d", since/1e9, since%1e9)
	}
	// The subscription comes first, so that nothing that happens during
	// the listing is missed.
	stream := s.cli.Events(ctx, opts)
	select {
	case err := <-stream.Err:
		return false, fmt.Errorf("follow events: %w", err)
	default:
	}
	// Events from before the listing (replayed from since) are only
	// prompts to look again: the listing already saw their outcome.
	listedAt := time.Now()
	if err := s.relist(ctx, report); err != nil {
		return false, err
	}
	s.mu.Lock()
	s.stats.Connected = true
	s.stats.Since = time.Now()
	s.stats.Withdrawn = false
	s.stats.Relists++
	if reconnect {
		s.stats.Reconnects++
	}
	n := len(s.book.published)
	s.mu.Unlock()
	s.log.Infof("following the Docker engine at %s: %d backends", s.stats.Endpoint, n)

	dirty := map[string]next{}                // container ID -> what its latest event asks; "" when networks changed
	gens := &lookGens{m: map[string]uint64{}} // see dispatch
	sem := make(chan struct{}, inspectWorkers)
	looked := make(chan batch)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	settling := false
	// A container sent a terminating signal that it survives is looked at
	// again once KillHold is over.
	recheck := time.NewTicker(min(time.Second, s.cfg.KillHold))
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-recheck.C:
			s.mu.Lock()
			for id, at := range s.killed {
				if time.Since(at) >= s.cfg.KillHold {
					dirty[id] = lookAgain
				}
			}
			s.mu.Unlock()
			if !settling && len(dirty) > 0 {
				settling = true
				settle.Reset(s.cfg.Settle)
			}
		case err := <-stream.Err:
			if err == nil {
				err = errors.New("events stream ended")
			}
			return true, fmt.Errorf("events stream: %w", err)
		case m := <-stream.Messages:
			s.note(m, dirty, listedAt)
			if !settling && len(dirty) > 0 {
				settling = true
				settle.Reset(s.cfg.Settle)
			}
		case <-settle.C:
			settling = false
			if err := s.dispatch(ctx, dirty, gens, sem, looked, report); err != nil {
				return true, err
			}
			dirty = map[string]next{}
		case r := <-looked:
			if err := s.applyLooks(ctx, r, gens, report); err != nil {
				return true, err
			}
		}
	}
}

// batch is the inspections of one settled burst of events, with the
// generation of each container when they were asked for.
type batch struct {
	looks []look
	gens  map[string]uint64
}

// lookGens numbers the looks in flight: m maps each container with a look
// in flight to the number of the newest one. A look whose number is not
// there any more was overtaken by a newer look or a withdrawal and is
// dropped. It belongs to follow's loop.
type lookGens struct {
	seq uint64
	m   map[string]uint64
}

// dispatch acts on one settled burst of events: it withdraws at once the
// containers that stopped serving, and starts inspecting the others
// without waiting, so that events keep being read meanwhile; applyLooks
// applies the inspections when they come back.
func (s *Source) dispatch(ctx context.Context, dirty map[string]next, gens *lookGens, sem chan struct{}, looked chan<- batch, report func([]Backend, []string)) error {
	if dirty[""] != 0 {
		if err := s.refreshNetworks(ctx); err != nil {
			return err
		}
	}
	var ids, gone []string
	for id, what := range dirty {
		if id == "" {
			continue
		}
		if what == withdraw {
			delete(gens.m, id)
			gone = append(gone, id)
		} else {
			gens.seq++
			gens.m[id] = gens.seq
			ids = append(ids, id)
		}
	}
	if len(gone) > 0 {
		s.mu.Lock()
		for _, id := range gone {
			s.forget(id)
		}
		set, removed := s.book.commit()
		s.mu.Unlock()
		report(set, removed)
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	b := batch{gens: make(map[string]uint64, len(ids))}
	for _, id := range ids {
		b.gens[id] = gens.m[id]
	}
	go func() {
		b.looks = s.inspectWith(ctx, ids, sem)
		select {
		case looked <- b:
		case <-ctx.Done():
		}
	}()
	return nil
}

// inspectWith inspects the containers ids, at most cap(sem) at a time
// across all the batches in flight.
func (s *Source) inspectWith(ctx context.Context, ids []string, sem chan struct{}) []look {
	out := make([]look, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				out[i] = look{id: id, err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			r, err := s.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
			out[i] = look{id: id, c: r.Container, err: err}
			if err != nil && cerrdefs.IsNotFound(err) {
				out[i] = look{id: id, gone: true}
			}
		}()
	}
	wg.Wait()
	return out
}

// applyLooks applies the inspections of one batch that no newer look has
// overtaken, and reports what changed.
func (s *Source) applyLooks(ctx context.Context, b batch, gens *lookGens, report func([]Backend, []string)) error {
	var current []look
	for _, l := range b.looks {
		if n, ok := gens.m[l.id]; ok && n == b.gens[l.id] {
			delete(gens.m, l.id)
			current = append(current, l)
		}
	}
	return s.applyCurrent(ctx, current, report)
}

// note records what one event asks to look at again.
func (s *Source) note(m events.Message, dirty map[string]next, listedAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Events++
	if eventTime(m).Before(listedAt) {
		// Replayed: look again rather than withdraw.
		before := make(map[string]next, 1)
		s.noteLocked(m, before)
		for id := range before {
			if dirty[id] == 0 || dirty[id] == lookAgain || id == "" {
				dirty[id] = lookAgain
			}
		}
		return
	}
	s.noteLocked(m, dirty)
}

// next is what an event asks of the container it names.
type next int

const (
	lookAgain next = iota + 1 // inspect it
	withdraw                  // it stopped serving: withdraw it without asking
)

// noteLocked is note with s.mu held.
func (s *Source) noteLocked(m events.Message, dirty map[string]next) {
	if t := m.TimeNano; t > s.lastEvent {
		s.lastEvent = t
	} else if t == 0 && m.Time*1e9 > s.lastEvent {
		s.lastEvent = m.Time * 1e9
	}
	switch m.Type {
	case events.NetworkEventType:
		switch m.Action {
		case events.ActionConnect, events.ActionDisconnect:
			if id := m.Actor.Attributes["container"]; id != "" {
				dirty[id] = lookAgain
			}
		case events.ActionCreate, events.ActionDestroy:
			dirty[""] = lookAgain
		}
	case events.ContainerEventType:
		id := m.Actor.ID
		switch {
		case m.Action == events.ActionCreate:
			// Nothing to publish until it starts.
		case m.Action == events.ActionKill:
			if terminating(m.Actor.Attributes["signal"]) {
				s.killed[id] = eventTime(m)
				dirty[id] = withdraw
			} else if dirty[id] != withdraw {
				dirty[id] = lookAgain
			}
		case m.Action == events.ActionDie, m.Action == events.ActionStop, m.Action == events.ActionPause, m.Action == events.ActionDestroy:
			// Not serving any more, whatever an inspect would add.
			dirty[id] = withdraw
		case m.Action == events.ActionStart, m.Action == events.ActionRestart, m.Action == events.ActionUnPause:
			delete(s.killed, id)
			dirty[id] = lookAgain
		default:
			if dirty[id] != withdraw {
				dirty[id] = lookAgain
			}
		}
	}
}

// eventTime is when m happened, by the engine's clock.
func eventTime(m events.Message) time.Time {
	if m.TimeNano != 0 {
		return time.Unix(0, m.TimeNano)
	}
	return time.Unix(m.Time, 0)
}

// terminating says whether a kill event's signal ends the container
// unless it catches it: docker stop's and docker kill's.
func terminating(signal string) bool {
	switch strings.TrimPrefix(strings.ToUpper(signal), "SIG") {
	case "", "9", "KILL", "15", "TERM", "2", "INT", "3", "QUIT":
		return true
	}
	return false
}

// look is what inspecting one container gave.
type look struct {
	id   string
	c    container.InspectResponse
	gone bool // the engine does not know it (removed)
	err  error
}

// refreshNetworks reads the engine's networks.
func (s *Source) refreshNetworks(ctx context.Context) error {
	r, err := s.cli.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		return fmt.Errorf("list networks: %w", err)
	}
	nets := make(map[string]networkInfo, len(r.Items))
	for _, n := range r.Items {
		nets[n.ID] = networkInfo{Name: n.Name, Driver: n.Driver}
	}
	s.mu.Lock()
	s.networks = nets
	s.mu.Unlock()
	return nil
}

// relist lists the running containers and replaces what the source knows
// with what they give, reporting the difference.
func (s *Source) relist(ctx context.Context, report func([]Backend, []string)) error {
	if err := s.refreshNetworks(ctx); err != nil {
		return err
	}
	r, err := s.cli.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var ids []string
	for _, c := range r.Items {
		for k := range c.Labels {
			if strings.HasPrefix(k, LabelPrefix) {
				ids = append(ids, c.ID)
				break
			}
		}
	}
	looks := s.inspectWith(ctx, ids, make(chan struct{}, inspectWorkers))
	for _, l := range looks {
		if l.err != nil {
			return fmt.Errorf("inspect container %s: %w", l.id, l.err)
		}
	}
	s.mu.Lock()
	listed := map[string]bool{}
	for _, l := range looks {
		listed[l.id] = true
	}
	for id := range s.book.containers {
		if !listed[id] {
			s.book.remove(id)
		}
	}
	for id := range s.killed {
		if !listed[id] {
			delete(s.killed, id)
		}
	}
	for _, l := range looks {
		s.update(l)
	}
	set, removed := s.book.commit()
	s.mu.Unlock()
	report(set, removed)
	return nil
}

// applyCurrent applies inspections and reports what changed.
func (s *Source) applyCurrent(ctx context.Context, looks []look, report func([]Backend, []string)) error {
	// A network the source has not seen yet (created while it looked
	// away) is read before deciding.
	s.mu.Lock()
	unknown := false
	for _, l := range looks {
		if l.err == nil && !l.gone && l.c.NetworkSettings != nil {
			for _, ep := range l.c.NetworkSettings.Networks {
				if ep != nil && ep.NetworkID != "" {
					if _, ok := s.networks[ep.NetworkID]; !ok {
						unknown = true
					}
				}
			}
		}
	}
	s.mu.Unlock()
	if unknown {
		if err := s.refreshNetworks(ctx); err != nil {
			return err
		}
	}
	var errs []error
	s.mu.Lock()
	for _, l := range looks {
		if l.err != nil {
			errs = append(errs, fmt.Errorf("inspect container %s: %w", l.id, l.err))
			continue
		}
		s.update(l)
	}
	set, removed := s.book.commit()
	s.mu.Unlock()
	report(set, removed)
	if len(errs) > 0 {
		// The connection is likely gone: reconnecting lists everything
		// again.
		return errors.Join(errs...)
	}
	return nil
}

// update applies one inspection to the book; s.mu is held.
func (s *Source) update(l look) {
	c := l.c
	if l.gone || c.State == nil || !c.State.Running || c.State.Paused || c.State.Restarting {
		delete(s.killed, l.id)
		s.forget(l.id)
		return
	}
	if at, ok := s.killed[l.id]; ok {
		if time.Since(at) < s.cfg.KillHold {
			s.forget(l.id)
			return
		}
		delete(s.killed, l.id)
	}
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	e := s.evaluate(c, labels)
	if e == nil {
		s.forget(l.id)
		return
	}
	old := s.book.containers[l.id]
	if e.problem != "" && (old == nil || old.problem != e.problem) {
		if e.unroutable {
			s.stats.Unroutable++
		} else {
			s.stats.BadLabels++
		}
		s.log.WithFields(logrus.Fields{"container": e.name, "reason": e.problem}).Warnf("container %s is not published (or only in part)", e.name)
	}
	if old != nil && slices.Equal(old.backends, e.backends) && old.problem == e.problem && old.name == e.name {
		return
	}
	s.book.set(e)
}

// forget removes container id; s.mu is held.
func (s *Source) forget(id string) {
	s.book.remove(id)
}

// evaluate returns what a running container gives; nil when it has no
// l4lb label.
func (s *Source) evaluate(c container.InspectResponse, labels map[string]string) *entry {
	parsed, ok, err := ParseLabels(labels)
	if !ok {
		return nil
	}
	e := &entry{id: c.ID, name: strings.TrimPrefix(c.Name, "/")}
	if err != nil {
		e.problem = "labels: " + err.Error()
		return e
	}
	rule := addressRule{Node: s.cfg.NodeAddr, Routable: s.cfg.Networks, Network: func(id string) (networkInfo, bool) {
		n, ok := s.networks[id]
		return n, ok
	}}
	var health vip.Health
	var dockerHealth string
	if c.State.Health != nil && c.State.Health.Status != container.NoHealthcheck && c.State.Health.Status != "" {
		dockerHealth = string(c.State.Health.Status)
		health = vip.Unhealthy
		if c.State.Health.Status == container.Healthy {
			health = vip.Healthy
		}
	}
	placements := map[string]placement{}
	var reasons []string
	locals, err := parsed.Locals(func(p Port) (netip.AddrPort, bool) {
		pl := placePort(&c, p, parsed.Network, rule)
		if pl.Reason != "" {
			reasons = append(reasons, pl.Reason)
			return netip.AddrPort{}, false
		}
		placements[p.Key()] = pl
		return pl.Addr, true
	})
	if err != nil {
		e.problem = "labels: " + err.Error()
		return e
	}
	if len(reasons) > 0 {
		e.problem = "other nodes cannot reach it: " + strings.Join(reasons, "; ")
		e.unroutable = true
	}
	seen := map[string]bool{}
	for _, l := range locals {
		if seen[l.Key()] {
			continue
		}
		seen[l.Key()] = true
		var pl placement
		for _, p := range placements {
			if p.Addr == l.Backend {
				pl = p
				break
			}
		}
		e.backends = append(e.backends, Backend{
			Local: l, Container: e.name, ContainerID: c.ID, Via: pl.Via, Network: pl.Network,
			Health: health, DockerHealth: dockerHealth, Public: parsed.Public,
		})
	}
	slices.SortFunc(e.backends, func(x, y Backend) int { return strings.Compare(x.Key(), y.Key()) })
	return e
}

// Backends returns the published backends, sorted by key.
func (s *Source) Backends() []Backend {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.book.list()
}

// Current returns the published backends as Locals, sorted by key.
func (s *Source) Current() []source.Local {
	return locals(s.Backends())
}

// Owner says whether key (source.Local.Key) is published by a container,
// and which: its name.
func (s *Source) Owner(key string) (container string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.book.published[key]
	return b.Container, ok
}

// Owned returns an *OwnedError when key is published by a container, nil
// otherwise: the API's answer to a deregistration of that key.
func (s *Source) Owned(key string) error {
	if name, ok := s.Owner(key); ok {
		return &OwnedError{Key: key, Container: name}
	}
	return nil
}

// DockerHealth returns Docker's health verdict for the published backends
// whose container has a HEALTHCHECK: vip.Healthy or vip.Unhealthy. A key
// that is not in it has no HEALTHCHECK.
func (s *Source) DockerHealth() map[string]vip.Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]vip.Health{}
	for k, b := range s.book.published {
		if b.Health != "" {
			out[k] = b.Health
		}
	}
	return out
}

// Stats returns the source's figures.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Containers = len(s.book.containers)
	st.Backends = len(s.book.published)
	st.Problems = map[string]string{}
	for _, e := range s.book.containers {
		if e.problem != "" {
			st.Problems[e.name] = e.problem
		}
	}
	st.Shadowed = s.book.shadowed()
	return st
}
