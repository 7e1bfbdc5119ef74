package dns

import (
	"net"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// RA says whether forwarding is on in every reply, whatever its rcode:
// answers, negative answers, REFUSED, SERVFAIL, FORMERR, NOTIMP, BADVERS.
func TestRAInEveryReply(t *testing.T) {
	for _, forward := range []bool{false, true} {
		s := newTestServer(t, Config{Forward: forward, Upstreams: []string{"127.0.0.1:1"}, UpstreamTimeout: 300 * time.Millisecond}, baseTable())
		looped := withEDNS(question("loop.example.", mdns.TypeA), 1232, false)
		looped.IsEdns0().Option = append(looped.IsEdns0().Option, &mdns.EDNS0_LOCAL{Code: markerOption, Data: s.fwd.marker})
		outsideRcode := mdns.RcodeRefused
		if forward {
			outsideRcode = mdns.RcodeServerFailure // the only upstream is a closed port
		}
		tests := []struct {
			name  string
			query *mdns.Msg
			tcp   bool
			rcode int
			setup func() (undo func())
		}{
			{name: "NOERROR, prepared", query: question(app2, mdns.TypeA)},
			{name: "NOERROR, general path", query: question(apex, mdns.TypeSOA)},
			{name: "NXDOMAIN", query: question("nope."+apex, mdns.TypeA), rcode: mdns.RcodeNameError},
			{name: "outside the zone", query: question("example.com.", mdns.TypeA), rcode: outsideRcode},
			{name: "SERVFAIL: forwarding loop", query: looped, rcode: mdns.RcodeServerFailure},
			{name: "REFUSED: class CHAOS", query: chaos("version.bind."), rcode: mdns.RcodeRefused},
			{name: "REFUSED: zone transfer", query: question(apex, mdns.TypeAXFR), tcp: true, rcode: mdns.RcodeRefused},
			{name: "REFUSED: in-flight cap", query: question(app2, mdns.TypeA), rcode: mdns.RcodeRefused, setup: func() func() {
				s.inFlight.Add(s.cfg.maxInFlight)
				return func() { s.inFlight.Add(-s.cfg.maxInFlight) }
			}},
			{name: "FORMERR: two questions", query: func() *mdns.Msg {
				q := question(app2, mdns.TypeA)
				q.Question = append(q.Question, q.Question[0])
				return q
			}(), rcode: mdns.RcodeFormatError},
			{name: "NOTIMP: UPDATE", query: func() *mdns.Msg {
				q := question(apex, mdns.TypeSOA)
				q.Opcode = mdns.OpcodeUpdate
				return q
			}(), rcode: mdns.RcodeNotImplemented},
			{name: "BADVERS", query: ednsVersion(question(app2, mdns.TypeA), 1), rcode: mdns.RcodeBadVers},
		}
		for _, tc := range tests {
			name := tc.name + map[bool]string{false: "/forwarding off", true: "/forwarding on"}[forward]
			t.Run(name, func(t *testing.T) {
				if tc.setup != nil {
					defer tc.setup()()
				}
				r := ask(t, s, tc.query, tc.tcp)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", rcodeName(r.Rcode), rcodeName(tc.rcode))
				}
				if r.RecursionAvailable != forward {
					t.Fatalf("RA %v with forwarding %v:\n%s", r.RecursionAvailable, forward, r)
				}
			})
		}
	}
}

// chaos is a CHAOS-class TXT question (version.bind, hostname.bind, id.server).
func chaos(name string) *mdns.Msg {
	q := question(name, mdns.TypeTXT)
	q.Question[0].Qclass = mdns.ClassCHAOS
	return q
}

func ednsVersion(m *mdns.Msg, v uint8) *mdns.Msg {
	withEDNS(m, 1232, false)
	m.IsEdns0().SetVersion(v)
	return m
}

