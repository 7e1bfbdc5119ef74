package dns

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

const (
	app2     = "app2.dcos-101.marathon.l4lb.thisdcos.directory."
	app2Flat = "dcos-101app2.marathon.l4lb.thisdcos.directory." // as vip.DNSNames spells it
	apex     = "l4lb.thisdcos.directory."
)

// baseTable: app2 on TCP 10000 and 10001 (same address) and UDP 5353,
// web with a v6 address, and a VIP whose backends are all drained.
func baseTable() *vip.Table {
	return table(
		named("/dcos-101/app2", "11.0.0.1", 10000, vip.TCP),
		named("/dcos-101/app2", "11.0.0.1", 10001, vip.TCP),
		named("/dcos-101/app2", "11.0.0.1", 5353, vip.UDP),
		named("/web", "fd01:c::5", 80, vip.TCP),
		named("/drained", "11.0.0.9", 80, vip.TCP, 0, 0),
	)
}

func TestAuthoritativeAnswers(t *testing.T) {
	s := newTestServer(t, Config{}, baseTable())
	soa := func(zone string) string {
		return fmt.Sprintf("%s\t5\tIN\tSOA\tns.%s hostmaster.%s %d 60 30 86400 5", zone, zone, zone, s.Stats().ZoneSerial)
	}
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string
		ns     []string
		extra  []string
	}{
		{name: "A by path name", qname: app2, qtype: mdns.TypeA,
			answer: []string{app2 + "\t5\tIN\tA\t11.0.0.1"}},
		{name: "A by flattened name", qname: app2Flat, qtype: mdns.TypeA,
			answer: []string{app2Flat + "\t5\tIN\tA\t11.0.0.1"}},
		{name: "AAAA", qname: "web.marathon." + apex, qtype: mdns.TypeAAAA,
			answer: []string{"web.marathon." + apex + "\t5\tIN\tAAAA\tfd01:c::5"}},
		{name: "alias dclb.thisdcos.directory", qname: "app2.dcos-101.marathon.dclb.thisdcos.directory.", qtype: mdns.TypeA,
			answer: []string{"app2.dcos-101.marathon.dclb.thisdcos.directory.\t5\tIN\tA\t11.0.0.1"}},
		{name: "alias l4lb.thisdcos.global", qname: "dcos-101app2.marathon.l4lb.thisdcos.global.", qtype: mdns.TypeA,
			answer: []string{"dcos-101app2.marathon.l4lb.thisdcos.global.\t5\tIN\tA\t11.0.0.1"}},
		{name: "alias dclb.thisdcos.global", qname: "app2.dcos-101.marathon.dclb.thisdcos.global.", qtype: mdns.TypeA,
			answer: []string{"app2.dcos-101.marathon.dclb.thisdcos.global.\t5\tIN\tA\t11.0.0.1"}},
		{name: "SRV tcp, one per port, glue in additional", qname: "_app2._tcp.dcos-101.marathon." + apex, qtype: mdns.TypeSRV,
			answer: []string{
				"_app2._tcp.dcos-101.marathon." + apex + "\t5\tIN\tSRV\t0 0 10000 " + app2,
				"_app2._tcp.dcos-101.marathon." + apex + "\t5\tIN\tSRV\t0 0 10001 " + app2,
			},
			extra: []string{app2 + "\t5\tIN\tA\t11.0.0.1"}},
		{name: "SRV udp", qname: "_app2._udp.dcos-101.marathon." + apex, qtype: mdns.TypeSRV,
			answer: []string{"_app2._udp.dcos-101.marathon." + apex + "\t5\tIN\tSRV\t0 0 5353 " + app2},
			extra:  []string{app2 + "\t5\tIN\tA\t11.0.0.1"}},
		{name: "SRV for the flattened name", qname: "_dcos-101app2._tcp.marathon." + apex, qtype: mdns.TypeSRV,
			answer: []string{
				"_dcos-101app2._tcp.marathon." + apex + "\t5\tIN\tSRV\t0 0 10000 " + app2Flat,
				"_dcos-101app2._tcp.marathon." + apex + "\t5\tIN\tSRV\t0 0 10001 " + app2Flat,
			},
			extra: []string{app2Flat + "\t5\tIN\tA\t11.0.0.1"}},
		{name: "SRV under an alias", qname: "_app2._udp.dcos-101.marathon.dclb.thisdcos.global.", qtype: mdns.TypeSRV,
			answer: []string{"_app2._udp.dcos-101.marathon.dclb.thisdcos.global.\t5\tIN\tSRV\t0 0 5353 app2.dcos-101.marathon.dclb.thisdcos.global."},
			extra:  []string{"app2.dcos-101.marathon.dclb.thisdcos.global.\t5\tIN\tA\t11.0.0.1"}},
		{name: "SOA at apex", qname: apex, qtype: mdns.TypeSOA, answer: []string{soa(apex)}},
		{name: "SOA at alias apex", qname: "dclb.thisdcos.global.", qtype: mdns.TypeSOA, answer: []string{soa("dclb.thisdcos.global.")}},
		{name: "NS at apex with glue", qname: apex, qtype: mdns.TypeNS,
			answer: []string{apex + "\t5\tIN\tNS\tns." + apex},
			extra:  []string{"ns." + apex + "\t5\tIN\tA\t127.0.0.2"}},
		{name: "NXDOMAIN with SOA", qname: "nope.marathon." + apex, qtype: mdns.TypeA,
			rcode: mdns.RcodeNameError, ns: []string{soa(apex)}},
		{name: "NXDOMAIN under alias has the alias SOA", qname: "nope.dclb.thisdcos.directory.", qtype: mdns.TypeA,
			rcode: mdns.RcodeNameError, ns: []string{soa("dclb.thisdcos.directory.")}},
		{name: "drained VIP is NXDOMAIN", qname: "drained.marathon." + apex, qtype: mdns.TypeA,
			rcode: mdns.RcodeNameError, ns: []string{soa(apex)}},
		{name: "NODATA: AAAA of a v4 name", qname: app2, qtype: mdns.TypeAAAA, ns: []string{soa(apex)}},
		{name: "NODATA: TXT", qname: app2, qtype: mdns.TypeTXT, ns: []string{soa(apex)}},
		{name: "NODATA: empty non-terminal", qname: "dcos-101.marathon." + apex, qtype: mdns.TypeA, ns: []string{soa(apex)}},
		{name: "NODATA: SOA below apex", qname: app2, qtype: mdns.TypeSOA, ns: []string{soa(apex)}},
		{name: "NODATA: A at apex", qname: apex, qtype: mdns.TypeA, ns: []string{soa(apex)}},
		{name: "ANY gives every record of the name", qname: app2, qtype: mdns.TypeANY,
			answer: []string{app2 + "\t5\tIN\tA\t11.0.0.1"}},
	}
	for _, tc := range tests {
		for _, tcp := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tcp=%v", tc.name, tcp), func(t *testing.T) {
				r := ask(t, s, question(tc.qname, tc.qtype), tcp)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
				}
				if !r.Authoritative {
					t.Errorf("AA not set")
				}
				if r.Truncated {
					t.Errorf("TC set")
				}
				if len(r.Question) != 1 || r.Question[0].Name != tc.qname || r.Question[0].Qtype != tc.qtype {
					t.Errorf("question %v, want %s %s", r.Question, tc.qname, mdns.TypeToString[tc.qtype])
				}
				for _, c := range []struct {
					section   string
					got, want []string
				}{{"answer", rrStrings(r.Answer), tc.answer}, {"authority", rrStrings(r.Ns), tc.ns}, {"additional", rrStrings(r.Extra), tc.extra}} {
					got := slices.Clone(c.got)
					want := slices.Clone(c.want)
					slices.Sort(got) // rotation may reorder
					slices.Sort(want)
					if !slices.Equal(got, want) {
						t.Errorf("%s:\n got %q\nwant %q", c.section, got, want)
					}
				}
			})
		}
	}
}

