package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// Cluster is the gossip layer as the agent uses it (*gossip.Cluster).
// PublishDelta changes this node's registrations by key and refuses (changing
// nothing) what the record cannot hold; TakeChanges returns how the cluster
// state changed since its previous call; Changes signals, coalesced, that
// TakeChanges has something.
type Cluster interface {
	PublishDelta(set []vip.Registration, removed []vip.RegKey) error
	TakeChanges() []vip.NodeDelta
	Changes() <-chan struct{}
}

// TableSink takes a new table without blocking: the data plane
// (*ipvs.Reconciler) and DNS (*dns.Server).
type TableSink interface {
	Update(*vip.Table)
}

// Source names a backend source of this node. When several sources register
// the same backend for the same VIP (the same source.Local key), the one
// earliest in Sources is published: an operator's API registration over a
// container's label over a services-directory file.
type Source int

// The backend sources, in the order of the merge rule.
const (
	SourceAPI Source = iota
	SourceDocker
	SourceDir
	numSources
)

// Sources lists the sources in the order of the merge rule.
var Sources = [numSources]Source{SourceAPI, SourceDocker, SourceDir}

func (s Source) String() string {
	return [...]string{"api", "docker", "services-dir"}[s]
}

// CoreConfig is what a Core needs.
type CoreConfig struct {
	Node string
	VIP  vip.Config
	// Plane programs the kernel; nil for --dataplane none, in which case DNS
	// gets the desired table directly.
	Plane TableSink
	DNS   TableSink
	// Claims keeps VIP address claims across restarts; nil keeps them in
	// memory only.
	Claims *ClaimBook
	// StateMerged says whether this node has merged the cluster's state
	// (joined, or no seeds to join). Until it has, the data plane is not
	// handed a table: a restarted agent must not program an empty or
	// partial table over what the kernel holds. nil means merged.
	StateMerged func() (bool, string)
	// Room says whether this node's gossip record can take more
	// registrations (*gossip.Cluster.Room); nil for no limit. CanAdd asks
	// it, so that nothing is accepted that cannot be served.
	Room func(add []vip.Registration) error
	// MinRebuildInterval is the least time between two rebuilds of the
	// desired table; cluster changes that come faster are merged into the
	// next one. 0 rebuilds on every change.
	MinRebuildInterval time.Duration
	// Observe, when set, is told how long each stage of network
	// programming took (see Stage).
	Observe func(stage Stage, d time.Duration)
	// OnApplied, when set, is told, per origin node, the record versions
	// the table the data plane last programmed was built from (needs a
	// Cluster with Versions). Called from the data plane's goroutine or
	// Run's; must not block.
	OnApplied func(map[string]gossip.Version)
	Log       *logrus.Entry
	Now       func() time.Time
}

// Stage is a step of network programming, for the latency histogram.
type Stage string

// The stages: a local source's change handed to gossip; a cluster change
// turned into a new desired table; that table written to the kernel; the
// kernel's table answered by DNS; and the whole way from the cluster
// change to DNS.
const (
	StagePublished Stage = "published"
	StageTable     Stage = "table_built"
	StageKernel    Stage = "kernel_written"
	StageDNS       Stage = "dns_served"
	StageTotal     Stage = "total"
)

// Core is the agent's flow: local sources -> gossip -> vip model -> data
// plane -> DNS. Every step works by difference: a source's change marks its
// keys; Run publishes only marked keys and applies only what gossip says
// changed to the model, which derives the new table from the previous one.
// Run owns the model and the published set; the other methods may be
// called from any goroutine.
type Core struct {
	cfg     CoreConfig
	cluster Cluster
	log     *logrus.Entry
	kick    chan struct{}
	// toDNS holds the newest programmed table not yet handed to DNS; DNS
	// updates run on Run's DNS goroutine, never on the data plane's.
	toDNS chan programmedTable

	// mu guards locals, healthy, dirty, dirtySince, publishErr and
	// pending.
	mu         sync.Mutex
	locals     map[string]*localEntry // by source.Local key
	healthy    map[string]bool        // checked keys' health; missing: not checked yet
	fixed      map[string]vip.Health  // health a source states (Docker's HEALTHCHECK), over any check
	dirty      map[string]struct{}    // keys to look at on the next publish
	dirtySince time.Time              // oldest change not yet published
	publishErr error                  // why the last publication was refused, nil once one succeeds
	inflight   bool                   // publish took marked keys and has not handed them to gossip yet
	// pending are the tables handed to the data plane and not yet
	// reported programmed, with when their change reached this node.
	pending []pendingTable

	// Owned by Run's goroutine.
	model     *vip.Model
	published map[string]vip.Registration         // by source.Local key: in gossip
	names     map[vip.NameKey]map[string]struct{} // named keys published per name

	table      atomic.Pointer[vip.Table] // desired, last built
	programmed atomic.Pointer[vip.Table] // as the data plane last reported
	merged     atomic.Bool               // the cluster state was merged (StateMerged held once)
	built      atomic.Bool               // a table was built from merged state
	synced     atomic.Bool               // the data plane reported a sync
	latency    atomic.Int64              // ns from a state change to the kernel, last seen
}

