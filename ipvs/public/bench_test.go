package public

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/vip"
)

// benchModel is a model of n named VIPs with one backend each, every 100th
// public, on one node.
func benchModel(b *testing.B, n int) (*vip.Model, []vip.Registration) {
	b.Helper()
	m := vip.NewModel(vip.Config{})
	regs := make([]vip.Registration, n)
	for i := range regs {
		regs[i] = vip.Registration{
			VIP:     vip.Spec{Protocol: vip.TCP, Name: fmt.Sprintf("/app%d", i), Port: 80},
			Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 8080),
			Weight:  1, Public: i%100 == 0, PublicPort: uint16(10000 + i/100),
		}
	}
	m.Apply([]vip.NodeDelta{{Node: "n", Set: regs}})
	m.Table()
	return m, regs
}

// BenchmarkOneChange: one backend's weight flips on a 10,000-VIP table
// (100 of them public, two public addresses): the model's Apply + Table
// alone (the peer), and the same plus Expand, for a public VIP and for a
// private one.
func BenchmarkOneChange(b *testing.B) {
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
	for _, tc := range []struct {
		name   string
		expand bool
		which  int
	}{{"model-only", false, 100}, {"expand/public-vip", true, 100}, {"expand/private-vip", true, 101}} {
		b.Run(tc.name, func(b *testing.B) {
			m, regs := benchModel(b, 10000)
			e := NewExpander(addrs)
			e.Expand(m.Table())
			r := regs[tc.which]
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.Weight = uint32(1 + i%2)
				m.Apply([]vip.NodeDelta{{Node: "n", Set: []vip.Registration{r}}})
				t := m.Table()
				if tc.expand {
					e.Expand(t)
				}
			}
		})
	}
}
