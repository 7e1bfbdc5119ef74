package agent

import (
	"net/netip"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/vip"
)

// enrich adds to v what /v1/vips and the stats page show beyond the table:
// each backend's state (up, draining, down, and why) and the kernel's
// counters, summed over the VIP and its public ports on this node; the backends that left the table and still drain here; and
// per VIP, the live nodes that have programmed it: those whose last
// report (gossip.Applied) holds, for every node publishing a backend of
// the VIP, that node's record at the version this node holds or later.
// O(VIPs × backends + nodes²).
func (a *localNode) enrich(v *api.VIPs, conns map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns) {
	live, upToDate := a.appliedView()
	for i := range v.VIPs {
		x := &v.VIPs[i]
		addr, err := netip.ParseAddr(x.Address)
		if err != nil {
			continue
		}
		keys := []vip.ServiceKey{{Addr: addr, Port: x.Port, Protocol: vip.Protocol(x.Protocol)}}
		for _, p := range x.PublishedAt {
			if ap, err := netip.ParseAddrPort(p); err == nil {
				keys = append(keys, vip.ServiceKey{Addr: ap.Addr(), Port: ap.Port(), Protocol: vip.Protocol(x.Protocol)})
			}
		}
		cs := mergeConns(conns, keys)
		origins := map[string]bool{}
		inTable := map[string]bool{}
		var sum *api.Traffic
		for j := range x.Backends {
			b := &x.Backends[j]
			origins[b.Node] = true
			inTable[b.Address] = true
			ap, _ := netip.ParseAddrPort(b.Address)
			c, seen := cs[ap]
			b.ActiveConns, b.InactConns = int(c.Active), int(c.Inactive)
			switch {
			case b.Health == string(vip.Unhealthy):
				b.State, b.Reason = api.StateDown, "failing its health check on "+b.Node
			case b.Health == string(vip.Draining):
				b.State, b.Reason = api.StateDraining, "withdrawn by "+b.Node+" (deregistered or stopping)"
			case b.Weight == 0:
				b.State, b.Reason = api.StateDraining, "weight 0: takes no new connections"
			case c.Draining:
				b.State, b.Reason = api.StateDraining, "draining"
			default:
				b.State = api.StateUp
			}
			if seen && c.Traffic != nil {
				b.Traffic = trafficOf(c.Traffic)
				if sum == nil {
					sum = &api.Traffic{}
				}
				sum.Add(*b.Traffic)
			}
		}
		// Backends that left the table and drain in this node's kernel.
		var gone []netip.AddrPort
		for ap, c := range cs {
			if c.Draining && !inTable[ap.String()] {
				gone = append(gone, ap)
			}
		}
		sort.Slice(gone, func(i, j int) bool { return gone[i].Compare(gone[j]) < 0 })
		for _, ap := range gone {
			c := cs[ap]
			b := api.Backend{Address: ap.String(), ActiveConns: int(c.Active), InactConns: int(c.Inactive),
				State: api.StateDraining, Reason: "deregistered: drains until its connections end"}
			if c.Traffic != nil {
				b.Traffic = trafficOf(c.Traffic)
				if sum == nil {
					sum = &api.Traffic{}
				}
				sum.Add(*b.Traffic)
			}
			x.Backends = append(x.Backends, b)
		}
		x.Traffic = sum
		x.LiveNodes = len(live)
		x.ProgrammedOn = []string{}
		for _, n := range live {
			ok := len(origins) > 0 && upToDate[n] != nil
			for o := range origins {
				ok = ok && upToDate[n](o)
			}
			if ok {
				x.ProgrammedOn = append(x.ProgrammedOn, n)
			}
		}
	}
}

// appliedView returns the live nodes, sorted, and for those that
// reported, whether their kernel holds an origin's record at the version
// this node holds or later.
func (a *localNode) appliedView() ([]string, map[string]func(string) bool) {
	self := a.core.cfg.Node
	live := []string{self}
	for _, m := range a.cluster.Members() {
		if m.Name != self && (m.State == gossip.MemberAlive || m.State == gossip.MemberSuspect) {
			live = append(live, m.Name)
		}
	}
	sort.Strings(live)
	held := a.cluster.Versions()
	up := map[string]func(string) bool{}
	for _, r := range a.cluster.Applied() {
		vers := r.Versions
		up[r.Node] = func(origin string) bool {
			v, ok := vers[origin]
			return ok && !v.Less(held[origin])
		}
	}
	return live, up
}

