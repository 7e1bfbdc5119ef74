package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/pkg/source/docker"
	"github.com/l4lb/l4lb/vip"
)

// localNode is this node's side of the agent: it merges the local sources
// (the API's registration store, the services directory, Docker) into the
// core, keeps the health checker's targets in step with them, reloads the
// gossip keys and the services directory, says whether the node is ready,
// and gives the API and the stats page their views (it is the api.Agent).
type localNode struct {
	core    *Core
	store   *source.Store
	cluster *gossip.Cluster
	plane   DataPlane // nil with --dataplane none
	checker *health.Checker
	log     *logrus.Entry
	// seeded says whether a seed was ever reached (nil: no seeds).
	seeded func() (bool, string)
	// dir and docker are the other sources, to name where a backend comes
	// from; nil when not configured.
	dir    *source.Dir
	docker *docker.Source
	// leave receives (once) when an operator asks the agent to leave the
	// cluster and stop.
	leave chan struct{}
	// public are this node's public addresses (--public-address).
	public []netip.Addr
	// dnsServing, when set, says whether the DNS server listens yet; ready
	// waits for it (nil: not part of readiness).
	dnsServing *atomic.Bool
}

var _ api.Agent = (*localNode)(nil)

// checkBackends gives the checker the health checks of these backends of
// this node (a backend without a check has its check, if any, removed) and
// drops the checks of the removed keys. O(change).
func (a *localNode) checkBackends(set []source.Local, removed []string) {
	var add []health.Target
	for _, l := range set {
		if t, ok := l.HealthTarget(); ok {
			add = append(add, t)
		} else {
			removed = append(removed, l.Key())
		}
	}
	if err := a.checker.Update(add, removed); err != nil {
		a.log.WithError(err).Warn("health checks not updated")
	}
	a.core.ForgetHealth(removed)
}

// storeChanged hands the core a change of the API's registrations, as the
// store makes it durable: in log order, so that concurrent changes of one
// key reach the core in the order they took effect, without a lock held
// across the fsync (concurrent registrations share one).
func (a *localNode) storeChanged(key string, l *source.Local) {
	if l == nil {
		a.update(SourceAPI, nil, []string{key})
		return
	}
	a.update(SourceAPI, []source.Local{*l}, nil)
}

// update hands the core and the checker one source's change.
func (a *localNode) update(src Source, set []source.Local, removed []string) {
	a.core.Update(src, set, removed)
	a.recheck(keysOf(set, removed))
}

// updateDocker applies a change of the Docker source: its backends and
// Docker's health verdicts (a container with a HEALTHCHECK is healthy only
// while Docker says so).
func (a *localNode) updateDocker(set []source.Local, removed []string) {
	fixed := map[string]vip.Health{}
	var unfixed []string
	for _, l := range set {
		k := l.Key()
		if b, ok := a.docker.Backend(k); ok && b.Health != "" {
			fixed[k] = b.Health
		} else {
			unfixed = append(unfixed, k)
		}
	}
	a.core.SetSourceHealth(fixed, append(unfixed, removed...))
	a.update(SourceDocker, set, removed)
}

// replace makes set the whole of what src registers.
func (a *localNode) replace(src Source, set []source.Local) {
	removed := a.core.Replace(src, set)
	a.recheck(keysOf(set, removed))
}

// recheck sets the health checks of keys to those of the backends the merge
// rule publishes for them (a source that another shadows does not bring its
// check).
func (a *localNode) recheck(keys []string) {
	var set []source.Local
	var removed []string
	for _, k := range keys {
		if l, _, ok := a.core.Local(k); ok {
			set = append(set, l)
		} else {
			removed = append(removed, k)
		}
	}
	a.checkBackends(set, removed)
}

func keysOf(set []source.Local, removed []string) []string {
	keys := make([]string, 0, len(set)+len(removed))
	for _, l := range set {
		keys = append(keys, l.Key())
	}
	return append(keys, removed...)
}

func (a *localNode) Register(e source.Entry) (bool, string, error) {
	l, err := e.Parse()
	if err != nil {
		return false, "", &api.InvalidError{Err: err}
	}
	if !l.VIP.Named() {
		key := vip.ServiceKey{Addr: l.VIP.Addr, Port: l.VIP.Port, Protocol: l.VIP.Protocol}
		if v, ok := a.core.Table().Find(key); ok && v.Name != "" {
			return false, "", &api.InvalidError{Err: fmt.Errorf("vip %s: the named VIP %s (%s) holds %s: an IP VIP on it would be left out", l.VIP, v.Name, v.Framework, l.VIP)}
		}
	}
	// A backend that another source publishes is that source's.
	if _, src, ok := a.core.Local(l.Key()); ok && src != SourceAPI {
		if err := a.ownedBy(src, l.Key()); err != nil {
			return false, l.Key(), &api.InvalidError{Err: err}
		}
	}
	if _, held := a.store.Get(l.Key()); !held {
		if err := a.core.CanAdd([]source.Local{l}); err != nil {
			return false, l.Key(), &api.FullError{Err: err}
		}
	}
	// The store tells the core (storeChanged), in log order.
	created, err := a.store.Put(l)
	if err != nil {
		return false, l.Key(), err
	}
	a.log.WithFields(logrus.Fields{"vip": l.VIP.String(), "backend": l.Backend.String(), "created": created}).Info("backend registered")
	return created, l.Key(), nil
}

