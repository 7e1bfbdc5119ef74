package agent

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// Cluster is the gossip layer as the agent uses it (*gossip.Cluster).
// Publish replaces this node's registrations; Changes signals, coalesced,
// that State may have changed.
type Cluster interface {
	Publish([]vip.Registration)
	State() vip.ClusterState
	Changes() <-chan struct{}
}

// TableSink takes a new table without blocking: the data plane
// (*ipvs.Reconciler) and DNS (*dns.Server).
type TableSink interface {
	Update(*vip.Table)
}

// HealthSource says which local backends with a health check are healthy:
// a key is missing until its first check has run.
type HealthSource interface {
	Healthy() map[string]bool
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
	Log         *logrus.Entry
	Now         func() time.Time
}

// Core is the agent's flow: local sources -> gossip -> vip.Build -> data plane
// -> DNS. Run owns the publishing and rebuilding; the other methods may be
// called from any goroutine.
type Core struct {
	cfg     CoreConfig
	cluster Cluster
	log     *logrus.Entry
	kick    chan struct{}
	// toDNS holds the newest programmed table not yet handed to DNS; a
	// zone rebuild can take long, so it runs on Run's DNS goroutine, never
	// on the data plane's.
	toDNS chan *vip.Table

	// mu guards api, dir, health, published and claimed.
	mu        sync.Mutex
	api       []source.Local // registrations made through the API
	dir       []source.Local // backends from the services directory
	health    HealthSource
	published []vip.Registration
	claimed   map[ClaimKey]bool // names published with a claim, last time

	table      atomic.Pointer[vip.Table] // desired, last built
	programmed atomic.Pointer[vip.Table] // as the data plane last reported
	merged     atomic.Bool               // the cluster state was merged (StateMerged held once)
	built      atomic.Bool               // a table was built from merged state
	synced     atomic.Bool               // the data plane reported a sync
	pendingAt  atomic.Int64              // unix ns when a changed table was handed on, 0 when none
	latency    atomic.Int64              // ns from a state change to the kernel, last seen
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
	c := &Core{cfg: cfg, cluster: cluster, log: cfg.Log.WithField("component", "agent"), kick: make(chan struct{}, 1), toDNS: make(chan *vip.Table, 1)}
	c.table.Store(&vip.Table{})
	c.programmed.Store(&vip.Table{})
	return c
}

// Run publishes this node's backends and rebuilds the table on every change,
// until ctx is done.
func (c *Core) Run(ctx context.Context) error {
	if c.cfg.DNS != nil {
		go c.feedDNS(ctx)
	}
	c.publish()
	c.rebuild()
	// Until the state is merged, look again often: the merge itself may
	// bring no change to signal.
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			c.publish()
		case <-c.cluster.Changes():
			c.rebuild()
		case <-poll.C:
			if c.merged.Load() {
				poll.Stop()
			} else {
				c.rebuild()
			}
		}
	}
}

// SetAPI replaces the backends registered through the API.
func (c *Core) SetAPI(l []source.Local) {
	c.mu.Lock()
	c.api = append([]source.Local(nil), l...)
	c.mu.Unlock()
	c.Kick()
}

// SetDir replaces the backends from the services directory.
func (c *Core) SetDir(l []source.Local) {
	c.mu.Lock()
	c.dir = append([]source.Local(nil), l...)
	c.mu.Unlock()
	c.Kick()
}

// SetHealth sets where health comes from.
func (c *Core) SetHealth(h HealthSource) {
	c.mu.Lock()
	c.health = h
	c.mu.Unlock()
	c.Kick()
}

// Kick asks Run to republish this node's backends (a source or a health
// state changed). It never blocks.
func (c *Core) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Locals returns this node's backends: the API's and the services
// directory's, sorted by key; a backend in both is the API's.
func (c *Core) Locals() []source.Local {
	c.mu.Lock()
	defer c.mu.Unlock()
	merged, _ := source.Merge(c.api, c.dir)
	return merged
}

