package dns

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/l4lb/l4lb/vip"
)

// startServer runs a server on ip (a free port) until the test ends.
func startServer(t *testing.T, ip string, cfg Config, tab *vip.Table) (*Server, string, string) {
	t.Helper()
	cfg.Listen = []string{ip + ":0"}
	s := newTestServer(t, cfg, tab)
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		sctx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		if err := s.Shutdown(sctx); err != nil && err != errNotRunning {
			t.Errorf("Shutdown: %v", err)
		}
	})
	addrs := s.Addrs()
	if len(addrs) != 1 || addrs[0].Port() == 0 {
		t.Fatalf("Addrs %v", addrs)
	}
	return s, addrs[0].Addr().String(), strconv.Itoa(int(addrs[0].Port()))
}

// dig runs the real dig against the server and returns its output.
func dig(t *testing.T, ip, port string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err != nil {
		t.Fatalf("dig is needed for server tests (Debian bind9-dnsutils): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"@" + ip, "-p", port, "+time=2", "+tries=1"}, args...)
	out, err := exec.CommandContext(ctx, path, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", full, err, out)
	}
	return string(out)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func TestServerWithDig(t *testing.T) {
	up := startUpstream(t, "127.53.2.2", answerA("192.0.2.44"))
	s, ip, port := startServer(t, "127.53.2.1", Config{Forward: true, Upstreams: []string{up.addr}, UpstreamTimeout: time.Second}, baseTable())
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"A over UDP", []string{"+short", app2, "A"}, []string{"11.0.0.1"}},
		{"A over TCP", []string{"+short", "+tcp", app2, "A"}, []string{"11.0.0.1"}},
		{"A without EDNS", []string{"+short", "+noedns", app2Flat, "A"}, []string{"11.0.0.1"}},
		{"A, mixed case", []string{"+short", "APP2.dcos-101.Marathon.L4LB.thisdcos.directory", "A"}, []string{"11.0.0.1"}},
		{"A under an alias", []string{"+short", "app2.dcos-101.marathon.l4lb.thisdcos.global", "A"}, []string{"11.0.0.1"}},
		{"AAAA", []string{"+short", "web.marathon." + apex, "AAAA"}, []string{"fd01:c::5"}},
		{"SRV", []string{"+short", "_app2._tcp.dcos-101.marathon." + apex, "SRV"},
			[]string{"0 0 10000 " + app2, "0 0 10001 " + app2}},
		{"SRV over TCP", []string{"+short", "+tcp", "_app2._udp.dcos-101.marathon." + apex, "SRV"}, []string{"0 0 5353 " + app2}},
		{"forwarded", []string{"+short", "outside.example", "A"}, []string{"192.0.2.44"}},
		{"forwarded over TCP", []string{"+short", "+tcp", "outside.example", "A"}, []string{"192.0.2.44"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := lines(dig(t, ip, port, tc.args...)); !slices.Equal(got, tc.want) {
				t.Fatalf("dig %v:\n got %q\nwant %q", tc.args, got, tc.want)
			}
		})
	}
	statusTests := []struct {
		name, qname, qtype, status string
		authority                  bool
	}{
		{"NXDOMAIN with SOA", "nope.marathon." + apex, "A", "NXDOMAIN", true},
		{"NODATA with SOA", app2, "AAAA", "NOERROR", true},
		{"drained VIP", "drained.marathon." + apex, "A", "NXDOMAIN", true},
	}
	for _, tc := range statusTests {
		t.Run(tc.name, func(t *testing.T) {
			out := dig(t, ip, port, tc.qname, tc.qtype)
			if !strings.Contains(out, "status: "+tc.status) || !strings.Contains(out, " aa ") && !strings.Contains(out, " aa;") {
				t.Fatalf("want status %s with aa:\n%s", tc.status, out)
			}
			if tc.authority && !strings.Contains(out, "AUTHORITY: 1") {
				t.Fatalf("want the SOA in authority:\n%s", out)
			}
		})
	}
	t.Run("zone changes while serving", func(t *testing.T) {
		s.Update(table(named("/late/app", "11.0.0.77", 80, vip.TCP)))
		if got := lines(dig(t, ip, port, "+short", "app.late.marathon."+apex, "A")); !slices.Equal(got, []string{"11.0.0.77"}) {
			t.Fatalf("new VIP: %q", got)
		}
		if out := dig(t, ip, port, app2, "A"); !strings.Contains(out, "status: NXDOMAIN") {
			t.Fatalf("removed VIP still answered:\n%s", out)
		}
		s.Update(baseTable())
	})
	if st := s.Stats(); st.Prepared == 0 || st.Forwarded != 2 {
		t.Fatalf("stats after dig: %+v", st)
	}
}

func TestServerTruncatesOverUDP(t *testing.T) {
	_, ip, port := startServer(t, "127.53.2.3", Config{}, manyPorts(40))
	name := "_big._tcp.marathon." + apex
	out := dig(t, ip, port, "+noedns", "+ignore", name, "SRV")
	if !strings.Contains(out, " tc") {
		t.Fatalf("want TC over UDP without EDNS:\n%s", out)
	}
	// Without +ignore dig retries over TCP and gets everything.
	if got := lines(dig(t, ip, port, "+short", "+noedns", name, "SRV")); len(got) != 40 {
		t.Fatalf("after TCP retry: %d records, want 40", len(got))
	}
}

func TestServerSurvivesGarbage(t *testing.T) {
	s, ip, port := startServer(t, "127.53.2.4", Config{}, baseTable())
	conn, err := net.Dial("udp", net.JoinHostPort(ip, port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	valid, _ := question(app2, mdns.TypeA).Pack()
	tests := []struct {
		name   string
		packet []byte
		rcode  int // -1: no reply expected
	}{
		{"shorter than a header", []byte{1, 2, 3}, -1},
		{"header only, no question", valid[:12], mdns.RcodeFormatError},
		{"question cut short", valid[:len(valid)-3], mdns.RcodeFormatError},
		{"a response", func() []byte { b := slices.Clone(valid); b[2] |= 0x80; return b }(), -1},
		{"two questions", func() []byte {
			m := question(app2, mdns.TypeA)
			m.Question = append(m.Question, m.Question[0])
			b, _ := m.Pack()
			return b
		}(), mdns.RcodeFormatError},
		{"label pointing at itself", append(slices.Clone(valid[:12]), 0xc0, 12, 0, 1, 0, 1), mdns.RcodeFormatError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Write(tc.packet); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1024)
			_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := conn.Read(buf)
			if tc.rcode < 0 {
				if err == nil {
					t.Fatalf("got a %d-byte reply, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			m := new(mdns.Msg)
			if err := m.Unpack(buf[:n]); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if m.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[m.Rcode], mdns.RcodeToString[tc.rcode])
			}
		})
	}
	// Still serving.
	if got := lines(dig(t, ip, port, "+short", app2, "A")); !slices.Equal(got, []string{"11.0.0.1"}) {
		t.Fatalf("after garbage: %q", got)
	}
	st := s.Stats()
	if st.Dropped < 2 || st.FormErr < 3 {
		t.Fatalf("Dropped %d FormErr %d, want at least 2 and 3", st.Dropped, st.FormErr)
	}
}

func TestServerLifecycle(t *testing.T) {
	s := newTestServer(t, Config{Listen: []string{"127.53.2.5:0"}}, baseTable())
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Fatalf("second Start succeeded")
	}
	addr := s.Addrs()[0]
	// Cancelling Start's context shuts the server down.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Addrs()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server still running after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The port is free again.
	for _, network := range []string{"udp", "tcp"} {
		var c interface{ Close() error }
		var err error
		if network == "udp" {
			c, err = net.ListenPacket("udp", addr.String())
		} else {
			c, err = net.Listen("tcp", addr.String())
		}
		if err != nil {
			t.Fatalf("%s port not released: %v", network, err)
		}
		c.Close()
	}
	t.Run("address in use is an error", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.53.2.6:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		s := newTestServer(t, Config{Listen: []string{ln.Addr().String()}}, nil)
		if err := s.Start(context.Background()); err == nil {
			_ = s.Shutdown(context.Background())
			t.Fatalf("Start on a taken TCP port succeeded")
		}
	})
}

