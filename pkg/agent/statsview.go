package agent

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/ipvs/public"
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

// vipFigures are what /metrics shows of one VIP: the same numbers as the
// VIP in /v1/vips (enrich), read straight from the tables.
type vipFigures struct {
	label            string
	programmed, live int
	active, inactive int
	traffic          ipvs.Traffic
	counted          bool // the kernel gave counters (traffic holds them)
}

// vipFigures calls yield with each VIP's figures, in the table's order.
// It costs O(VIPs × backends + nodes²) like VIPs, but builds no view: no
// strings, no parsing back, no map per VIP (a scrape of /metrics at
// 10,000 VIPs x 10 backends built and threw away the whole /v1/vips view).
func (a *localNode) vipFigures(yield func(*vipFigures)) {
	var conns map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns
	if a.plane != nil {
		conns = a.plane.Connections()
	}
	desired := a.core.Table()
	published := public.Published(desired, a.public)
	live, upToDate := a.appliedView()
	var f vipFigures
	var origins []string
	var inVIP map[netip.AddrPort]bool
	for i := range desired.VIPs {
		v := &desired.VIPs[i]
		cs := conns[v.ServiceKey]
		if pa := published[v.ServiceKey]; len(pa) > 0 {
			keys := []vip.ServiceKey{v.ServiceKey}
			for _, ap := range pa {
				keys = append(keys, vip.ServiceKey{Addr: ap.Addr(), Port: ap.Port(), Protocol: v.Protocol})
			}
			cs = mergeConns(conns, keys)
		}
		f = vipFigures{label: v.Label, live: len(live)}
		add := func(c ipvs.Conns) {
			f.active += int(c.Active)
			f.inactive += int(c.Inactive)
			if t := c.Traffic; t != nil {
				f.counted = true
				f.traffic.Conns += t.Conns
				f.traffic.InPkts += t.InPkts
				f.traffic.OutPkts += t.OutPkts
				f.traffic.InBytes += t.InBytes
				f.traffic.OutBytes += t.OutBytes
				f.traffic.CPS += t.CPS
			}
		}
		origins = origins[:0]
		clear(inVIP)
		for _, bs := range [][]vip.Backend{v.Backends, v.Down} {
			for _, b := range bs {
				if c, ok := cs[b.Addr]; ok {
					add(c)
				}
				if !slices.Contains(origins, b.Node) {
					origins = append(origins, b.Node)
				}
				if len(cs) > 0 {
					if inVIP == nil {
						inVIP = map[netip.AddrPort]bool{}
					}
					inVIP[b.Addr] = true
				}
			}
		}
		// Backends that left the table and drain in this node's kernel.
		for ap, c := range cs {
			if c.Draining && !inVIP[ap] {
				add(c)
			}
		}
		for _, n := range live {
			ok := len(origins) > 0 && upToDate[n] != nil
			for _, o := range origins {
				ok = ok && upToDate[n](o)
			}
			if ok {
				f.programmed++
			}
		}
		yield(&f)
	}
}

// vipCollector exports per VIP what /v1/vips shows: connections, the
// kernel's counters and rates, and on how many live nodes it is
// programmed. Each scrape reads the kernel's counts of every VIP.
type vipCollector struct {
	figures func(yield func(*vipFigures))
	descs   map[string]*prometheus.Desc
}

func newVIPCollector(figures func(yield func(*vipFigures))) *vipCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("l4lb_vip_"+name, help, append([]string{"vip"}, labels...), nil)
	}
	return &vipCollector{figures: figures, descs: map[string]*prometheus.Desc{
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
	c.figures(func(x *vipFigures) {
		g("programmed", prometheus.GaugeValue, float64(x.programmed), x.label)
		g("live", prometheus.GaugeValue, float64(x.live), x.label)
		g("active", prometheus.GaugeValue, float64(x.active), x.label)
		g("inactive", prometheus.GaugeValue, float64(x.inactive), x.label)
		if t := &x.traffic; x.counted {
			g("conns", prometheus.CounterValue, float64(t.Conns), x.label)
			g("packets", prometheus.CounterValue, float64(t.InPkts), x.label, "in")
			g("packets", prometheus.CounterValue, float64(t.OutPkts), x.label, "out")
			g("bytes", prometheus.CounterValue, float64(t.InBytes), x.label, "in")
			g("bytes", prometheus.CounterValue, float64(t.OutBytes), x.label, "out")
			g("cps", prometheus.GaugeValue, float64(t.CPS), x.label)
		}
	})
}
