package agent

import (
	"bytes"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// apiAgent is the agent as the API sees it.
type apiAgent struct {
	core    *Core
	store   *source.Store
	cluster *gossip.Cluster
	plane   *ipvs.Reconciler // nil with --dataplane none
	checker *health.Checker
	log     *logrus.Entry

	// regMu serialises Register and Deregister, so that the store's lists
	// reach the core in the order of the changes.
	regMu sync.Mutex
	// checksMu serialises refreshChecks.
	checksMu sync.Mutex
}

var _ api.Agent = (*apiAgent)(nil)

// checkerHealth adapts the health checker to HealthSource.
type checkerHealth struct{ c *health.Checker }

func (h checkerHealth) Healthy() map[string]bool {
	status := h.c.Status()
	out := make(map[string]bool, len(status))
	for k, s := range status {
		if s.Checked {
			out[k] = s.Healthy
		}
	}
	return out
}

// refreshChecks gives the checker the health checks of this node's
// backends.
func (a *apiAgent) refreshChecks() {
	a.checksMu.Lock()
	defer a.checksMu.Unlock()
	var targets []health.Target
	for _, l := range a.core.Locals() {
		if t, ok := l.HealthTarget(); ok {
			targets = append(targets, t)
		}
	}
	if err := a.checker.Set(targets); err != nil {
		a.log.WithError(err).Warn("health checks not updated")
	}
	a.core.Kick()
}

func (a *apiAgent) Register(e source.Entry) (bool, string, error) {
	l, err := e.Parse()
	if err != nil {
		return false, "", &api.InvalidError{Err: err}
	}
	a.regMu.Lock()
	defer a.regMu.Unlock()
	created, err := a.store.Put(l)
	if err != nil {
		return false, l.Key(), err
	}
	a.core.SetAPI(a.store.List())
	a.refreshChecks()
	a.log.WithFields(logrus.Fields{"vip": l.VIP.String(), "backend": l.Backend.String(), "created": created}).Info("backend registered")
	return created, l.Key(), nil
}

func (a *apiAgent) Deregister(e source.Entry) (bool, string, error) {
	l, err := e.Parse()
	if err != nil {
		return false, "", &api.InvalidError{Err: err}
	}
	a.regMu.Lock()
	defer a.regMu.Unlock()
	removed, err := a.store.Delete(l.Key())
	if err != nil {
		return false, l.Key(), err
	}
	if removed {
		a.core.SetAPI(a.store.List())
		a.refreshChecks()
		a.log.WithFields(logrus.Fields{"vip": l.VIP.String(), "backend": l.Backend.String()}).Info("backend deregistered; it drains on every node")
	}
	return removed, l.Key(), nil
}

func (a *apiAgent) Ready() (bool, string) {
	if ok, why := a.core.Synced(); !ok {
		return false, why
	}
	return true, ""
}

func (a *apiAgent) Members() api.Members {
	ms := a.cluster.Members()
	out := api.Members{Members: make([]api.Member, 0, len(ms))}
	for _, m := range ms {
		out.Members = append(out.Members, api.Member{Name: m.Name, Address: m.Addr.String(), State: string(m.State), Backends: m.Backends})
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].Name < out.Members[j].Name })
	return out
}

func (a *apiAgent) VIPs() api.VIPs {
	var conns map[vip.ServiceKey]map[netipAddrPort]ipvs.Conns
	if a.plane != nil {
		conns = a.plane.Connections()
	}
	return vipsView(a.core.Table(), a.core.ProgrammedTable(), conns)
}

// reload rereads the gossip key file and installs, switches to and removes
// keys so that the cluster keeps talking during a rotation.
func (a *apiAgent) reload(path string, dir *source.Dir) {
	if dir != nil {
		if set, changed := dir.Scan(); changed {
			a.core.SetDir(set)
			a.refreshChecks()
		}
	}
	if path == "" {
		return
	}
	keys, err := ReadKeyFile(path)
	if err != nil {
		a.log.WithError(err).Error("reload: gossip keys unchanged")
		return
	}
	for _, k := range keys {
		if err := a.cluster.InstallKey(k); err != nil {
			a.log.WithError(err).Error("reload: cannot install a gossip key")
			return
		}
	}
	if err := a.cluster.UseKey(keys[0]); err != nil {
		a.log.WithError(err).Error("reload: cannot switch the primary gossip key")
		return
	}
	for _, old := range a.cluster.Keys() {
		keep := false
		for _, k := range keys {
			keep = keep || bytes.Equal(k, old)
		}
		if !keep {
			if err := a.cluster.RemoveKey(old); err != nil {
				a.log.WithError(err).Warn("reload: cannot remove an old gossip key")
			}
		}
	}
	a.log.WithField("keys", len(keys)).Info("gossip keys reloaded")
}
