package kerneltest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"

	"github.com/l4lb/l4lb/ipvs/nftables"
)

var nsCounter atomic.Int64

// netNS is a network namespace the test created; deleted when it ends.
type netNS struct {
	name   string
	handle netns.NsHandle
}

func newNS(t testing.TB, prefix string) *netNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("kernel tests need root (network namespaces, nf_tables)")
	}
	name := fmt.Sprintf("nft%s-%d-%d", prefix, os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("create network namespace %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open network namespace %s: %v", name, err)
	}
	n := &netNS{name: name, handle: h}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("delete network namespace %s: %v: %s", name, err, out)
		}
	})
	n.mustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *netNS) path() string { return "/run/netns/" + n.name }

func (n *netNS) run(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + n.path(), "--"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", n.name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (n *netNS) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// do runs fn on a thread inside the namespace; sockets made in fn stay there.
func (n *netNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(n.handle); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// bed is a client, a load balancer and two backends, each in its own
// namespace; the client and backends route everything through lb.
//
//	client 10.90.1.2 fd90:1::2 -- lb 10.90.1.1 fd90:1::1
//	b1     10.90.2.2 fd90:2::2 -- lb 10.90.2.1 fd90:2::1
//	b2     10.90.3.2 fd90:3::2 -- lb 10.90.3.1 fd90:3::1
type bed struct {
	client, lb *netNS
	backends   []*netNS
	names      map[string]string // backend address -> name
}

func newBed(t testing.TB) *bed {
	t.Helper()
	b := &bed{lb: newNS(t, "lb"), names: map[string]string{}}
	b.client = b.link(t, "c", 1)
	for i := 0; i < 2; i++ {
		ns := b.link(t, fmt.Sprintf("b%d", i+1), i+2)
		b.backends = append(b.backends, ns)
		b.names[fmt.Sprintf("10.90.%d.2", i+2)] = fmt.Sprintf("b%d", i+1)
		b.names[fmt.Sprintf("fd90:%d::2", i+2)] = fmt.Sprintf("b%d", i+1)
	}
	// Local processes of lb need a route to the VIPs before the output
	// chain rewrites them (a real node's default route does it).
	b.lb.mustRun(t, "ip", "route", "add", "11.0.0.0/8", "via", "10.90.2.2")
	b.lb.mustRun(t, "ip", "-6", "route", "add", "fd01:c::/64", "via", "fd90:2::2")
	return b
}

// link creates namespace prefix, joined to lb by a veth pair on subnet i.
func (b *bed) link(t testing.TB, prefix string, i int) *netNS {
	t.Helper()
	ns := newNS(t, prefix)
	peer := fmt.Sprintf("l%s%d", prefix, nsCounter.Load())
	b.lb.mustRun(t, "ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns.path())
	b.lb.mustRun(t, "ip", "addr", "add", fmt.Sprintf("10.90.%d.1/24", i), "dev", peer)
	b.lb.mustRun(t, "ip", "addr", "add", fmt.Sprintf("fd90:%d::1/64", i), "dev", peer, "nodad")
	b.lb.mustRun(t, "ip", "link", "set", peer, "up")
	ns.mustRun(t, "ip", "addr", "add", fmt.Sprintf("10.90.%d.2/24", i), "dev", "eth0")
	ns.mustRun(t, "ip", "addr", "add", fmt.Sprintf("fd90:%d::2/64", i), "dev", "eth0", "nodad")
	ns.mustRun(t, "ip", "link", "set", "eth0", "up")
	ns.mustRun(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.90.%d.1", i))
	ns.mustRun(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd90:%d::1", i))
	return ns
}

// reconciler opens a Reconciler on lb.
func (b *bed) reconciler(t testing.TB, cfg nftables.Config) *nftables.Reconciler {
	t.Helper()
	cfg.Namespace = b.lb.path()
	if cfg.Logger == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		cfg.Logger = logrus.NewEntry(l)
	}
	if cfg.ResyncPeriod == 0 {
		cfg.ResyncPeriod = time.Hour // tests ask for full resyncs themselves
	}
	r, err := nftables.New(cfg)
	if err != nil {
		t.Fatalf("nftables.New on a kernel that should have nf_tables: %v", err)
	}
	t.Cleanup(func() { _ = r.Close(false) })
	return r
}

// serve starts, in every backend, a TCP server on port (both families)
// that writes its name and a newline, then echoes lines until the client
// closes; and a UDP server on the same port that answers each datagram
// with its name.
func (b *bed) serve(t testing.TB, port int) {
	t.Helper()
	for i, ns := range b.backends {
		name := fmt.Sprintf("b%d", i+1)
		var ln net.Listener
		var pc net.PacketConn
		err := ns.do(func() error {
			var err error
			if ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port)); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
			return err
		})
		if err != nil {
			t.Fatalf("listen in %s: %v", name, err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex // guards open
		open := map[net.Conn]bool{}
		t.Cleanup(func() {
			ln.Close()
			pc.Close()
			// Connections whose client went elsewhere (a conntrack entry
			// deleted) never end on their own.
			mu.Lock()
			for c := range open {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				open[c] = true
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() {
						mu.Lock()
						delete(open, c)
						mu.Unlock()
						c.Close()
					}()
					fmt.Fprintf(c, "%s\n", name)
					s := bufio.NewScanner(c)
					for s.Scan() {
						fmt.Fprintf(c, "%s %s\n", name, s.Text())
					}
				}()
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(name), from)
			}
		}()
	}
}

// conn is a TCP connection through a VIP, as a client holds it.
type conn struct {
	c       net.Conn
	r       *bufio.Reader
	backend string
}

// dialTCP connects from ns to addr and returns the backend's name.
func dialTCP(ns *netNS, addr string) (*conn, error) {
	var c net.Conn
	err := ns.do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	return &conn{c: c, r: r, backend: strings.TrimSpace(line)}, nil
}

// echo sends a line and checks the answer comes from the same backend.
func (c *conn) echo(msg string) error {
	_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c.c, "%s\n", msg); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if want := c.backend + " " + msg; strings.TrimSpace(line) != want {
		return fmt.Errorf("echo %q, want %q", strings.TrimSpace(line), want)
	}
	return nil
}

func (c *conn) close() { c.c.Close() }

// hitsTCP makes n connections from ns to addr, one after the other, and
// counts the backends that answered.
func hitsTCP(t testing.TB, ns *netNS, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		c, err := dialTCP(ns, addr)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		got[c.backend]++
		c.close()
	}
	return got
}

// hitsUDP sends n datagrams from ns to addr, each from a new socket, and
// counts the backends that answered.
func hitsUDP(t testing.TB, ns *netNS, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		var c net.Conn
		if err := ns.do(func() error {
			var err error
			c, err = net.Dial("udp", addr)
			return err
		}); err != nil {
			t.Fatalf("udp socket: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatalf("datagram %d to %s: %v", i, addr, err)
		}
		buf := make([]byte, 64)
		k, err := c.Read(buf)
		c.Close()
		if err != nil {
			t.Fatalf("answer to datagram %d to %s: %v", i, addr, err)
		}
		got[string(buf[:k])]++
	}
	return got
}

// nft runs nft in lb.
func (b *bed) nft(t testing.TB, args ...string) string {
	t.Helper()
	return b.lb.mustRun(t, append([]string{"nft"}, args...)...)
}

// runReconciler runs r in the background until the test ends.
func runReconciler(t testing.TB, r *nftables.Reconciler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}
