package nftables

import (
	"net/netip"

	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/vip"
)

// Draining reads conntrack now for the services with backends that take
// no new connections while some remain, and returns those backends' counts
// (Active: established TCP; Inactive: the rest). Its cost follows what
// drains, not the table.
func (r *Reconciler) Draining() map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns {
	r.mu.Lock()
	draining := r.drainingPub
	r.mu.Unlock()
	out := make(map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns, len(draining))
	if len(draining) == 0 {
		return out
	}
	svcs := make(map[vip.ServiceKey]bool, len(draining))
	for k, ds := range draining {
		svcs[k] = true
		m := make(map[netip.AddrPort]ipvs.Conns, len(ds))
		for a := range ds {
			m[a] = ipvs.Conns{Draining: true}
		}
		out[k] = m
	}
	if r.ct == nil {
		return out
	}
	flows, err := r.ct.Flows(svcs)
	if err != nil {
		r.log.WithField("reason", err.Error()).Warn("cannot read the connections of draining backends")
		return out
	}
	for _, f := range flows {
		m := out[f.Service]
		c, ok := m[f.Backend]
		if !ok {
			continue
		}
		if f.Established {
			c.Active++
		} else {
			c.Inactive++
		}
		m[f.Backend] = c
	}
	return out
}