// localEntry is one backend key of this node, as each source has it.
type localEntry struct {
	by [numSources]*source.Local
}

func (e *localEntry) effective() *source.Local {
	for _, l := range e.by {
		if l != nil {
			return l
		}
	}
	return nil
}

type pendingTable struct {
	t     *vip.Table
	vers  map[string]gossip.Version // the record versions it was built from, at least
	since time.Time                 // when the oldest change it carries reached this node
	built time.Time                 // when it was built
}

// NewCore returns a Core; call Run to start it.
func NewCore(cfg CoreConfig, cluster Cluster) *Core {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.Claims == nil {
		cfg.Claims = NewClaimBook("")
	}
	if cfg.MinRebuildInterval < 0 {
		cfg.MinRebuildInterval = 0
	}
	c := &Core{
		cfg: cfg, cluster: cluster, log: cfg.Log.WithField("component", "agent"),
		kick: make(chan struct{}, 1), toDNS: make(chan programmedTable, 1),
		locals: map[string]*localEntry{}, healthy: map[string]bool{}, fixed: map[string]vip.Health{}, dirty: map[string]struct{}{},
		model: vip.NewModel(cfg.VIP), published: map[string]vip.Registration{}, names: map[vip.NameKey]map[string]struct{}{},
	}
	empty := vip.Derive(nil, nil, nil, nil)
	c.table.Store(empty)
	c.programmed.Store(&vip.Table{})
	return c
}

// Run publishes this node's backends and applies the cluster's changes as
// they come, until ctx is done. Bursts merge: while one pass runs, further
// triggers collapse into one, and the next pass takes everything marked
// meanwhile; an idle Core reacts at once.
func (c *Core) Run(ctx context.Context) error {
	if c.cfg.DNS != nil {
		go c.feedDNS(ctx)
	}
	c.publish()
	c.rebuild(c.cfg.Now())
	// Until the state is merged, look again often: the merge itself may
	// bring no change to signal.
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	// Cluster changes are applied at once when the last rebuild is
	// MinRebuildInterval old; those that come sooner wait for it and are
	// applied together (kube-proxy's bounded-frequency runner): a burst
	// costs a few rebuilds, a lone change no delay.
	var last time.Time
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	waiting := false
	apply := func() {
		last = time.Now()
		c.rebuild(c.cfg.Now())
		c.publish()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			c.publish()
		case <-c.cluster.Changes():
			if waiting {
				continue // the pending rebuild takes this change too
			}
			if d := c.cfg.MinRebuildInterval - time.Since(last); d > 0 {
				waiting = true
				wait.Reset(d)
				continue
			}
			apply()
		case <-wait.C:
			waiting = false
			apply()
		case <-poll.C:
			if c.merged.Load() {
				poll.Stop()
			} else {
				c.rebuild(c.cfg.Now())
			}
		}
	}
}

// Update changes what one source registers: set adds or replaces backends
// (by key), removed drops keys. It costs O(len(set)+len(removed)).
func (c *Core) Update(src Source, set []source.Local, removed []string) {
	c.mu.Lock()
	for _, k := range removed {
		if e := c.locals[k]; e != nil && e.by[src] != nil {
			e.by[src] = nil
			if e.effective() == nil {
				delete(c.locals, k)
			}
			c.markLocked(k)
		}
	}
	for i := range set {
		l := set[i]
		k := l.Key()
		e := c.locals[k]
		if e == nil {
			e = &localEntry{}
			c.locals[k] = e
		}
		e.by[src] = &l
		c.markLocked(k)
	}
	c.mu.Unlock()
	c.Kick()
}