func TestTTLIsConfigurable(t *testing.T) {
	s := newTestServer(t, Config{TTL: 30 * time.Second}, baseTable())
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{app2, mdns.TypeA}, {"nope." + apex, mdns.TypeA}, {"_app2._tcp.dcos-101.marathon." + apex, mdns.TypeSRV}} {
		r := ask(t, s, question(q.name, q.qtype), false)
		for _, rr := range slices.Concat(r.Answer, r.Ns, r.Extra) {
			if rr.Header().Ttl != 30 {
				t.Errorf("%s: TTL %d, want 30", rr, rr.Header().Ttl)
			}
			if soa, ok := rr.(*mdns.SOA); ok && soa.Minttl != 30 {
				t.Errorf("SOA minimum %d, want 30", soa.Minttl)
			}
		}
	}
}

func TestOnlyServingVIPsAreAnswered(t *testing.T) {
	tests := []struct {
		name  string
		vips  []vip.VIP
		rcode int
		addrs []string
	}{
		{name: "not in table", vips: nil, rcode: mdns.RcodeNameError},
		{name: "one backend with weight", vips: []vip.VIP{named("/a", "11.0.0.1", 80, vip.TCP, 0, 1)}, addrs: []string{"11.0.0.1"}},
		{name: "every backend at weight 0", vips: []vip.VIP{named("/a", "11.0.0.1", 80, vip.TCP, 0, 0)}, rcode: mdns.RcodeNameError},
		{name: "no backend at all", vips: []vip.VIP{func() vip.VIP { v := named("/a", "11.0.0.1", 80, vip.TCP); v.Backends = nil; return v }()}, rcode: mdns.RcodeNameError},
		{name: "name held by another port still serving", vips: []vip.VIP{
			named("/a", "11.0.0.1", 80, vip.TCP, 0),
			named("/a", "11.0.0.1", 443, vip.TCP, 1),
		}, addrs: []string{"11.0.0.1"}},
		{name: "one A per distinct address", vips: []vip.VIP{
			named("/a", "11.0.0.1", 80, vip.TCP),
			named("/a", "11.0.0.1", 443, vip.TCP),
			named("/a", "11.0.0.2", 8080, vip.UDP),
		}, addrs: []string{"11.0.0.1", "11.0.0.2"}},
		{name: "only AAAA: A is NODATA", vips: []vip.VIP{named("/a", "fd01:c::1", 80, vip.TCP)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{}, table(tc.vips...))
			r := ask(t, s, question("a.marathon."+apex, mdns.TypeA), false)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
			var got []string
			for _, rr := range r.Answer {
				got = append(got, rr.(*mdns.A).A.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.addrs) {
				t.Fatalf("addresses %v, want %v", got, tc.addrs)
			}
		})
	}
}

