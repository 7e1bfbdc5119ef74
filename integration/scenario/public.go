package scenario

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
)

// The public node of the seed scenario: node1 also has PublicAddr, on a
// network of its own ("outside") that joins it to a client namespace that
// is no cluster node and runs no l4lb. Its agent runs with
// --public-address PublicAddr.
const (
	PublicNode = 1
	PublicAddr = "192.0.2.1"
	// StickyVIP is the VIP of the persistence step: both instances of app2,
	// with --persistence 60, public at its own port.
	StickyVIP  = "/dcos-101/app2-sticky:10001"
	StickyName = "app2-sticky.dcos-101.marathon.l4lb.thisdcos.directory"
)

// clientAddrs are the outside client's source addresses: clients of their
// own, as far as persistence is concerned.
var clientAddrs = func() []netip.Addr {
	var out []netip.Addr
	for i := 100; i < 108; i++ {
		out = append(out, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	return out
}()

// publicFlags are the agent flags of node i for the public node.
func publicFlags(i int) []string {
	if i != PublicNode {
		return nil
	}
	return []string{"--public-address", PublicAddr}
}

// Outside is the client namespace outside the cluster.
type Outside struct {
	*bed.Netns
}

// Outside links a client namespace to the public node (once per Env): the
// node gets PublicAddr/24, the client the clientAddrs, and a default route
// through the public node (which covers the VIP ranges too).
func (e *Env) Outside() *Outside {
	e.T.Helper()
	if e.outside != nil {
		return e.outside
	}
	c := bed.NewNetns(e.T, "client")
	_, end := bed.Link(e.T, e.C.Node(PublicNode).Netns, PublicAddr+"/24", c, clientAddrs[0].String()+"/24")
	for _, a := range clientAddrs[1:] {
		c.MustRun(e.T, "ip", "addr", "add", a.String()+"/24", "dev", end)
	}
	c.MustRun(e.T, "ip", "route", "add", "default", "via", PublicAddr)
	e.outside = &Outside{Netns: c}
	return e.outside
}

// Get makes one request from source address src (the first client address
// when invalid) on a new connection and returns the body.
func (o *Outside) Get(src netip.Addr, url string) (string, error) {
	if !src.IsValid() {
		src = clientAddrs[0]
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := o.Do(func() error {
				d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
				var err error
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// Spread makes n requests from src and counts who answered.
func (o *Outside) Spread(src netip.Addr, url string, n int) map[string]int {
	seen := map[string]int{}
	for k := 0; k < n; k++ {
		who, err := o.Get(src, url)
		if err != nil {
			who = "error: " + err.Error()
		}
		seen[who]++
	}
	return seen
}

// RunPublic is the public node's half of the seed: a client outside the
// cluster reaches app2 at http://PublicAddr:10000 and sees both instances
// (a and b, registered with --public); then sticky sessions: a VIP with
// --persistence sends every connection of one client to one instance,
// through the VIP and through the public port, while clients of other
// addresses spread over both. It returns who answered the outside client
// through the public port, and of how many (client, path) pairs how many
// kept one instance.
func (e *Env) RunPublic(a, b string) (seen map[string]int, sticky, pairs int) {
	t := e.T
	t.Helper()
	cl := e.Outside()
	pub := net.JoinHostPort(PublicAddr, "10000")
	e.Say("== 2b. A client outside the cluster (no l4lb, not a node) reaches app2 through the public node: http://%s/", pub)
	e.WaitRealServers(PublicNode, pub, 10*time.Second, "app2's public service with both instances", func(rs map[string]int) bool {
		return hasWeight(a, present)(rs) && hasWeight(b, present)(rs)
	})
	url := "http://" + pub + "/"
	seen = cl.Spread(netip.Addr{}, url, 12)
	e.Say("$ for i in $(seq 12); do curl %s; done   (on the outside client)\n%s", url, FormatSpread(seen))
	if seen["app2-a"] == 0 || seen["app2-b"] == 0 || seen["app2-a"]+seen["app2-b"] != 12 {
		t.Errorf("outside client through the public node: requests not spread over both instances: %s", FormatSpread(seen))
	}
	for _, i := range []int{2, 3} {
		if rs := e.RealServers(i, pub); len(rs) != 0 {
			t.Errorf("node%d is not public but serves %s: %v", i, pub, rs)
		}
	}
	vips := e.L4LB(PublicNode, "vips", "app2")
	if !strings.Contains(vips, " "+pub+" ") {
		t.Errorf("l4lb vips on the public node does not say where app2 is published (%s):\n%s", pub, vips)
	}
	e.Say("$ l4lb vips app2   (on node%d, the public node)\n%s", PublicNode, vips)

	e.Say("== 2c. Sticky sessions: %s with --persistence 60 --public, both instances", StickyVIP)
	for _, r := range []struct {
		node int
		addr string
	}{{2, a}, {3, b}} {
		e.L4LB(r.node, "register", StickyVIP, r.addr, "--check", "http:///healthz", "--persistence", "60", "--scheduler", "rr", "--public")
	}
	stickyVIP := net.JoinHostPort(e.WaitDig(PublicNode, StickyName, 10*time.Second), "10001")
	stickyPub := net.JoinHostPort(PublicAddr, "10001")
	for _, svc := range []string{stickyVIP, stickyPub} {
		e.WaitRealServers(PublicNode, svc, 10*time.Second, "sticky service with both instances", func(rs map[string]int) bool {
			return hasWeight(a, present)(rs) && hasWeight(b, present)(rs)
		})
	}
	for _, svc := range []struct{ what, addr string }{{"the VIP", stickyVIP}, {"the public port", stickyPub}} {
		url := "http://" + svc.addr + "/"
		clients := map[string]int{}
		var lines []string
		for _, src := range clientAddrs {
			got := cl.Spread(src, url, 5)
			lines = append(lines, fmt.Sprintf("client %s: %s", src, FormatSpread(got)))
			pairs++
			if len(got) != 1 {
				t.Errorf("persistence through %s: client %s reached %s, want one instance", svc.what, src, FormatSpread(got))
			} else {
				sticky++
			}
			for who := range got {
				clients[who]++
			}
		}
		e.Say("5 requests from each of %d client addresses through %s (%s):\n%s", len(clientAddrs), svc.what, url, strings.Join(lines, "\n"))
		if clients["app2-a"] == 0 || clients["app2-b"] == 0 {
			t.Errorf("persistence through %s: the clients did not spread over both instances: %v", svc.what, clients)
		}
	}
	for _, r := range []struct {
		node int
		addr string
	}{{2, a}, {3, b}} {
		e.L4LB(r.node, "deregister", StickyVIP, r.addr)
	}
	return seen, sticky, pairs
}