// Replace makes set the whole of what src registers (a source that lists
// everything at once, such as the services directory at start). It costs
// O(backends of src), and marks only the keys that differ. It returns the
// keys src no longer registers.
func (c *Core) Replace(src Source, set []source.Local) []string {
	keep := make(map[string]bool, len(set))
	for _, l := range set {
		keep[l.Key()] = true
	}
	var removed []string
	c.mu.Lock()
	for k, e := range c.locals {
		if e.by[src] != nil && !keep[k] {
			removed = append(removed, k)
		}
	}
	c.mu.Unlock()
	c.Update(src, set, removed)
	return removed
}

// markLocked marks key for the next publication. c.mu is held.
func (c *Core) markLocked(key string) {
	if len(c.dirty) == 0 {
		c.dirtySince = c.cfg.Now()
	}
	c.dirty[key] = struct{}{}
}

// CanAdd returns an error when this node cannot publish ls besides what
// it publishes: its gossip record would pass a limit.
func (c *Core) CanAdd(ls []source.Local) error {
	if c.cfg.Room == nil {
		return nil
	}
	regs := make([]vip.Registration, len(ls))
	for i, l := range ls {
		regs[i] = l.Registration(vip.Healthy)
		if regs[i].VIP.Named() {
			// A claim takes its room too: an address and an instant.
			regs[i].Claim = vip.Claim{Addr: netip.IPv6Unspecified(), Since: c.cfg.Now()}
		}
	}
	if err := c.cfg.Room(regs); err != nil {
		return &CapacityError{Have: c.LocalCount(), Err: err}
	}
	return nil
}

// CapacityError says a node publishes as many backends as its gossip
// record holds.
type CapacityError struct {
	Have int
	Err  error
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("this node publishes %d backends and cannot publish more (%v): remove some before adding others", e.Have, e.Err)
}

func (e *CapacityError) Unwrap() error { return e.Err }

// HealthChanged records checked backends' health (key -> healthy) and
// republishes those keys.
func (c *Core) HealthChanged(h map[string]bool) {
	if len(h) == 0 {
		return
	}
	c.mu.Lock()
	for k, ok := range h {
		if old, seen := c.healthy[k]; seen && old == ok {
			continue
		}
		c.healthy[k] = ok
		c.markLocked(k)
	}
	c.mu.Unlock()
	c.Kick()
}

// SetSourceHealth records health that a source states for its backends
// (Docker's HEALTHCHECK verdict): it wins over l4lb's own check. removed
// keys go back to the check, or to healthy.
func (c *Core) SetSourceHealth(set map[string]vip.Health, removed []string) {
	c.mu.Lock()
	for k, h := range set {
		if old, ok := c.fixed[k]; ok && old == h {
			continue
		}
		c.fixed[k] = h
		c.markLocked(k)
	}
	for _, k := range removed {
		if _, ok := c.fixed[k]; ok {
			delete(c.fixed, k)
			c.markLocked(k)
		}
	}
	c.mu.Unlock()
	c.Kick()
}

// ForgetHealth drops what is known of the health of keys whose check went.
func (c *Core) ForgetHealth(keys []string) {
	c.mu.Lock()
	for _, k := range keys {
		if _, ok := c.healthy[k]; ok {
			delete(c.healthy, k)
			c.markLocked(k)
		}
	}
	c.mu.Unlock()
	c.Kick()
}

// Kick asks Run to publish what is marked. It never blocks.
func (c *Core) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Locals returns this node's backends as the merge rule settles them,
// sorted by key. It costs O(backends): for the API, not for the flow.
func (c *Core) Locals() []source.Local {
	c.mu.Lock()
	out := make([]source.Local, 0, len(c.locals))
	for _, e := range c.locals {
		out = append(out, *e.effective())
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// LocalCount is how many backends this node's sources register.
func (c *Core) LocalCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.locals)
}

// Local returns the backend of key as published, and which source it
// comes from.
func (c *Core) Local(key string) (source.Local, Source, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.locals[key]; e != nil {
		for i, l := range e.by {
			if l != nil {
				return *l, Source(i), true
			}
		}
	}
	return source.Local{}, 0, false
}

// PublishError is why gossip last refused this node's backends (nil when
// the last publication went through).
func (c *Core) PublishError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.publishErr
}

// PublishNow publishes what the sources hold, before Run starts (it must
// not be called while Run runs): a restarted node's first record then
// already holds its backends, with the claims it kept.
func (c *Core) PublishNow() { c.publish() }