func TestForwardingLoopBetweenServers(t *testing.T) {
	// Two servers that forward to each other: the query must come back as
	// SERVFAIL, not circle until timeouts.
	aAddr, bAddr := freePort(t, "127.53.3.1"), freePort(t, "127.53.3.2")
	a := newTestServer(t, Config{Listen: []string{aAddr}, Forward: true, Upstreams: []string{bAddr}, UpstreamTimeout: 3 * time.Second}, nil)
	b := newTestServer(t, Config{Listen: []string{bAddr}, Forward: true, Upstreams: []string{aAddr}, UpstreamTimeout: 3 * time.Second}, nil)
	for _, s := range []*Server{a, b} {
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	}
	start := time.Now()
	out := dig(t, a.Addrs()[0].Addr().String(), strconv.Itoa(int(a.Addrs()[0].Port())), "+time=6", "loop.example", "A")
	if !strings.Contains(out, "status: SERVFAIL") {
		t.Fatalf("want SERVFAIL:\n%s", out)
	}
	// Undetected, the query would circle until the first exchange timed out.
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("loop took %s to stop; it should stop at the first return", took)
	}
	if a.Stats().Loops != 1 {
		t.Fatalf("a.Loops %d, want 1", a.Stats().Loops)
	}
}

// freePort returns ip:port with a port that was free on ip for UDP.
func freePort(t *testing.T, ip string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// On an unspecified address the replies go through miekg's session so that
// they leave from the address the query came to; the prepared answers are
// served in its read loop.
func TestServerOnEveryAddress(t *testing.T) {
	s := newTestServer(t, Config{Listen: []string{"0.0.0.0:0"}}, baseTable())
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	port := strconv.Itoa(int(s.Addrs()[0].Port()))
	for _, ip := range []string{"127.0.0.1", "127.53.4.1"} {
		for _, args := range [][]string{{"+short", app2, "A"}, {"+short", "+tcp", app2, "A"}, {"+short", app2Flat + "", "A"}} {
			if got := lines(dig(t, ip, port, args...)); !slices.Equal(got, []string{"11.0.0.1"}) {
				t.Fatalf("dig @%s %v: %q", ip, args, got)
			}
		}
		if out := dig(t, ip, port, "nope."+apex, "A"); !strings.Contains(out, "status: NXDOMAIN") {
			t.Fatalf("dig @%s NXDOMAIN:\n%s", ip, out)
		}
	}
	if st := s.Stats(); st.Prepared < 4 || st.Replies["NXDOMAIN"] != 2 {
		t.Fatalf("stats %+v", st)
	}
}
