package dns

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// benchTable is n named VIPs /bench/appN on TCP 80, one address each (the
// same shape as bench/dns/dnsbench).
func benchTable(n int) *vip.Table {
	t := &vip.Table{}
	for i := range n {
		v := named(fmt.Sprintf("/bench/app%d", i), "11.0.0.1", 80, vip.TCP)
		v.Addr = netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		t.VIPs = append(t.VIPs, v)
	}
	return t
}

// discard is a ResponseWriter that throws replies away (after packing, for
// WriteMsg), so that benchmarks measure the handler.
type discard struct{ remote net.Addr }

func (d discard) LocalAddr() net.Addr  { return d.remote }
func (d discard) RemoteAddr() net.Addr { return d.remote }
func (d discard) WriteMsg(m *mdns.Msg) error {
	_, err := m.Pack()
	return err
}
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) Close() error                { return nil }
func (d discard) TsigStatus() error           { return nil }
func (d discard) TsigTimersOnly(bool)         {}
func (d discard) Hijack()                     {}

// BenchmarkServeDNS is the handler on a 10,000-VIP zone.
func BenchmarkServeDNS(b *testing.B) {
	s := newTestServer(b, Config{}, benchTable(10000))
	var w mdns.ResponseWriter = discard{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	cases := []struct {
		name string
		q    *mdns.Msg
	}{
		{"A/prepared", question("app4242.bench.marathon."+apex, mdns.TypeA)},
		{"A/prepared+EDNS", withEDNS(question("app4242.bench.marathon."+apex, mdns.TypeA), 1232, false)},
		{"SRV/prepared", question("_app4242._tcp.bench.marathon."+apex, mdns.TypeSRV)},
		{"A/alias", question("app4242.bench.marathon.dclb.thisdcos.global.", mdns.TypeA)},
		{"NXDOMAIN", question("nope.bench.marathon."+apex, mdns.TypeA)},
		{"NODATA", question("app4242.bench.marathon."+apex, mdns.TypeAAAA)},
		{"refused", question("example.com.", mdns.TypeA)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.ServeDNS(w, c.q)
			}
		})
	}
}

// BenchmarkPreparedRaw is the UDP read loop's work per query, without the
// socket: read the raw query, find and patch the prepared answer.
func BenchmarkPreparedRaw(b *testing.B) {
	s := newTestServer(b, Config{}, benchTable(10000))
	z := s.zone.Load()
	wire, _ := withEDNS(question("app4242.bench.marathon."+apex, mdns.TypeA), 1232, false).Pack()
	out := make([]byte, 0, 512)
	var key [256]byte
	b.ReportAllocs()
	for b.Loop() {
		var q query
		if !parseQuery(wire, &q, key[:]) {
			b.Fatal("not parsed")
		}
		r, ok := z.fastReply(out, &q)
		if !ok {
			b.Fatal("no prepared answer")
		}
		out = r[:0]
	}
}

// BenchmarkUpdate is one zone build and swap.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			s := newTestServer(b, Config{}, nil)
			t := benchTable(n)
			b.ReportAllocs()
			for b.Loop() {
				s.Update(t)
			}
		})
	}
}