// publish hands gossip the registrations of the marked keys that changed.
func (c *Core) publish() {
	c.mu.Lock()
	if len(c.dirty) == 0 {
		c.mu.Unlock()
		return
	}
	since := c.dirtySince
	keys := make([]string, 0, len(c.dirty))
	for k := range c.dirty {
		keys = append(keys, k)
	}
	c.dirty = map[string]struct{}{}
	c.inflight = true
	defer c.published1()
	want := make(map[string]vip.Registration, len(keys))
	for _, k := range keys {
		e := c.locals[k]
		if e == nil {
			continue
		}
		l := e.effective()
		h := vip.Healthy
		if fh, ok := c.fixed[k]; ok {
			h = fh
		} else if l.Check.Kind != "" && !c.healthy[k] {
			h = vip.Unhealthy
		}
		want[k] = l.Registration(h)
	}
	c.mu.Unlock()

	// Claims: one decision per name, for the names of the marked keys.
	claims, changedNames := c.claims(want)
	// A name whose claim moved is republished on all its keys, marked or
	// not, so that every registration of a name carries one claim.
	for nk := range changedNames {
		for k := range c.names[nk] {
			if _, ok := want[k]; ok {
				continue
			}
			if old, ok := c.published[k]; ok {
				want[k] = old
				keys = append(keys, k)
			}
		}
	}
	var set []vip.Registration
	var removed []vip.RegKey
	newPublished := make(map[string]*vip.Registration, len(keys))
	for _, k := range keys {
		old, had := c.published[k]
		r, ok := want[k]
		if !ok {
			if had {
				removed = append(removed, old.Key())
				newPublished[k] = nil
			}
			continue
		}
		if r.VIP.Named() {
			r.Claim = claims[vip.NameKeyOf(&r)]
		}
		if had && sameRegistration(old, r) {
			continue
		}
		if had && old.Key() != r.Key() {
			removed = append(removed, old.Key())
		}
		set = append(set, r)
		newPublished[k] = &r
	}
	if len(set) == 0 && len(removed) == 0 {
		return
	}
	if err := c.cluster.PublishDelta(set, removed); err != nil {
		// Nothing changed in gossip: the keys stay marked, for the next
		// publication (a removal may make room) to try again.
		c.mu.Lock()
		c.publishErr = err
		for _, k := range keys {
			c.markLocked(k)
		}
		c.mu.Unlock()
		c.log.WithError(err).WithFields(logrus.Fields{"backends": len(set), "removed": len(removed), "reason": "gossip refused the change"}).
			Error("backends not published; the previous ones stay")
		return
	}
	var forget map[vip.NameKey]bool
	for k, r := range newPublished {
		if old, ok := c.published[k]; ok && old.VIP.Named() {
			nk := vip.NameKeyOf(&old)
			delete(c.names[nk], k)
			if len(c.names[nk]) == 0 {
				delete(c.names, nk)
				if forget == nil {
					forget = map[vip.NameKey]bool{}
				}
				forget[nk] = true
			}
		}
		if r == nil {
			delete(c.published, k)
			continue
		}
		c.published[k] = *r
		if r.VIP.Named() {
			nk := vip.NameKeyOf(r)
			if c.names[nk] == nil {
				c.names[nk] = map[string]struct{}{}
			}
			c.names[nk][k] = struct{}{}
			delete(forget, nk)
		}
	}
	// Forget the claims of names this node stopped publishing. Claims read
	// from disk that no source has asked for yet stay: the services
	// directory, say, is read after the first publish.
	if len(forget) > 0 {
		if err := c.cfg.Claims.Forget(forget); err != nil {
			c.log.WithError(err).Warn("cannot forget withdrawn names' VIP address claims")
		}
	}
	c.mu.Lock()
	c.publishErr = nil
	c.mu.Unlock()
	if c.cfg.Observe != nil {
		c.cfg.Observe(StagePublished, c.cfg.Now().Sub(since))
	}
	c.log.WithFields(logrus.Fields{"set": len(set), "removed": len(removed), "backends": len(c.published)}).Debug("published this node's changes")
}

// sameRegistration reports whether two registrations publish the same.
func sameRegistration(a, b vip.Registration) bool {
	return a.VIP == b.VIP && a.Framework == b.Framework && a.Backend == b.Backend && a.Weight == b.Weight &&
		a.Health == b.Health && a.Scheduler == b.Scheduler && a.Persistence == b.Persistence &&
		a.Claim.Addr == b.Claim.Addr && a.Claim.Since.Equal(b.Claim.Since)
}

