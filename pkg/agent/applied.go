package agent

import (
	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/vip"
)

// versionedCluster is a Cluster that says which record versions its state
// holds (*gossip.Cluster); with it, the Core tells OnApplied what each
// programmed table was built from.
type versionedCluster interface {
	Versions() map[string]gossip.Version
}

// versions returns the versions of the records in the cluster state, or
// nil when the cluster cannot say.
func (c *Core) versions() map[string]gossip.Version {
	if c.cfg.OnApplied == nil {
		return nil
	}
	if vc, ok := c.cluster.(versionedCluster); ok {
		return vc.Versions()
	}
	return nil
}

// sameTable handles a rebuild that left the table as it was while the
// record versions moved on (a change that alters no VIP): if the data
// plane already programmed that table, those versions are applied now;
// if the table is still on its way, it carries them.
func (c *Core) sameTable(t *vip.Table, vers map[string]gossip.Version) {
	if vers == nil {
		return
	}
	c.mu.Lock()
	for i := range c.pending {
		if c.pending[i].t == t {
			c.pending[i].vers = vers
			c.mu.Unlock()
			return
		}
	}
	c.mu.Unlock()
	if c.programmed.Load() == t {
		c.cfg.OnApplied(vers)
	}
}

// published1 ends a publication: the keys it took are in gossip (or
// marked again).
func (c *Core) published1() {
	c.mu.Lock()
	c.inflight = false
	c.mu.Unlock()
}

// Settled reports whether key's state in this node's sources (registered
// or not, and its health) is what gossip carries: not marked for the next
// publication, none in progress.
func (c *Core) Settled(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, marked := c.dirty[key]
	return !marked && !c.inflight
}

// LocalHealth is the health this node publishes for its backend key, and
// whether it has that backend.
func (c *Core) LocalHealth(key string) (vip.Health, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.locals[key]
	if e == nil {
		return "", false
	}
	if h, ok := c.fixed[key]; ok {
		return h, true
	}
	if l := e.effective(); l.Check.Kind != "" && !c.healthy[key] {
		return vip.Unhealthy, true
	}
	return vip.Healthy, true
}
