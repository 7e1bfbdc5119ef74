package ipvs

import (
	"fmt"
	"slices"

	"github.com/l4lb/l4lb/vip"
)

// IPv6Disabled says why IPv6 VIPs are left out of the kernel, "" when they
// are not: the iptables backend could not write the IPv6 nat table (a
// kernel without IPv6 NAT), so replies from other nodes' IPv6 backends
// could not be masqueraded. IPv4 VIPs are unaffected. Set by New, constant
// afterwards.
func (r *Reconciler) IPv6Disabled() string {
	if r.host == nil {
		return ""
	}
	return r.host.noV6
}

// withoutIPv6 returns t without its IPv6 VIPs, and with an error line that
// says why; t itself when it has none. The copy is a table made by hand
// (no lineage): the sync after it diffs in full, the price of a degraded
// kernel only.
func withoutIPv6(t *vip.Table, why string) *vip.Table {
	n := 0
	for i := range t.VIPs {
		if t.VIPs[i].Addr.Is6() {
			n++
		}
	}
	if n == 0 {
		return t
	}
	out := &vip.Table{VIPs: make([]vip.VIP, 0, len(t.VIPs)-n)}
	for i := range t.VIPs {
		if !t.VIPs[i].Addr.Is6() {
			out.VIPs = append(out.VIPs, t.VIPs[i])
		}
	}
	out.Errors = append(slices.Clone(t.Errors), fmt.Sprintf("%d IPv6 VIPs left out of the kernel: %s", n, why))
	slices.Sort(out.Errors)
	return out
}