func TestUpdateSwapsZone(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	q := question(app2, mdns.TypeA)
	if r := ask(t, s, q, false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("before any update: %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
	s.Update(baseTable())
	serial := s.Stats().ZoneSerial
	if r := ask(t, s, q, false); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after the VIP is programmed: %s %v", mdns.RcodeToString[r.Rcode], r.Answer)
	}
	s.Update(table(named("/g/other", "11.0.0.3", 80, vip.TCP)))
	if r := ask(t, s, q, false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("after the VIP went: %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
	if got := s.Stats().ZoneSerial; got <= serial {
		t.Fatalf("serial %d after update, want more than %d", got, serial)
	}
	if got := s.Stats().ZoneNames; got != 2 {
		t.Fatalf("ZoneNames %d, want 2 (path and flattened name of /g/other)", got)
	}
}

func TestQuestionSpellingIsKept(t *testing.T) {
	s := newTestServer(t, Config{}, baseTable())
	for _, name := range []string{"ApP2.DcOs-101.MARATHON.l4lb.ThisDCOS.directory.", "APP2.DCOS-101.MARATHON.DCLB.THISDCOS.GLOBAL."} {
		for _, tcp := range []bool{false, true} {
			r := ask(t, s, question(name, mdns.TypeA), tcp)
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("%s: %s %v", name, mdns.RcodeToString[r.Rcode], r.Answer)
			}
			if r.Question[0].Name != name {
				t.Errorf("question came back as %s, want %s", r.Question[0].Name, name)
			}
			if !strings.EqualFold(r.Answer[0].Header().Name, name) {
				t.Errorf("answer owner %s, want %s", r.Answer[0].Header().Name, name)
			}
		}
	}
}

func TestHeaderFlags(t *testing.T) {
	for _, forward := range []bool{false, true} {
		s := newTestServer(t, Config{Forward: forward, Upstreams: []string{"127.0.0.1:1"}}, baseTable())
		for _, qname := range []string{app2, "nope." + apex} {
			q := question(qname, mdns.TypeA)
			q.CheckingDisabled = true
			r := ask(t, s, q, false)
			if !r.RecursionDesired || !r.CheckingDisabled {
				t.Errorf("%s: RD %v CD %v, want both copied from the query", qname, r.RecursionDesired, r.CheckingDisabled)
			}
			if r.RecursionAvailable != forward {
				t.Errorf("%s: RA %v with forwarding %v", qname, r.RecursionAvailable, forward)
			}
			q = question(qname, mdns.TypeA)
			q.RecursionDesired = false
			if r := ask(t, s, q, false); r.RecursionDesired {
				t.Errorf("%s: RD set in reply to a query without it", qname)
			}
		}
	}
}

func TestEDNS(t *testing.T) {
	s := newTestServer(t, Config{}, baseTable())
	tests := []struct {
		name  string
		query *mdns.Msg
		rcode int
		do    bool
	}{
		{name: "prepared answer", query: withEDNS(question(app2, mdns.TypeA), 4096, false)},
		{name: "prepared answer with DO", query: withEDNS(question(app2, mdns.TypeA), 4096, true), do: true},
		{name: "NXDOMAIN", query: withEDNS(question("x."+apex, mdns.TypeA), 1232, false), rcode: mdns.RcodeNameError},
		{name: "version 1 is BADVERS", query: func() *mdns.Msg {
			m := withEDNS(question(app2, mdns.TypeA), 4096, false)
			m.IsEdns0().SetVersion(1)
			return m
		}(), rcode: mdns.RcodeBadVers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(t, s, tc.query, false)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
			opt := r.IsEdns0()
			if opt == nil {
				t.Fatalf("reply to an EDNS query has no OPT")
			}
			if opt.UDPSize() != ednsSize || opt.Do() != tc.do || opt.Version() != 0 {
				t.Errorf("OPT size %d DO %v version %d, want %d %v 0", opt.UDPSize(), opt.Do(), opt.Version(), ednsSize, tc.do)
			}
		})
	}
	t.Run("no OPT in reply to a plain query", func(t *testing.T) {
		for _, q := range []*mdns.Msg{question(app2, mdns.TypeA), question("x."+apex, mdns.TypeA)} {
			if r := ask(t, s, q, false); r.IsEdns0() != nil {
				t.Errorf("%s: OPT in reply to a query without EDNS", q.Question[0].Name)
			}
		}
	})
}

// manyPorts is /big listening on n TCP ports: its SRV answer is large.
func manyPorts(n int) *vip.Table {
	var vips []vip.VIP
	for p := range n {
		vips = append(vips, named("/big", "11.0.0.7", uint16(20000+p), vip.TCP))
	}
	return table(vips...)
}

func TestTruncation(t *testing.T) {
	s := newTestServer(t, Config{}, manyPorts(40))
	srv := "_big._tcp.marathon." + apex
	tests := []struct {
		name      string
		query     *mdns.Msg
		tcp       bool
		truncated bool
		answers   int
	}{
		{name: "UDP without EDNS: 512 bytes, TC", query: question(srv, mdns.TypeSRV), truncated: true},
		{name: "UDP with a 4096 buffer: fits", query: withEDNS(question(srv, mdns.TypeSRV), 4096, false), answers: 40},
		{name: "UDP with a 1232 buffer: TC", query: withEDNS(question(srv, mdns.TypeSRV), 1232, false), truncated: true},
		{name: "EDNS buffer under 512 counts as 512", query: withEDNS(question(srv, mdns.TypeSRV), 100, false), truncated: true},
		{name: "TCP: fits", query: question(srv, mdns.TypeSRV), tcp: true, answers: 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Truncated
			r := ask(t, s, tc.query, tc.tcp) // ask checks the size limit
			if r.Truncated != tc.truncated {
				t.Fatalf("TC %v, want %v", r.Truncated, tc.truncated)
			}
			if !tc.truncated && len(r.Answer) != tc.answers {
				t.Fatalf("%d answers, want %d", len(r.Answer), tc.answers)
			}
			if tc.truncated && len(r.Answer) >= 40 {
				t.Fatalf("truncated reply still has all %d answers", len(r.Answer))
			}
			if got := s.Stats().Truncated - before; tc.truncated && got != 1 {
				t.Fatalf("Stats.Truncated grew by %d, want 1", got)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	tab := table(
		named("/multi", "11.0.0.1", 80, vip.TCP),
		named("/multi", "11.0.0.2", 81, vip.TCP),
		named("/multi", "11.0.0.3", 82, vip.TCP),
	)
	for _, n := range []int{3, maxFastRotations + 4} { // prepared and packed per query
		t.Run(fmt.Sprintf("%d records", n), func(t *testing.T) {
			var vips []vip.VIP
			for i := range n {
				vips = append(vips, named("/multi", fmt.Sprintf("11.0.0.%d", i+1), uint16(80+i), vip.TCP))
			}
			if n == 3 {
				vips = tab.VIPs
			}
			s := newTestServer(t, Config{}, table(vips...))
			for _, q := range []*mdns.Msg{question("multi.marathon."+apex, mdns.TypeA), withEDNS(question("_multi._tcp.marathon."+apex, mdns.TypeSRV), 4096, false)} {
				firsts := map[string]int{}
				var set []string
				for i := range n {
					r := ask(t, s, q, false)
					if len(r.Answer) != n {
						t.Fatalf("%d answers, want %d", len(r.Answer), n)
					}
					got := rrStrings(r.Answer)
					firsts[got[0]]++
					slices.Sort(got)
					if i == 0 {
						set = got
					} else if !slices.Equal(got, set) {
						t.Fatalf("RRset changed between queries:\n%q\n%q", got, set)
					}
				}
				// n queries in a row put each record first exactly once.
				if len(firsts) != n {
					t.Fatalf("%s: first records over %d queries: %v", q.Question[0].Name, n, firsts)
				}
			}
		})
	}
}

func TestMalformedAndOddQueries(t *testing.T) {
	s := newTestServer(t, Config{Forward: true, Upstreams: []string{"127.0.0.1:1"}}, baseTable())
	t.Run("two questions: FORMERR", func(t *testing.T) {
		q := question(app2, mdns.TypeA)
		q.Question = append(q.Question, q.Question[0])
		before := s.Stats().FormErr
		r := ask(t, s, q, false)
		if r.Rcode != mdns.RcodeFormatError {
			t.Fatalf("rcode %s, want FORMERR", mdns.RcodeToString[r.Rcode])
		}
		if s.Stats().FormErr != before+1 {
			t.Fatalf("FormErr not counted")
		}
	})
	t.Run("no question: FORMERR", func(t *testing.T) {
		q := question(app2, mdns.TypeA)
		q.Question = nil
		if r := ask(t, s, q, false); r.Rcode != mdns.RcodeFormatError {
			t.Fatalf("rcode %s, want FORMERR", mdns.RcodeToString[r.Rcode])
		}
	})
	t.Run("a response is dropped", func(t *testing.T) {
		q := question(app2, mdns.TypeA)
		q.Response = true
		rec := newRecorder(false)
		before := s.Stats().Dropped
		s.ServeDNS(rec, q)
		if len(rec.wire) != 0 {
			t.Fatalf("answered a response")
		}
		if s.Stats().Dropped != before+1 {
			t.Fatalf("Dropped not counted")
		}
	})
	t.Run("UPDATE: NOTIMP", func(t *testing.T) {
		q := question(apex, mdns.TypeSOA)
		q.Opcode = mdns.OpcodeUpdate
		r := ask(t, s, q, false)
		if r.Rcode != mdns.RcodeNotImplemented || r.Opcode != mdns.OpcodeUpdate {
			t.Fatalf("rcode %s opcode %d, want NOTIMP for UPDATE", mdns.RcodeToString[r.Rcode], r.Opcode)
		}
	})
	t.Run("zone transfer: REFUSED", func(t *testing.T) {
		for _, qt := range []uint16{mdns.TypeAXFR, mdns.TypeIXFR} {
			if r := ask(t, s, question(apex, qt), true); r.Rcode != mdns.RcodeRefused {
				t.Fatalf("%s: rcode %s, want REFUSED", mdns.TypeToString[qt], mdns.RcodeToString[r.Rcode])
			}
		}
	})
	t.Run("class CHAOS in the zone: REFUSED", func(t *testing.T) {
		q := question(app2, mdns.TypeA)
		q.Question[0].Qclass = mdns.ClassCHAOS
		if r := ask(t, s, q, false); r.Rcode != mdns.RcodeRefused {
			t.Fatalf("rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
		}
	})
}

func TestForwardingOffIsRefused(t *testing.T) {
	s := newTestServer(t, Config{Forward: false}, baseTable())
	r := ask(t, s, question("example.com.", mdns.TypeA), false)
	if r.Rcode != mdns.RcodeRefused {
		t.Fatalf("rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	if r.Authoritative {
		t.Fatalf("AA set on a name outside the zone")
	}
	// A name just above the zone is outside it too.
	if r := ask(t, s, question("thisdcos.directory.", mdns.TypeSOA), false); r.Rcode != mdns.RcodeRefused {
		t.Fatalf("parent of the apex: rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
}

func TestStatsCountReplies(t *testing.T) {
	s := newTestServer(t, Config{}, baseTable())
	ask(t, s, question(app2, mdns.TypeA), false)
	ask(t, s, question(app2, mdns.TypeA), true)
	ask(t, s, question("nope."+apex, mdns.TypeA), false)
	ask(t, s, question("example.com.", mdns.TypeA), false)
	st := s.Stats()
	want := map[string]uint64{"NOERROR": 2, "NXDOMAIN": 1, "REFUSED": 1}
	for k, v := range want {
		if st.Replies[k] != v {
			t.Errorf("Replies[%s] = %d, want %d (all: %v)", k, st.Replies[k], v, st.Replies)
		}
	}
	if st.Authoritative != 3 || st.Prepared != 2 {
		t.Errorf("Authoritative %d Prepared %d, want 3 and 2", st.Authoritative, st.Prepared)
	}
}

func TestNamesOutsideTheDomainAreLeftOut(t *testing.T) {
	v := named("/x", "11.0.0.5", 80, vip.TCP)
	v.Names = []string{"x.marathon.example.org.", "x.marathon." + apex}
	z, st := buildZone(zoneInput{apex: apex, ttl: 5}, table(v, named("/dcos-101/app2", "11.0.0.1", 80, vip.TCP)))
	if !slices.Equal(st.outside, []string{"x.marathon.example.org."}) {
		t.Fatalf("outside %v, want the example.org name", st.outside)
	}
	if st.named != 2 || z.vipNames != 3 {
		t.Fatalf("named %d, names %d; want 2 VIPs and 3 names (x under the apex, app2's two)", st.named, z.vipNames)
	}
	if res := z.resolve("x.marathon.example.org.", mdns.TypeA, 0); res.inZone {
		t.Fatalf("a name outside the apex was put in the zone")
	}
}

// Queries during updates see the old zone or the new one, and the race
// detector sees no unsynchronised access (go test -race).
func TestQueriesDuringUpdates(t *testing.T) {
	withApp := baseTable()
	without := table(named("/web", "fd01:c::5", 80, vip.TCP))
	s := newTestServer(t, Config{}, withApp)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 40 {
			if i%2 == 0 {
				s.Update(without)
			} else {
				s.Update(withApp)
			}
		}
	}()
	queries := 0
	for running := true; running || queries < 200; queries++ {
		select {
		case <-done:
			running = false
		default:
		}
		for _, tcp := range []bool{false, true} {
			r := ask(t, s, question(app2, mdns.TypeA), tcp)
			switch {
			case r.Rcode == mdns.RcodeNameError && len(r.Answer) == 0:
			case r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 && r.Answer[0].(*mdns.A).A.String() == "11.0.0.1":
			default:
				t.Fatalf("reply from neither zone:\n%s", r)
			}
		}
	}
}
