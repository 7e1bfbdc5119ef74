package agent

import (
	"net/netip"

	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/ipvs/public"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/vip"
)

type netipAddrPort = netip.AddrPort

// vipsView is the API's view of the desired table, marked with what is
// programmed and with the kernel's connection counts (nil when unknown).
func vipsView(desired, programmed *vip.Table, conns map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns, publicAddrs []netip.Addr) api.VIPs {
	out := api.VIPs{VIPs: make([]api.VIP, 0, len(desired.VIPs)), Errors: desired.Errors}
	published := public.Published(desired, publicAddrs)
	for _, v := range desired.VIPs {
		_, prog := programmed.Find(v.ServiceKey)
		x := api.VIP{
			Label: v.Label, Name: v.Name, Framework: v.Framework, Names: v.Names,
			Address: v.Addr.String(), Port: v.Port, Protocol: string(v.Protocol),
			Scheduler: v.Scheduler, Persistence: v.Persistence, Programmed: prog,
			Backends: make([]api.Backend, 0, len(v.Backends)), Conflicts: v.Conflicts,
		}
		x.PublicPort = v.PublicPort
		for _, ap := range published[v.ServiceKey] {
			x.PublishedAt = append(x.PublishedAt, ap.String())
		}
		for _, b := range v.Backends {
			c := conns[v.ServiceKey][b.Addr]
			x.Backends = append(x.Backends, api.Backend{
				Address: b.Addr.String(), Node: b.Node, Weight: b.Weight, Health: string(b.Health),
				ActiveConns: int(c.Active), InactConns: int(c.Inactive),
			})
		}
		// Unhealthy backends are not in the kernel; people see them, down.
		for _, b := range v.Down {
			x.Backends = append(x.Backends, api.Backend{
				Address: b.Addr.String(), Node: b.Node, Weight: 0, Health: string(b.Health),
				State: api.StateDown, Reason: "failing its health check on " + b.Node,
			})
		}
		out.VIPs = append(out.VIPs, x)
	}
	return out
}