func (a *localNode) Deregister(e source.Entry) (bool, string, error) {
	l, err := e.Parse()
	if err != nil {
		return false, "", &api.InvalidError{Err: err}
	}
	removed, err := a.store.Delete(l.Key())
	if err != nil {
		return false, l.Key(), err
	}
	if !removed {
		// Not the API's: say where it comes from, if another source has it.
		if _, src, ok := a.core.Local(l.Key()); ok && src != SourceAPI {
			return false, l.Key(), &api.InvalidError{Err: a.ownedBy(src, l.Key())}
		}
	}
	if removed {
		a.log.WithFields(logrus.Fields{"vip": l.VIP.String(), "backend": l.Backend.String()}).Info("backend deregistered; it drains on every node")
	}
	return removed, l.Key(), nil
}

// ownedBy says which source other than the API publishes key, so that an
// operator is told where to change it.
func (a *localNode) ownedBy(src Source, key string) error {
	switch src {
	case SourceDocker:
		if a.docker != nil {
			if err := a.docker.Owned(key); err != nil {
				return err
			}
		}
		return fmt.Errorf("backend %s is published by a Docker container: stop the container or remove its label instead", key)
	case SourceDir:
		if a.dir != nil {
			if files := a.dir.Files(key); len(files) > 0 {
				return fmt.Errorf("backend %s comes from the services directory, file %s: edit or remove the file instead", key, strings.Join(files, ", "))
			}
		}
		return fmt.Errorf("backend %s comes from the services directory: edit or remove its file instead", key)
	}
	return nil
}

// Leave asks Run to leave the cluster and stop. Asking again is harmless.
func (a *localNode) Leave() error {
	if a.leave == nil {
		return errors.New("this agent cannot leave through its API")
	}
	select {
	case a.leave <- struct{}{}:
	default:
	}
	a.log.Info("asked to leave the cluster for good")
	return nil
}

func (a *localNode) Ready() (bool, string) {
	if ok, why := a.core.Synced(); !ok {
		return false, why
	}
	if a.dnsServing != nil && !a.dnsServing.Load() {
		return false, "the DNS server does not listen yet"
	}
	if a.seeded != nil {
		if ok, why := a.seeded(); !ok {
			return false, why
		}
	}
	if err := a.core.PublishError(); err != nil {
		return false, "this node's backends are not all published: " + err.Error()
	}
	if p, ok := a.plane.(interface{ IPv6Disabled() string }); ok {
		return true, p.IPv6Disabled() // degraded: IPv4 serves
	}
	return true, ""
}

func (a *localNode) Members() api.Members {
	ms := a.cluster.Members()
	out := api.Members{Members: make([]api.Member, 0, len(ms))}
	for _, m := range ms {
		out.Members = append(out.Members, api.Member{Name: m.Name, Address: m.Addr.String(), State: string(m.State), Backends: m.Backends})
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].Name < out.Members[j].Name })
	return out
}

func (a *localNode) VIPs() api.VIPs {
	var conns map[vip.ServiceKey]map[netipAddrPort]ipvs.Conns
	if a.plane != nil {
		conns = a.plane.Connections()
	}
	v := vipsView(a.core.Table(), a.core.ProgrammedTable(), conns, a.public)
	a.enrich(&v, conns)
	if a.docker != nil {
		// Local errors: containers this node cannot publish, and why. The
		// table's errors are the table's: append to a copy.
		v.Errors = slices.Clip(v.Errors)
		st := a.docker.Stats()
		names := make([]string, 0, len(st.Problems))
		for n := range st.Problems {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			v.Errors = append(v.Errors, fmt.Sprintf("docker container %q on this node: %s", n, st.Problems[n]))
		}
		if !st.Connected && st.LastError != "" {
			v.Errors = append(v.Errors, "docker engine on this node: "+st.LastError)
		}
	}
	return v
}

// reload rereads the gossip key file and installs, switches to and removes
// keys so that the cluster keeps talking during a rotation.
func (a *localNode) reload(path string, dir *source.Dir) {
	if dir != nil {
		if set, changed := dir.Scan(); changed {
			a.replace(SourceDir, set)
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
