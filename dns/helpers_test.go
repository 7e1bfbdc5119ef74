package dns

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// recorder is a ResponseWriter that keeps what the handler wrote, without
// sockets.
type recorder struct {
	mu     sync.Mutex
	remote net.Addr
	wire   [][]byte
}

func newRecorder(tcp bool) *recorder {
	if tcp {
		return &recorder{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	}
	return &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = r.Write(b)
	return err
}
func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wire = append(r.wire, append([]byte(nil), b...))
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

var _ mdns.ResponseWriter = (*recorder)(nil)

// reply returns the single reply written, unpacked; it fails the test when
// there is not exactly one, or when it is over the size the client allows.
func (r *recorder) reply(t testing.TB) *mdns.Msg {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.wire) != 1 {
		t.Fatalf("handler wrote %d replies, want 1", len(r.wire))
	}
	m := new(mdns.Msg)
	if err := m.Unpack(r.wire[0]); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	return m
}

func (r *recorder) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.wire[0])
}

// quietLog is a logger for tests that shows warnings and errors only.
func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// named builds a named VIP as vip.Build would: Names holds the path name and
// the flattened DC/OS name (when it differs) under the default domain, as
// vip.DNSNames spells them.
func named(path string, addr string, port uint16, proto vip.Protocol, weights ...uint32) vip.VIP {
	pathName, flat, err := vip.DNSNames(path, "", "")
	if err != nil {
		panic(err)
	}
	names := []string{pathName}
	if flat != "" && flat != pathName {
		names = append(names, flat)
	}
	v := vip.VIP{
		ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr(addr), Port: port, Protocol: proto},
		Label:      fmt.Sprintf("%s:%d", path, port),
		Name:       path,
		Framework:  vip.DefaultFramework,
		Names:      names,
		Scheduler:  vip.DefaultScheduler,
	}
	if len(weights) == 0 {
		weights = []uint32{1}
	}
	for i, w := range weights {
		v.Backends = append(v.Backends, vip.Backend{
			Addr:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080),
			Weight: w,
			Node:   "node-1",
			Health: vip.Healthy,
		})
	}
	return v
}

func table(vips ...vip.VIP) *vip.Table { return &vip.Table{VIPs: vips} }

// question builds a query as dig would (RD set, no EDNS).
func question(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// withEDNS adds an OPT record with the given buffer size.
func withEDNS(m *mdns.Msg, size uint16, do bool) *mdns.Msg {
	m.SetEdns0(size, do)
	return m
}

// ask runs one query through the handler and returns the reply.
func ask(t testing.TB, s *Server, m *mdns.Msg, tcp bool) *mdns.Msg {
	t.Helper()
	rec := newRecorder(tcp)
	s.ServeDNS(rec, m)
	reply := rec.reply(t)
	if reply.Id != m.Id {
		t.Fatalf("reply ID %d, want %d", reply.Id, m.Id)
	}
	if !reply.Response {
		t.Fatalf("reply without QR")
	}
	limit := mdns.MaxMsgSize
	if !tcp {
		limit = mdns.MinMsgSize
		if o := m.IsEdns0(); o != nil && int(o.UDPSize()) > limit {
			limit = int(o.UDPSize())
		}
	}
	if n := rec.size(); n > limit {
		t.Fatalf("reply of %d bytes over the client's %d", n, limit)
	}
	return reply
}

// newTestServer makes a server for handler tests (no listeners).
func newTestServer(t testing.TB, cfg Config, tab *vip.Table) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLog()
	}
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.2:53"}
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if tab != nil {
		s.Update(tab)
	}
	return s
}

// rrStrings renders records for comparison.
func rrStrings(rrs []mdns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

// zoneNames returns the owner names of a zone, sorted.
func zoneNames(z *zone) []string {
	var names []string
	z.each(func(name string, _ *node) { names = append(names, name) })
	slices.Sort(names)
	return names
}
