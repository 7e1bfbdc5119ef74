package dns

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// upstream is a fake resolver on 127.0.0.0/8, UDP and TCP on one port.
type upstream struct {
	addr    string
	queries atomic.Int64
	mu      sync.Mutex
	seen    []*mdns.Msg // queries as received
	nets    []string    // "udp" or "tcp", per query
}

// startUpstream serves handle on a free port of ip until the test ends.
// handle gets the transport ("udp" or "tcp").
func startUpstream(t *testing.T, ip string, handle func(w mdns.ResponseWriter, r *mdns.Msg, network string)) *upstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatalf("fake upstream: %v", err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		pc.Close()
		t.Fatalf("fake upstream tcp: %v", err)
	}
	u := &upstream{addr: pc.LocalAddr().String()}
	wrap := func(network string) mdns.HandlerFunc {
		return func(w mdns.ResponseWriter, r *mdns.Msg) {
			u.queries.Add(1)
			u.mu.Lock()
			u.seen = append(u.seen, r.Copy())
			u.nets = append(u.nets, network)
			u.mu.Unlock()
			handle(w, r, network)
		}
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // runs after the shutdowns below (cleanups run last first)
	for _, srv := range []*mdns.Server{
		{PacketConn: pc, Handler: wrap("udp")},
		{Listener: ln, Handler: wrap("tcp")},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

// answerA answers every A question with addr.
func answerA(addr string) func(mdns.ResponseWriter, *mdns.Msg, string) {
	return func(w mdns.ResponseWriter, r *mdns.Msg, _ string) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A " + addr)
		m.Answer = []mdns.RR{rr}
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(4096, false)
		}
		_ = w.WriteMsg(m)
	}
}

func rcodeOnly(rcode int) func(mdns.ResponseWriter, *mdns.Msg, string) {
	return func(w mdns.ResponseWriter, r *mdns.Msg, _ string) {
		m := new(mdns.Msg)
		m.SetRcode(r, rcode)
		_ = w.WriteMsg(m)
	}
}

