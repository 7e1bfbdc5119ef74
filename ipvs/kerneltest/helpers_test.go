package kerneltest

import (
	"bufio"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/ipvs/ipvstest"
	"github.com/l4lb/l4lb/vip"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(testWriter{t})
	return logrus.NewEntry(l)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// lb is a Reconciler in a namespace, driven by SyncNow and a fake clock.
type lb struct {
	t     testing.TB
	ns    *bed.Netns
	r     *ipvs.Reconciler
	clock *runner.FakeClock
}

func newLB(t testing.TB, ns *bed.Netns, mod func(*ipvs.Config)) *lb {
	t.Helper()
	clock := runner.NewFakeClock(t0)
	cfg := ipvs.Config{
		Namespace:          ns.Path(),
		Logger:             testLogger(t),
		Clock:              clock,
		DrainTimeout:       time.Minute,
		DrainCheckInterval: time.Second,
		Masquerade:         ipvs.Masquerade{Disabled: true},
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := ipvs.New(cfg)
	if err != nil {
		t.Fatalf("ipvs.New in %s: %v", ns.Name, err)
	}
	l := &lb{t: t, ns: ns, r: r, clock: clock}
	t.Cleanup(func() { r.Close(false) })
	return l
}

// apply syncs tab and returns the writes the sync made, by kind.
func (l *lb) apply(tab *vip.Table, full bool) map[string]uint64 {
	l.t.Helper()
	before := l.r.Stats().Ops
	l.r.Update(tab)
	if err := l.r.SyncNow(full); err != nil {
		l.t.Fatalf("sync: %v", err)
	}
	out := map[string]uint64{}
	for k, n := range l.r.Stats().Ops {
		if d := n - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func total(ops map[string]uint64) uint64 {
	var n uint64
	for _, c := range ops {
		n += c
	}
	return n
}

// table prints `ipvsadm -Ln` as "TCP 11.0.0.1:80 wlc [flags]: 10.0.0.1:80 Masq 1, ..."
// lines, sorted.
func table(t testing.TB, ns *bed.Netns) []string {
	t.Helper()
	var out []string
	for _, s := range ns.IPVSTable(t) {
		line := s.Protocol + " " + s.Address + " " + s.Scheduler
		if s.Flags != "" {
			line += " " + s.Flags
		}
		var rs []string
		for _, r := range s.Real {
			rs = append(rs, fmt.Sprintf("%s %s %d", r.Address, r.Forward, r.Weight))
		}
		sort.Strings(rs)
		out = append(out, line+": "+strings.Join(rs, ", "))
	}
	sort.Strings(out)
	return out
}

// Test tables, built by ipvstest.
var (
	vipOf    = ipvstest.VIP
	tableOf  = ipvstest.Table
	bigTable = ipvstest.BigTable
)

// serveNamed answers each TCP connection with name, then echoes lines.
func serveNamed(t testing.TB, ns *bed.Netns, addr, name string) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintln(c, name)
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintln(c, sc.Text())
				}
			}()
		}
	}()
}

// serveNamedUDP answers each datagram with name.
func serveNamedUDP(t testing.TB, ns *bed.Netns, addr, name string) {
	t.Helper()
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name+"\n"), from)
		}
	}()
}

// conn is an established connection through a VIP, to the backend named
// Backend.
type conn struct {
	net.Conn
	Backend string
	r       *bufio.Reader
}

func dial(t testing.TB, from *bed.Netns, addr string) *conn {
	t.Helper()
	c, err := from.Dial("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", from.Name, addr, err)
	}
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	name, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("connection from %s to %s: read the backend's name: %v", from.Name, addr, err)
	}
	return &conn{Conn: c, Backend: strings.TrimSpace(name), r: r}
}

// echo proves the connection still carries data both ways.
func (c *conn) echo(msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echo %q came back as %q", msg, got)
	}
	return nil
}

// backendOf connects once and returns the name of the backend that answered.
func backendOf(t testing.TB, from *bed.Netns, addr string) string {
	t.Helper()
	c := dial(t, from, addr)
	c.Close()
	return c.Backend
}

// lbTopology is an lb namespace with two backend namespaces and a client:
//
//	client (10.1.3.2) --- lb (10.1.3.1 | 10.1.1.1 | 10.1.2.1) --- b1 (10.1.1.2), b2 (10.1.2.2)
type lbTopology struct {
	lb, b1, b2, client *bed.Netns
}

func newLBTopology(t testing.TB) *lbTopology {
	t.Helper()
	tp := &lbTopology{lb: bed.NewNetns(t, "lb"), b1: bed.NewNetns(t, "b1"), b2: bed.NewNetns(t, "b2"), client: bed.NewNetns(t, "client")}
	bed.Link(t, tp.lb, "10.1.1.1/24", tp.b1, "10.1.1.2/24")
	bed.Link(t, tp.lb, "10.1.2.1/24", tp.b2, "10.1.2.2/24")
	bed.Link(t, tp.lb, "10.1.3.1/24", tp.client, "10.1.3.2/24")
	tp.b1.MustRun(t, "ip", "route", "add", "default", "via", "10.1.1.1")
	tp.b2.MustRun(t, "ip", "route", "add", "default", "via", "10.1.2.1")
	tp.client.MustRun(t, "ip", "route", "add", "default", "via", "10.1.3.1")
	tp.lb.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	serveNamed(t, tp.b1, ":8080", "b1")
	serveNamed(t, tp.b2, ":8080", "b2")
	return tp
}