// mergeConns sums, per backend, the counts of the services at keys: a
// VIP's own and those of its public ports on this node.
func mergeConns(conns map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns, keys []vip.ServiceKey) map[netip.AddrPort]ipvs.Conns {
	if len(keys) == 1 {
		return conns[keys[0]]
	}
	out := map[netip.AddrPort]ipvs.Conns{}
	for _, k := range keys {
		for a, c := range conns[k] {
			m := out[a]
			m.Active += c.Active
			m.Inactive += c.Inactive
			m.Weight = max(m.Weight, c.Weight)
			m.Draining = m.Draining || c.Draining
			if c.Traffic != nil {
				t := ipvs.Traffic{}
				if m.Traffic != nil {
					t = *m.Traffic
				}
				t.Conns += c.Traffic.Conns
				t.InPkts += c.Traffic.InPkts
				t.OutPkts += c.Traffic.OutPkts
				t.InBytes += c.Traffic.InBytes
				t.OutBytes += c.Traffic.OutBytes
				t.CPS += c.Traffic.CPS
				t.InPPS += c.Traffic.InPPS
				t.OutPPS += c.Traffic.OutPPS
				t.InBPS += c.Traffic.InBPS
				t.OutBPS += c.Traffic.OutBPS
				m.Traffic = &t
			}
			out[a] = m
		}
	}
	return out
}

func trafficOf(t *ipvs.Traffic) *api.Traffic {
	return &api.Traffic{Conns: t.Conns, InPkts: t.InPkts, OutPkts: t.OutPkts, InBytes: t.InBytes, OutBytes: t.OutBytes,
		CPS: t.CPS, InPPS: t.InPPS, OutPPS: t.OutPPS, InBPS: t.InBPS, OutBPS: t.OutBPS}
}

// vipCollector exports per VIP what /v1/vips shows: connections, the
// kernel's counters and rates, and on how many live nodes it is
// programmed. Each scrape reads the kernel's counts of every VIP.
type vipCollector struct {
	vips  func() api.VIPs
	descs map[string]*prometheus.Desc
}

func newVIPCollector(vips func() api.VIPs) *vipCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("l4lb_vip_"+name, help, append([]string{"vip"}, labels...), nil)
	}
	return &vipCollector{vips: vips, descs: map[string]*prometheus.Desc{
		"programmed": d("programmed_nodes", "Live nodes whose kernel serves the VIP as this node's table has it."),
		"live":       d("live_nodes", "Live nodes in the cluster."),
		"active":     d("active_connections", "Established connections to the VIP's backends in this node's kernel."),
		"inactive":   d("inactive_connections", "Other connections (closing, UDP) to the VIP's backends in this node's kernel."),
		"conns":      d("connections_total", "Connections this node's kernel scheduled to the VIP's current backends."),
		"packets":    d("packets_total", "Packets through this node's kernel for the VIP's current backends.", "direction"),
		"bytes":      d("bytes_total", "Bytes through this node's kernel for the VIP's current backends.", "direction"),
		"cps":        d("connections_per_second", "The kernel's estimate of new connections per second."),
	}}
}

func (c *vipCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *vipCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(name string, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], t, v, labels...)
	}
	for _, x := range c.vips().VIPs {
		active, inactive := 0, 0
		for _, b := range x.Backends {
			active += b.ActiveConns
			inactive += b.InactConns
		}
		g("programmed", prometheus.GaugeValue, float64(len(x.ProgrammedOn)), x.Label)
		g("live", prometheus.GaugeValue, float64(x.LiveNodes), x.Label)
		g("active", prometheus.GaugeValue, float64(active), x.Label)
		g("inactive", prometheus.GaugeValue, float64(inactive), x.Label)
		if t := x.Traffic; t != nil {
			g("conns", prometheus.CounterValue, float64(t.Conns), x.Label)
			g("packets", prometheus.CounterValue, float64(t.InPkts), x.Label, "in")
			g("packets", prometheus.CounterValue, float64(t.OutPkts), x.Label, "out")
			g("bytes", prometheus.CounterValue, float64(t.InBytes), x.Label, "in")
			g("bytes", prometheus.CounterValue, float64(t.OutBytes), x.Label, "out")
			g("cps", prometheus.GaugeValue, float64(t.CPS), x.Label)
		}
	}
}