// A CHAOS-class query gets REFUSED, in the zone or outside it, with
// forwarding on or off, and is never forwarded: an upstream that refuses it
// must not turn it into SERVFAIL.
func TestClassCHAOSIsRefused(t *testing.T) {
	up := startUpstream(t, "127.53.5.1", rcodeOnly(mdns.RcodeRefused))
	for _, forward := range []bool{false, true} {
		s := newTestServer(t, Config{Forward: forward, Upstreams: []string{up.addr}, UpstreamTimeout: 300 * time.Millisecond}, baseTable())
		for _, q := range []*mdns.Msg{chaos("version.bind."), chaos("hostname.bind."), chaos("id.server."), chaos(app2), chaos(apex)} {
			for _, tcp := range []bool{false, true} {
				r := ask(t, s, q, tcp)
				if r.Rcode != mdns.RcodeRefused {
					t.Fatalf("%s CH TXT (forwarding %v, tcp %v): %s, want REFUSED", q.Question[0].Name, forward, tcp, rcodeName(r.Rcode))
				}
				if r.Authoritative || len(r.Answer) != 0 {
					t.Fatalf("%s CH TXT: AA or answers in REFUSED:\n%s", q.Question[0].Name, r)
				}
			}
		}
		if st := s.Stats(); st.Replies["REFUSED"] != 10 || st.Replies["SERVFAIL"] != 0 || st.Forwarded != 0 {
			t.Fatalf("stats %+v", st)
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Fatalf("the upstream got %d CHAOS queries, want none", n)
	}
}

// An EDNS version other than 0 is answered BADVERS and counted under that
// name (miekg's table calls code 16 BADSIG).
func TestBADVERSIsCountedAsBADVERS(t *testing.T) {
	s := newTestServer(t, Config{}, baseTable())
	for _, tcp := range []bool{false, true} {
		r := ask(t, s, ednsVersion(question(app2, mdns.TypeA), 1), tcp)
		if r.Rcode != mdns.RcodeBadVers {
			t.Fatalf("rcode %d, want BADVERS (16)", r.Rcode)
		}
		if opt := r.IsEdns0(); opt == nil || opt.Version() != 0 {
			t.Fatalf("BADVERS must carry our OPT with version 0:\n%s", r)
		}
	}
	st := s.Stats()
	if st.Replies["BADVERS"] != 2 {
		t.Fatalf("Replies %v, want BADVERS: 2", st.Replies)
	}
	if _, ok := st.Replies["BADSIG"]; ok {
		t.Fatalf("Replies %v name BADSIG", st.Replies)
	}
	if got := rcodeName(12); got != "RCODE12" {
		t.Fatalf("rcode 12 (unassigned) named %q", got)
	}
}

// The flattened DC/OS name is the one vip builds (dcos-101app2), and the
// server answers it, its SRV owner and its alias twin.
func TestFlattenedNameAsVIPSpellsIt(t *testing.T) {
	path, flat, err := vip.DNSNames("/dcos-101/app2", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if path != app2 || flat != app2Flat {
		t.Fatalf("vip.DNSNames gives %s and %s; the fixtures say %s and %s", path, flat, app2, app2Flat)
	}
	s := newTestServer(t, Config{}, baseTable())
	for _, q := range []*mdns.Msg{
		question(app2Flat, mdns.TypeA),
		question("dcos-101app2.marathon.dclb.thisdcos.global.", mdns.TypeA),
		question("_dcos-101app2._udp.marathon."+apex, mdns.TypeSRV),
	} {
		if r := ask(t, s, q, false); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: %s", q.Question[0].Name, r)
		}
	}
	if r := ask(t, s, question("app2dcos-101.marathon."+apex, mdns.TypeA), false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("the reversed spelling answers: %s", r)
	}
}

// With forwarding on, the replies that miekg's server writes itself (FORMERR
// and NOTIMP for what its accept filter rejects, over TCP) and those of our
// own UDP read loop carry RA as well.
func TestRAInRejectsOnTheWire(t *testing.T) {
	_, ip, port := startServer(t, "127.53.5.2", Config{Forward: true, Upstreams: []string{"127.0.0.1:1"}}, baseTable())
	twoQuestions := question(app2, mdns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	update := question(apex, mdns.TypeSOA)
	update.Opcode = mdns.OpcodeUpdate
	for _, tc := range []struct {
		name  string
		q     *mdns.Msg
		rcode int
	}{{"two questions", twoQuestions, mdns.RcodeFormatError}, {"UPDATE", update, mdns.RcodeNotImplemented}} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				c := &mdns.Client{Net: network, Timeout: 2 * time.Second}
				r, _, err := c.Exchange(tc.q, net.JoinHostPort(ip, port))
				if err != nil {
					t.Fatal(err)
				}
				if r.Rcode != tc.rcode || !r.RecursionAvailable {
					t.Fatalf("rcode %s RA %v, want %s with RA", rcodeName(r.Rcode), r.RecursionAvailable, rcodeName(tc.rcode))
				}
			})
		}
	}
	// The raw garbage path: a cut question gets a header-only FORMERR.
	valid, _ := question(app2, mdns.TypeA).Pack()
	conn, err := net.Dial("udp", net.JoinHostPort(ip, port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(slices.Clone(valid[:len(valid)-3])); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := new(mdns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if m.Rcode != mdns.RcodeFormatError || !m.RecursionAvailable {
		t.Fatalf("cut question: rcode %s RA %v, want FORMERR with RA", rcodeName(m.Rcode), m.RecursionAvailable)
	}
}
