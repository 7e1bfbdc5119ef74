// Package ipvstest builds desired tables for the ipvs package's tests, from
// short strings, so that a test reads like the table it programs.
package ipvstest

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/l4lb/l4lb/vip"
)

// VIP builds a VIP: key "tcp 11.0.0.1:80", backends "10.0.0.1:80" (weight 1)
// or "10.0.0.1:80=0" (weight 0). It panics on a malformed string: the
// strings are the test's own.
func VIP(key string, backends ...string) vip.VIP {
	proto, ap, _ := strings.Cut(key, " ")
	a := netip.MustParseAddrPort(ap)
	v := vip.VIP{ServiceKey: vip.ServiceKey{Addr: a.Addr(), Port: a.Port(), Protocol: vip.Protocol(proto)}, Label: ap}
	for _, b := range backends {
		addr, w, hasW := strings.Cut(b, "=")
		weight := uint32(1)
		if hasW {
			if _, err := fmt.Sscan(w, &weight); err != nil {
				panic(fmt.Sprintf("ipvstest: weight %q: %v", w, err))
			}
		}
		v.Backends = append(v.Backends, vip.Backend{Addr: netip.MustParseAddrPort(addr), Weight: weight, Health: vip.Healthy})
	}
	return v
}

// Table sorts VIPs by service key, as vip.Build does, into a table.
func Table(vs ...vip.VIP) *vip.Table {
	sort.Slice(vs, func(i, j int) bool {
		a, b := vs[i].ServiceKey, vs[j].ServiceKey
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Protocol < b.Protocol
	})
	return &vip.Table{VIPs: vs}
}

// BigTable has n TCP VIPs (11.x.y.z:80) of k backends each (10.1.j.1:8080),
// already in table order.
func BigTable(n, k int) *vip.Table {
	vs := make([]vip.VIP, n)
	for i := range vs {
		a := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		vs[i] = vip.VIP{ServiceKey: vip.ServiceKey{Addr: a, Port: 80, Protocol: vip.TCP}}
		for j := 0; j < k; j++ {
			vs[i].Backends = append(vs[i].Backends, vip.Backend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(j), 1}), 8080), Weight: 1})
		}
	}
	return &vip.Table{VIPs: vs}
}