// publish computes this node's registrations and hands them to gossip when
// they changed.
func (c *Core) publish() {
	locals := c.Locals()
	c.mu.Lock()
	h := c.health
	c.mu.Unlock()
	var healthy map[string]bool
	if h != nil {
		healthy = h.Healthy()
	}
	state := c.cluster.State()
	regs := make([]vip.Registration, 0, len(locals))
	used := map[ClaimKey]bool{}
	type claimed struct {
		claim vip.Claim
		err   error
	}
	claims := map[ClaimKey]claimed{} // one decision per name and family
	var placed map[ClaimKey]netip.Addr
	for _, l := range locals {
		health := vip.Healthy
		if l.Check.Kind != "" && !healthy[l.Key()] {
			health = vip.Unhealthy
		}
		r := l.Registration(health)
		if r.VIP.Named() {
			key := ClaimKeyOf(r)
			if placed == nil {
				placed = placedNames(c.table.Load())
			}
			cl, ok := claims[key]
			if !ok {
				cl.claim, cl.err = c.claim(state, placed, r, key)
				claims[key] = cl
			}
			claim, err := cl.claim, cl.err
			if err != nil {
				c.log.WithError(err).WithFields(logrus.Fields{"vip": r.VIP.String(), "backend": r.Backend.String(), "reason": "no address"}).
					Warn("backend published without an address claim")
			} else {
				r.Claim = claim
				used[key] = true
			}
		}
		regs = append(regs, r)
	}
	// Forget the claims of names this node stopped publishing. Claims read
	// from disk that no source has asked for yet stay: the services
	// directory, say, is read after the first publish.
	c.mu.Lock()
	drop := map[ClaimKey]bool{}
	for k := range c.claimed {
		if !used[k] {
			drop[k] = true
		}
	}
	c.claimed = used
	c.mu.Unlock()
	if len(drop) > 0 {
		c.cfg.Claims.Forget(drop)
	}
	c.mu.Lock()
	same := reflect.DeepEqual(regs, c.published)
	if !same {
		c.published = regs
	}
	c.mu.Unlock()
	if same {
		return
	}
	c.log.WithField("backends", len(regs)).Info("publishing this node's backends")
	c.cluster.Publish(regs)
}

// claim picks the address claim this node publishes for a named VIP: the one
// the cluster already agrees on when the state holds the name; otherwise the
// claim this node made before (kept across restarts); otherwise a new one.
func (c *Core) claim(state vip.ClusterState, placed map[ClaimKey]netip.Addr, r vip.Registration, key ClaimKey) (vip.Claim, error) {
	old, kept := c.cfg.Claims.Get(key)
	// The usual case, and the cheap one: the table already gives the name
	// the address this node claimed.
	if kept && placed[key] == old.Addr {
		return old, nil
	}
	if !stateHolds(state, key) {
		if kept {
			return old, nil
		}
	}
	// A claim's time travels through gossip as an instant: no monotonic
	// reading, no zone, so that what comes back compares equal.
	now := time.Unix(0, c.cfg.Now().UnixNano()).UTC()
	claim, err := vip.ProposeClaim(c.cfg.VIP, state, r.VIP, r.Framework, key.V6, now)
	if err != nil {
		return vip.Claim{}, err
	}
	if err := c.cfg.Claims.Put(key, claim); err != nil {
		c.log.WithError(err).WithField("vip", r.VIP.String()).Warn("cannot keep the VIP address claim across restarts")
	}
	return claim, nil
}

// placedNames maps each named VIP of t to its address.
func placedNames(t *vip.Table) map[ClaimKey]netip.Addr {
	out := make(map[ClaimKey]netip.Addr, len(t.VIPs))
	for _, v := range t.VIPs {
		if v.Name != "" {
			out[ClaimKey{Framework: v.Framework, Name: strings.ToLower(v.Name), V6: v.Addr.Is6()}] = v.Addr
		}
	}
	return out
}

func stateHolds(state vip.ClusterState, key ClaimKey) bool {
	for _, n := range state {
		for _, r := range n.Backends {
			if r.VIP.Named() && ClaimKeyOf(r) == key && r.Claim.Addr.IsValid() {
				return true
			}
		}
	}
	return false
}

// rebuild builds the desired table from the merged cluster state and hands
// it on; then republishes, since the state may have moved a claim.
func (c *Core) rebuild() {
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
	start := c.cfg.Now()
	t := vip.Build(c.cfg.VIP, c.cluster.State())
	old := c.table.Swap(t)
	c.built.Store(true)
	if !old.Equal(t) {
		c.pendingAt.CompareAndSwap(0, start.UnixNano())
		c.log.WithFields(logrus.Fields{"vips": len(t.VIPs), "errors": len(t.Errors), "took": c.cfg.Now().Sub(start).String()}).Info("desired table changed")
		for _, e := range t.Errors {
			c.log.WithField("reason", e).Warn("VIP left out of the table")
		}
	}
	if c.cfg.Plane != nil {
		c.cfg.Plane.Update(t)
	} else {
		c.Programmed(t)
	}
	c.publish()
}

// Programmed is told by the data plane what it has programmed; DNS then
// answers exactly that. It never blocks: it may be called from the data
// plane's sync goroutine.
func (c *Core) Programmed(t *vip.Table) {
	if at := c.pendingAt.Swap(0); at != 0 {
		c.latency.Store(c.cfg.Now().UnixNano() - at)
	}
	c.programmed.Store(t)
	c.synced.Store(true)
	// Replace any table DNS has not taken yet: only the newest matters.
	for {
		select {
		case c.toDNS <- t:
			return
		default:
		}
		select {
		case <-c.toDNS:
		default:
		}
	}
}

// feedDNS hands DNS each newest programmed table.
func (c *Core) feedDNS(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-c.toDNS:
			c.cfg.DNS.Update(t)
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