// claims picks the address claim this node publishes for each named VIP
// among regs: the claim it made before (kept across restarts) while the
// table gives the name that address or does not place the name at all;
// otherwise what the model proposes (the address the cluster agrees on,
// or a free one), all names of one publication in one pass. It returns the
// claims by name and the names whose claim changed.
func (c *Core) claims(regs map[string]vip.Registration) (map[vip.NameKey]vip.Claim, map[vip.NameKey]bool) {
	out := map[vip.NameKey]vip.Claim{}
	var reqs []vip.ClaimRequest
	var reqKeys []vip.NameKey
	asked := map[vip.NameKey]bool{}
	for _, r := range regs {
		if !r.VIP.Named() {
			continue
		}
		nk := vip.NameKeyOf(&r)
		if _, done := out[nk]; done || asked[nk] {
			continue
		}
		old, kept := c.cfg.Claims.Get(nk)
		placed, isPlaced := c.model.Placed(nk)
		if kept && (!isPlaced || placed == old.Addr) {
			out[nk] = old
			continue
		}
		asked[nk] = true
		reqs = append(reqs, vip.ClaimRequest{Spec: r.VIP, Framework: r.Framework, V6: nk.V6})
		reqKeys = append(reqKeys, nk)
	}
	if len(reqs) == 0 {
		return out, nil
	}
	// A claim's time travels through gossip as an instant: no monotonic
	// reading, no zone, so that what comes back compares equal.
	now := time.Unix(0, c.cfg.Now().UnixNano()).UTC()
	got, errs := c.model.ProposeClaims(reqs, now)
	changed := map[vip.NameKey]bool{}
	keep := map[vip.NameKey]vip.Claim{}
	for i, nk := range reqKeys {
		if errs[i] != nil {
			c.log.WithError(errs[i]).WithFields(logrus.Fields{"vip": reqs[i].Spec.String(), "reason": "no address"}).
				Warn("backend published without an address claim")
			out[nk] = vip.Claim{}
			continue
		}
		out[nk] = got[i]
		keep[nk] = got[i]
		if old, ok := c.cfg.Claims.Get(nk); !ok || old.Addr != got[i].Addr || !old.Since.Equal(got[i].Since) {
			changed[nk] = true
		}
	}
	if err := c.cfg.Claims.PutMany(keep); err != nil {
		c.log.WithError(err).Warn("cannot keep the VIP address claims across restarts")
	}
	return out, changed
}

// rebuild applies what changed in the cluster state to the model and hands
// the derived table on.
func (c *Core) rebuild(now time.Time) {
	if !c.merged.Load() {
		ok, why := true, ""
		if c.cfg.StateMerged != nil {
			ok, why = c.cfg.StateMerged()
		}
		if !ok {
			c.log.WithField("reason", why).Debug("cluster state not merged yet; the kernel is left as it is")
			return
		}
		c.merged.Store(true)
		c.log.Info("cluster state merged; programming the data plane")
	}
	vers := c.versions() // before the changes: the table holds at least these
	deltas := c.cluster.TakeChanges()
	c.model.Apply(deltas)
	t := c.model.Table()
	old := c.table.Swap(t)
	first := !c.built.Swap(true)
	if t == old && !first {
		c.sameTable(t, vers)
		return
	}
	built := c.cfg.Now()
	if c.cfg.Observe != nil {
		c.cfg.Observe(StageTable, built.Sub(now))
	}
	changed, _ := t.ChangedSince(old)
	c.logTableChange(old, t, changed)
	// Names whose VIPs changed may have moved: re-decide this node's
	// claims for them.
	c.markNames(old, t, changed)
	c.mu.Lock()
	c.pending = append(c.pending, pendingTable{t: t, vers: vers, since: now, built: built})
	c.mu.Unlock()
	if c.cfg.Plane != nil {
		c.cfg.Plane.Update(t)
	} else {
		c.Programmed(t)
	}
}

