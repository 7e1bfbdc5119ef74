package ipvs

import (
	"net/netip"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// Draining reads, now, the connection counts of the backends held at
// weight 0 after they left the table, and only those: it reads one service
// per service with draining backends, so its cost follows what drains,
// not the table. For the agent's report of what this node applied.
func (r *Reconciler) Draining() map[vip.ServiceKey]map[netip.AddrPort]Conns {
	r.mu.Lock()
	draining := r.drainingPub
	r.mu.Unlock()
	out := make(map[vip.ServiceKey]map[netip.AddrPort]Conns, len(draining))
	for k, ds := range draining {
		dests, err := r.kernel.Destinations(Service{ServiceKey: k})
		if err != nil {
			r.log.WithFields(logrus.Fields{"vip": keyString(k), "reason": err.Error()}).Warn("cannot read the connections of draining backends")
			continue
		}
		m := make(map[netip.AddrPort]Conns, len(ds))
		for _, d := range dests {
			if ds[d.Addr] {
				m[d.Addr] = Conns{Active: d.ActiveConns, Inactive: d.InactiveConns, Weight: d.Weight, Draining: true}
			}
		}
		out[k] = m
	}
	return out
}
