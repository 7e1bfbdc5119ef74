package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/vip"
)

// drainReader is a data plane that reads the connections of its draining
// backends alone (both planes).
type drainReader interface {
	Draining() map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns
}

// appliedReporter tells the cluster what this node's kernel programmed:
// the record versions of the last programmed table, and the draining
// backends with their connections, read every drainReportInterval while
// any drain (a report equal to the last sends nothing).
type appliedReporter struct {
	cluster *gossip.Cluster
	plane   drainReader // nil: no data plane, or one that cannot say
	kick    chan struct{}

	mu   sync.Mutex // guards vers
	vers map[string]gossip.Version
}

const drainReportInterval = time.Second

func newAppliedReporter(cluster *gossip.Cluster, plane DataPlane) *appliedReporter {
	r := &appliedReporter{cluster: cluster, kick: make(chan struct{}, 1)}
	if d, ok := plane.(drainReader); ok {
		r.plane = d
	}
	return r
}

// applied is Core's OnApplied: it never blocks.
func (r *appliedReporter) applied(v map[string]gossip.Version) {
	r.mu.Lock()
	r.vers = v
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *appliedReporter) run(ctx context.Context) {
	t := time.NewTicker(drainReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		r.mu.Lock()
		v := r.vers
		r.mu.Unlock()
		if v == nil {
			continue // nothing programmed yet
		}
		var drains []gossip.Drain
		if r.plane != nil {
			for k, m := range r.plane.Draining() {
				for a, c := range m {
					drains = append(drains, gossip.Drain{Service: k, Backend: a, Active: c.Active, Inactive: c.Inactive})
				}
			}
		}
		r.cluster.ReportApplied(v, drains)
	}
}

// Progress says how far a registration (api.WaitRegistered) or a
// deregistration (api.WaitDrained) of this node's backend e has reached:
// the version of this node's record that carries it, once published, and
// which live nodes report a programmed table built from that version or a
// later one; for a deregistration, the established connections the nodes
// that hold it draining still count (matched by backend, VIP port and
// protocol).
func (a *localNode) Progress(e source.Entry, want string) (api.Progress, error) {
	l, err := e.Parse()
	if err != nil {
		return api.Progress{}, &api.InvalidError{Err: err}
	}
	key := l.Key()
	p := api.Progress{Key: key, For: want, Applied: []string{}}
	h, have := a.core.LocalHealth(key)
	switch {
	case want == api.WaitRegistered && !have:
		return p, &api.InvalidError{Err: fmt.Errorf("backend %s is not registered on this node", key)}
	case want == api.WaitDrained && have:
		return p, &api.InvalidError{Err: fmt.Errorf("backend %s is still registered on this node: deregister it first", key)}
	case !a.core.Settled(key):
		p.Reason = "the change is not yet published to the cluster"
		return p, nil
	case want == api.WaitRegistered && h != vip.Healthy:
		p.Reason = "the backend has not passed its health check yet"
		return p, nil
	}
	target := a.cluster.SelfVersion()
	p.Version = fmt.Sprintf("%d.%d", target.Generation, target.Seq)
	self := a.core.cfg.Node
	reports := map[string]gossip.Applied{}
	for _, r := range a.cluster.AppliedNow() {
		reports[r.Node] = r
	}
	live := []string{self}
	for _, m := range a.cluster.Members() {
		if m.Name != self && (m.State == gossip.MemberAlive || m.State == gossip.MemberSuspect) {
			live = append(live, m.Name)
		}
	}
	sort.Strings(live)
	p.Live = len(live)
	for _, n := range live {
		r, ok := reports[n]
		if v, has := r.Versions[self]; !ok || !has || v.Less(target) {
			p.Pending = append(p.Pending, n)
			continue
		}
		p.Applied = append(p.Applied, n)
		if want != api.WaitDrained {
			continue
		}
		for _, d := range r.Draining {
			if d.Backend == l.Backend && d.Service.Port == l.VIP.Port && d.Service.Protocol == l.VIP.Protocol {
				p.Active += int(d.Active)
				p.Inactive += int(d.Inactive)
				if d.Active > 0 {
					if p.ByNode == nil {
						p.ByNode = map[string]int{}
					}
					p.ByNode[n] += int(d.Active)
				}
			}
		}
	}
	switch {
	case len(p.Pending) > 0:
		what := "it"
		if want == api.WaitDrained {
			what = "its removal" // they still send it new connections
		}
		p.Reason = fmt.Sprintf("%d of %d live nodes have not programmed %s yet", len(p.Pending), p.Live, what)
	case p.Active > 0:
		p.Reason = fmt.Sprintf("%d connections remain on %d nodes", p.Active, len(p.ByNode))
	default:
		p.Done = true
	}
	return p, nil
}
