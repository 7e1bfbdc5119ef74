package dns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// randomTable builds n named VIPs from a seeded source: names shared by
// several ports and protocols, v4 and v6 addresses, some drained.
func randomTable(rng *rand.Rand, n int) *vip.Table {
	var vips []vip.VIP
	for i := range n {
		app := fmt.Sprintf("/g%d/app%d", rng.IntN(3), rng.IntN(n/2+1))
		var addr string
		if rng.IntN(4) == 0 {
			addr = fmt.Sprintf("fd01:c::%x", rng.IntN(8)+1)
		} else {
			addr = fmt.Sprintf("11.0.%d.%d", rng.IntN(2), rng.IntN(5)+1)
		}
		proto := vip.TCP
		if rng.IntN(3) == 0 {
			proto = vip.UDP
		}
		weights := []uint32{uint32(rng.IntN(2)), uint32(rng.IntN(3))}
		vips = append(vips, named(app, addr, uint16(1000+i), proto, weights...))
	}
	return table(vips...)
}

// randomCase flips the case of letters at random, as a 0x20 client does.
func randomCase(rng *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' && rng.IntN(2) == 0 {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// The prepared answers (raw path and handler path) must say exactly what the
// general resolver says, for every name, type, spelling, EDNS and transport.
func TestPreparedAnswersMatchResolver(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		tab := randomTable(rng, 5+rng.IntN(40))
		s := newTestServer(t, Config{Forward: round%2 == 0, Upstreams: []string{"127.0.0.1:1"}}, tab)
		z := s.zone.Load()
		names := zoneNames(z)
		prepared := 0
		for _, name := range names {
			for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypeTXT} {
				for _, size := range []int{0, 512, 1232, 4096} {
					for _, tcp := range []bool{false, true} {
						q := question(randomCase(rng, name), qtype)
						q.Id = uint16(rng.Uint32())
						q.CheckingDisabled = rng.IntN(2) == 0
						if size > 0 {
							withEDNS(q, uint16(size), rng.IntN(2) == 0)
						}
						if comparePaths(t, s, z, q, tcp) {
							prepared++
						}
					}
				}
			}
		}
		if prepared == 0 {
			t.Fatalf("round %d: no question took the prepared path", round)
		}
	}
}

// comparePaths asks q by the raw path, the handler and the slow path with
// the same rotation, checks they agree and reports whether a prepared
// answer was used.
func comparePaths(t *testing.T, s *Server, z *zone, q *mdns.Msg, tcp bool) bool {
	t.Helper()
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	rot := z.rotation.Load()

	// Slow path.
	slowRec := newRecorder(tcp)
	s.serveSlow(slowRec, q, z, tcp)
	slow := slowRec.reply(t)

	// Handler path (prepared when it can).
	z.rotation.Store(rot)
	hRec := newRecorder(tcp)
	s.ServeDNS(hRec, q)
	handler := hRec.reply(t)
	if a, b := normalise(slow), normalise(handler); a != b {
		t.Fatalf("handler and resolver disagree on %s %s (tcp=%v):\nresolver:\n%s\nhandler:\n%s", q.Question[0].Name, mdns.TypeToString[q.Question[0].Qtype], tcp, a, b)
	}

	// Raw path: the UDP read loop's.
	if tcp {
		return false
	}
	z.rotation.Store(rot)
	var rq query
	var key [256]byte
	if !parseQuery(wire, &rq, key[:]) {
		if q.IsEdns0() == nil || len(q.IsEdns0().Option) == 0 {
			t.Fatalf("plain query not read by parseQuery: %s", q)
		}
		return false
	}
	out, ok := z.fastReply(nil, &rq)
	if !ok {
		return false
	}
	raw := new(mdns.Msg)
	if err := raw.Unpack(out); err != nil {
		t.Fatalf("prepared reply does not unpack: %v", err)
	}
	if a, b := normalise(slow), normalise(raw); a != b {
		t.Fatalf("raw path and resolver disagree on %s:\nresolver:\n%s\nraw:\n%s", q.Question[0].Name, a, b)
	}
	if len(out) > rq.maxSize() {
		t.Fatalf("prepared reply of %d bytes over the client's %d", len(out), rq.maxSize())
	}
	return true
}

// normalise is a message's text without the EDNS pseudo-section's
// formatting noise; header, question, sections and OPT fields all count.
func normalise(m *mdns.Msg) string {
	var b strings.Builder
	fmt.Fprintf(&b, "id=%d qr=%v aa=%v tc=%v rd=%v ra=%v cd=%v ad=%v rcode=%d\n",
		m.Id, m.Response, m.Authoritative, m.Truncated, m.RecursionDesired, m.RecursionAvailable, m.CheckingDisabled, m.AuthenticatedData, m.Rcode)
	for _, q := range m.Question {
		fmt.Fprintf(&b, "Q %s %d %d\n", q.Name, q.Qtype, q.Qclass)
	}
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if o, ok := rr.(*mdns.OPT); ok {
				fmt.Fprintf(&b, "OPT size=%d do=%v v=%d\n", o.UDPSize(), o.Do(), o.Version())
				continue
			}
			fmt.Fprintf(&b, "%s\n", strings.ToLower(rr.Header().Name)+"|"+rr.String())
		}
		b.WriteString("--\n")
	}
	return b.String()
}

// Property: after any build, every VIP with a backend of weight > 0 answers
// its address under every name and apex, and a name whose VIPs are all
// drained or gone does not exist.
func TestZoneServesExactlyTheServingVIPs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		tab := randomTable(rng, 1+rng.IntN(30))
		s := newTestServer(t, Config{}, tab)
		want := map[string]map[netip.Addr]bool{} // name -> addresses it must answer
		for _, v := range tab.VIPs {
			for _, n := range v.Names {
				if want[n] == nil {
					want[n] = map[netip.Addr]bool{}
				}
				if serving(&v) {
					want[n][v.Addr] = true
				}
			}
		}
		for name, addrs := range want {
			for _, apexName := range []string{apex, "dclb.thisdcos.global."} {
				qname := strings.TrimSuffix(name, apex) + apexName
				got := map[netip.Addr]bool{}
				rcode := mdns.RcodeSuccess
				for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
					r := ask(t, s, withEDNS(question(qname, qt), 4096, false), false)
					rcode = r.Rcode
					for _, rr := range r.Answer {
						switch a := rr.(type) {
						case *mdns.A:
							got[netip.AddrFrom4([4]byte(a.A.To4()))] = true
						case *mdns.AAAA:
							got[netip.AddrFrom16([16]byte(a.AAAA.To16()))] = true
						}
					}
				}
				if len(addrs) == 0 && rcode != mdns.RcodeNameError {
					t.Fatalf("%s: no serving VIP, rcode %s, want NXDOMAIN", qname, mdns.RcodeToString[rcode])
				}
				if len(got) != len(addrs) {
					t.Fatalf("%s: answered %v, want %v", qname, got, addrs)
				}
				for a := range addrs {
					if !got[a] {
						t.Fatalf("%s: %s missing from %v", qname, a, got)
					}
				}
			}
		}
	}
}