// logTableChange says what a new table changed: counts and a few names.
func (c *Core) logTableChange(old, t *vip.Table, changed []vip.ServiceKey) {
	const show = 3
	var names []string
	for _, k := range changed {
		if len(names) == show {
			break
		}
		if v, ok := t.Find(k); ok {
			names = append(names, v.Label)
		} else if v, ok := old.Find(k); ok {
			names = append(names, v.Label+" (gone)")
		}
	}
	f := logrus.Fields{"vips": len(t.VIPs), "changed": len(changed), "errors": len(t.Errors)}
	if len(names) > 0 {
		f["vip"] = strings.Join(names, ", ")
	}
	c.log.WithFields(f).Info("desired table changed")
	if len(t.Errors) != len(old.Errors) {
		for _, e := range t.Errors {
			c.log.WithField("reason", e).Warn("VIP left out of the table")
		}
	}
}

// markNames marks this node's keys of the named VIPs at the changed keys.
func (c *Core) markNames(old, t *vip.Table, changed []vip.ServiceKey) {
	if len(c.names) == 0 {
		return
	}
	var keys []string
	for _, k := range changed {
		for _, tab := range []*vip.Table{old, t} {
			v, ok := tab.Find(k)
			if !ok || v.Name == "" {
				continue
			}
			nk := vip.NameKey{Framework: v.Framework, Name: strings.ToLower(v.Name), V6: v.Addr.Is6()}
			for lk := range c.names[nk] {
				keys = append(keys, lk)
			}
		}
	}
	if len(keys) == 0 {
		return
	}
	c.mu.Lock()
	for _, k := range keys {
		c.markLocked(k)
	}
	c.mu.Unlock()
}

// Programmed is told by the data plane what it has programmed; DNS then
// answers exactly that. It never blocks: it may be called from the data
// plane's sync goroutine.
func (c *Core) Programmed(t *vip.Table) {
	now := c.cfg.Now()
	c.mu.Lock()
	var done *pendingTable
	for i := range c.pending {
		if c.pending[i].t == t {
			p := c.pending[i]
			done = &p
			// The tables before t were merged into it by the plane.
			if i > 0 {
				done.since = c.pending[0].since
			}
			c.pending = append(c.pending[:0], c.pending[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	if done != nil && done.vers != nil && c.cfg.OnApplied != nil {
		c.cfg.OnApplied(done.vers)
	}
	if done != nil {
		c.latency.Store(int64(now.Sub(done.since)))
		if c.cfg.Observe != nil {
			c.cfg.Observe(StageKernel, now.Sub(done.built))
		}
	}
	c.programmed.Store(t)
	c.synced.Store(true)
	item := programmedTable{t: t, at: now}
	if done != nil {
		item.since = done.since
	}
	// Replace any table DNS has not taken yet: only the newest matters,
	// and it carries the older one's changes.
	for {
		select {
		case c.toDNS <- item:
			return
		default:
		}
		select {
		case old := <-c.toDNS:
			if !old.since.IsZero() && (item.since.IsZero() || old.since.Before(item.since)) {
				item.since = old.since
			}
		default:
		}
	}
}

// programmedTable is a table the data plane reported, on its way to DNS.
type programmedTable struct {
	t     *vip.Table
	at    time.Time // when the data plane reported it
	since time.Time // when the oldest change it carries reached this node; zero if unknown
}

// feedDNS hands DNS each newest programmed table.
func (c *Core) feedDNS(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case item := <-c.toDNS:
			c.cfg.DNS.Update(item.t)
			if c.cfg.Observe != nil {
				now := c.cfg.Now()
				c.cfg.Observe(StageDNS, now.Sub(item.at))
				if !item.since.IsZero() {
					c.cfg.Observe(StageTotal, now.Sub(item.since))
				}
			}
		}
	}
}

// ProgrammingLatency is how long the last change of the cluster state took
// from reaching this node to being reported programmed.
func (c *Core) ProgrammingLatency() time.Duration { return time.Duration(c.latency.Load()) }

// Table is the desired table as last built.
func (c *Core) Table() *vip.Table { return c.table.Load() }

// ProgrammedTable is the table as the data plane last reported it.
func (c *Core) ProgrammedTable() *vip.Table { return c.programmed.Load() }

// Synced reports whether a table was built and the data plane reported a
// sync since.
func (c *Core) Synced() (bool, string) {
	if !c.built.Load() {
		if c.cfg.StateMerged != nil {
			if ok, why := c.cfg.StateMerged(); !ok {
				return false, why
			}
		}
		return false, "no table built yet"
	}
	if !c.synced.Load() {
		return false, "the kernel has not been synced yet"
	}
	return true, ""
}