// silentUpstream is a UDP address that reads and never answers, and a TCP
// one that is closed: an upstream that times out.
func silentUpstream(t *testing.T, ip string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatalf("silent upstream: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func forwardingServer(t *testing.T, upstreams ...string) *Server {
	return newTestServer(t, Config{Forward: true, Upstreams: upstreams, UpstreamTimeout: 300 * time.Millisecond}, baseTable())
}

func answerAddrs(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func TestForwarding(t *testing.T) {
	good := startUpstream(t, "127.53.0.1", answerA("192.0.2.1"))
	good2 := startUpstream(t, "127.53.0.2", answerA("192.0.2.2"))
	servfail := startUpstream(t, "127.53.0.3", rcodeOnly(mdns.RcodeServerFailure))
	refused := startUpstream(t, "127.53.0.4", rcodeOnly(mdns.RcodeRefused))
	nxdomain := startUpstream(t, "127.53.0.5", rcodeOnly(mdns.RcodeNameError))
	silent := silentUpstream(t, "127.53.0.6")

	tests := []struct {
		name      string
		upstreams []string
		tcp       bool
		rcode     int
		addrs     []string
		failures  uint64 // upstream failures counted
	}{
		{name: "first upstream answers", upstreams: []string{good.addr, good2.addr}, addrs: []string{"192.0.2.1"}},
		{name: "over TCP from a TCP client", upstreams: []string{good.addr}, tcp: true, addrs: []string{"192.0.2.1"}},
		{name: "timeout fails over to the next", upstreams: []string{silent, good2.addr}, addrs: []string{"192.0.2.2"}, failures: 1},
		{name: "SERVFAIL fails over to the next", upstreams: []string{servfail.addr, good2.addr}, addrs: []string{"192.0.2.2"}, failures: 1},
		{name: "REFUSED fails over to the next", upstreams: []string{refused.addr, good.addr}, addrs: []string{"192.0.2.1"}, failures: 1},
		{name: "NXDOMAIN is an answer", upstreams: []string{nxdomain.addr, good.addr}, rcode: mdns.RcodeNameError},
		{name: "all fail: SERVFAIL", upstreams: []string{silent, servfail.addr}, rcode: mdns.RcodeServerFailure, failures: 2},
		{name: "closed port: SERVFAIL", upstreams: []string{"127.53.0.7:9"}, rcode: mdns.RcodeServerFailure, failures: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := forwardingServer(t, tc.upstreams...)
			q := question("Example.COM.", mdns.TypeA)
			r := ask(t, s, q, tc.tcp)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
			if got := answerAddrs(r); !slices.Equal(got, tc.addrs) {
				t.Fatalf("answer %v, want %v", got, tc.addrs)
			}
			if r.Question[0].Name != "Example.COM." {
				t.Fatalf("question came back as %s", r.Question[0].Name)
			}
			st := s.Stats()
			if st.UpstreamFailures != tc.failures {
				t.Fatalf("UpstreamFailures %d, want %d", st.UpstreamFailures, tc.failures)
			}
			wantFwd, wantFail := uint64(1), uint64(0)
			if tc.rcode == mdns.RcodeServerFailure {
				wantFwd, wantFail = 0, 1
			}
			if st.Forwarded != wantFwd || st.ForwardFailures != wantFail {
				t.Fatalf("Forwarded %d ForwardFailures %d, want %d %d", st.Forwarded, st.ForwardFailures, wantFwd, wantFail)
			}
		})
	}
	t.Run("transport follows the client", func(t *testing.T) {
		u := startUpstream(t, "127.53.0.8", answerA("192.0.2.8"))
		s := forwardingServer(t, u.addr)
		ask(t, s, question("a.example.", mdns.TypeA), false)
		ask(t, s, question("b.example.", mdns.TypeA), true)
		u.mu.Lock()
		defer u.mu.Unlock()
		if !slices.Equal(u.nets, []string{"udp", "tcp"}) {
			t.Fatalf("upstream saw %v, want [udp tcp]", u.nets)
		}
	})
}

func TestForwardRetriesTruncatedOverTCP(t *testing.T) {
	u := startUpstream(t, "127.53.1.1", func(w mdns.ResponseWriter, r *mdns.Msg, network string) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if network == "udp" {
			m.Truncated = true
		} else {
			for i := 1; i <= 3; i++ {
				rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2." + strconv.Itoa(i))
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})
	s := forwardingServer(t, u.addr)
	r := ask(t, s, question("big.example.", mdns.TypeA), false)
	if r.Truncated || len(r.Answer) != 3 {
		t.Fatalf("TC %v with %d answers, want the full TCP answer", r.Truncated, len(r.Answer))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !slices.Equal(u.nets, []string{"udp", "tcp"}) {
		t.Fatalf("upstream saw %v, want [udp tcp]", u.nets)
	}
}

func TestForwardRetriesOverTCPWhenUDPAnswerOverflows(t *testing.T) {
	// An upstream that ignores our 1232-byte buffer and sends 1.7 KB over UDP.
	u := startUpstream(t, "127.53.1.5", func(w mdns.ResponseWriter, r *mdns.Msg, _ string) {
		m := new(mdns.Msg)
		m.SetReply(r)
		for i := 1; i <= 60; i++ {
			rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2." + strconv.Itoa(i))
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m) // uncompressed: over 1232 bytes
	})
	s := forwardingServer(t, u.addr)
	r := ask(t, s, withEDNS(question("huge.example.", mdns.TypeA), 4096, false), false)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 60 {
		t.Fatalf("rcode %s with %d answers, want the 60 from TCP", mdns.RcodeToString[r.Rcode], len(r.Answer))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !slices.Equal(u.nets, []string{"udp", "tcp"}) {
		t.Fatalf("upstream saw %v, want [udp tcp]", u.nets)
	}
}

func TestForwardedReplyFitsTheClient(t *testing.T) {
	// 60 A records: about 1 KB, over a plain client's 512 bytes.
	u := startUpstream(t, "127.53.1.2", func(w mdns.ResponseWriter, r *mdns.Msg, _ string) {
		m := new(mdns.Msg)
		m.SetReply(r)
		for i := 1; i <= 60; i++ {
			rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2." + strconv.Itoa(i))
			m.Answer = append(m.Answer, rr)
		}
		m.SetEdns0(4096, false)
		m.Compress = true // about 1 KB: fits the 1232 bytes we ask upstream for
		_ = w.WriteMsg(m)
	})
	s := forwardingServer(t, u.addr)
	t.Run("plain client: TC and no OPT", func(t *testing.T) {
		r := ask(t, s, question("many.example.", mdns.TypeA), false) // ask checks 512
		if !r.Truncated || r.IsEdns0() != nil {
			t.Fatalf("TC %v OPT %v, want TC and no OPT", r.Truncated, r.IsEdns0())
		}
	})
	t.Run("EDNS client with room: everything", func(t *testing.T) {
		r := ask(t, s, withEDNS(question("many.example.", mdns.TypeA), 4096, false), false)
		if r.Truncated || len(r.Answer) != 60 || r.IsEdns0() == nil || r.IsEdns0().UDPSize() != ednsSize {
			t.Fatalf("TC %v, %d answers, OPT %v", r.Truncated, len(r.Answer), r.IsEdns0())
		}
	})
}

func TestForwardingLoopIsStopped(t *testing.T) {
	u := startUpstream(t, "127.53.1.3", answerA("192.0.2.1"))
	s := forwardingServer(t, u.addr)
	ask(t, s, withEDNS(question("loop.example.", mdns.TypeA), 1232, false), false)
	u.mu.Lock()
	sent := u.seen[0]
	u.mu.Unlock()
	if sent.IsEdns0() == nil {
		t.Fatalf("forwarded query has no OPT to carry the marker")
	}
	// The upstream sends our own query back to us, as a loop would.
	before := u.queries.Load()
	r := ask(t, s, sent, false)
	if r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("looped query: rcode %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
	if u.queries.Load() != before {
		t.Fatalf("looped query was forwarded again")
	}
	if s.Stats().Loops != 1 {
		t.Fatalf("Loops %d, want 1", s.Stats().Loops)
	}
	// Another l4lb server on the path forwards it: its marker is not ours.
	other := forwardingServer(t, u.addr)
	if r := ask(t, other, sent, false); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("query marked by another server: rcode %s, want NOERROR", mdns.RcodeToString[r.Rcode])
	}
}

func TestInFlightCap(t *testing.T) {
	release := make(chan struct{})
	u := startUpstream(t, "127.53.1.4", func(w mdns.ResponseWriter, r *mdns.Msg, n string) {
		<-release
		answerA("192.0.2.1")(w, r, n)
	})
	s := newTestServer(t, Config{Forward: true, Upstreams: []string{u.addr}, UpstreamTimeout: 5 * time.Second, MaxInFlight: 1}, baseTable())
	done := make(chan *mdns.Msg)
	go func() {
		rec := newRecorder(false)
		s.ServeDNS(rec, question("slow.example.", mdns.TypeA))
		done <- rec.reply(t)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.inFlight.Load() != 1 || u.queries.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the first query never reached the upstream")
		}
		time.Sleep(time.Millisecond)
	}
	// Even an answer from the zone is over the cap.
	r := ask(t, s, question("nope."+apex, mdns.TypeA), false)
	if r.Rcode != mdns.RcodeRefused {
		t.Fatalf("over the cap: rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	if s.Stats().InFlightCapHits != 1 {
		t.Fatalf("InFlightCapHits %d, want 1", s.Stats().InFlightCapHits)
	}
	close(release)
	if r := <-done; r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("first query: rcode %s", mdns.RcodeToString[r.Rcode])
	}
	if r := ask(t, s, question("nope."+apex, mdns.TypeA), false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("under the cap again: rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
}

func TestUpstreamSelection(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.2\nnameserver 127.53.9.9\nnameserver 10.1.2.3\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "resolv.conf minus our listen address",
			cfg:  Config{Forward: true, Listen: []string{"127.0.0.2:53"}, resolvConf: conf},
			want: []string{"127.53.9.9:53", "10.1.2.3:53"}},
		{name: "configured upstreams minus ours, port 53 by default",
			cfg:  Config{Forward: true, Listen: []string{"127.0.0.2:53", "127.0.0.3:5353"}, Upstreams: []string{"127.0.0.2", "127.0.0.3:5353", "127.0.0.3", "[::1]:53"}},
			want: []string{"127.0.0.3:53", "[::1]:53"}},
		{name: "listening on every address excludes loopback on our port",
			cfg:  Config{Forward: true, Listen: []string{"0.0.0.0:53"}, Upstreams: []string{"127.0.0.1", "127.0.0.1:5300", "10.1.2.3"}},
			want: []string{"127.0.0.1:5300", "10.1.2.3:53"}},
		{name: "forwarding off reads no resolv.conf",
			cfg:  Config{Forward: false, resolvConf: conf},
			want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = quietLog()
			st, err := settle(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(st.upstreams, tc.want) {
				t.Fatalf("upstreams %v, want %v", st.upstreams, tc.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		st, err := settle(Config{Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		if st.apex != "l4lb.thisdcos.directory." || st.ttl != 5 || st.timeout != DefaultUpstreamTimeout || st.maxInFlight != DefaultMaxInFlight {
			t.Fatalf("defaults: %+v", st)
		}
		if !slices.Equal(st.aliases, []string{"dclb.thisdcos.directory.", "l4lb.thisdcos.global.", "dclb.thisdcos.global."}) {
			t.Fatalf("aliases %v", st.aliases)
		}
		if len(st.listen) != 1 || st.listen[0].String() != DefaultListen {
			t.Fatalf("listen %v", st.listen)
		}
	})
	t.Run("no aliases", func(t *testing.T) {
		s := newTestServer(t, Config{Aliases: []string{}}, baseTable())
		if r := ask(t, s, question("app2.dcos-101.marathon.dclb.thisdcos.global.", mdns.TypeA), false); r.Rcode != mdns.RcodeRefused {
			t.Fatalf("alias switched off: rcode %s, want REFUSED (outside the zone, no forwarding)", mdns.RcodeToString[r.Rcode])
		}
	})
	bad := []struct {
		name string
		cfg  Config
	}{
		{"bad domain", Config{Domain: "a..b"}},
		{"bad alias", Config{Aliases: []string{"."}}},
		{"negative TTL", Config{TTL: -time.Second}},
		{"listen without port", Config{Listen: []string{"127.0.0.1"}}},
		{"bad upstream", Config{Upstreams: []string{"resolver.example"}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = quietLog()
			if _, err := NewServer(tc.cfg); err == nil {
				t.Fatalf("NewServer accepted %+v", tc.cfg)
			}
		})
	}
}
