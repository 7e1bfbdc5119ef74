package kerneltest

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs"
)

// TestPublicServiceFromOutside: a three-node cluster whose node1 is public
// (192.0.2.1, on a link to a client namespace that is no node). A VIP with
// public port 10000 and backends on node2 and node3 is reached by the
// client at 192.0.2.1:10000 (masqueraded, replies forwarded back), spread
// over both backends, and with persistence each client address keeps its
// backend. The public address never goes onto the dummy interface, an
// operator's service on it is never touched, and Cleanup removes exactly
// the public services l4lb recorded.
func TestPublicServiceFromOutside(t *testing.T) {
	c := bed.NewCluster(t, 3)
	client := bed.NewNetns(t, "client")
	_, end := bed.Link(t, c.Node(1).Netns, "192.0.2.1/24", client, "192.0.2.100/24")
	client.MustRun(t, "ip", "addr", "add", "192.0.2.101/24", "dev", end)
	client.MustRun(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	public := netip.MustParseAddr("192.0.2.1")
	record := filepath.Join(t.TempDir(), "public-services.json")

	v := vipOf("tcp 11.0.0.1:8080", "10.200.0.2:8080", "10.200.0.3:8080")
	v.Scheduler, v.PublicPort = "rr", 10000
	tab := tableOf(v)
	lbs := map[int]*lb{}
	for i := 1; i <= 3; i++ {
		mod := func(cfg *ipvs.Config) { cfg.Masquerade = ipvs.Masquerade{} }
		if i == 1 {
			mod = func(cfg *ipvs.Config) {
				cfg.Masquerade = ipvs.Masquerade{}
				cfg.PublicAddrs, cfg.PublicRecord = []netip.Addr{public}, record
			}
		}
		lbs[i] = newLB(t, c.Node(i).Netns, mod)
		lbs[i].apply(tab, false)
	}
	serveNamed(t, c.Node(2).Netns, ":8080", "node2")
	serveNamed(t, c.Node(3).Netns, ":8080", "node3")
	n1 := c.Node(1)
	// An operator's own service on the node's address, there before l4lb.
	n1.MustRun(t, "ipvsadm", "-A", "-t", "192.0.2.1:22", "-s", "rr")
	n1.MustRun(t, "ipvsadm", "-a", "-t", "192.0.2.1:22", "-r", "10.200.0.9:22", "-m")
	lbs[1].apply(tab, true)

	want := []string{
		"TCP 11.0.0.1:8080 rr: 10.200.0.2:8080 Masq 1, 10.200.0.3:8080 Masq 1",
		"TCP 192.0.2.1:10000 rr: 10.200.0.2:8080 Masq 1, 10.200.0.3:8080 Masq 1",
		"TCP 192.0.2.1:22 rr: 10.200.0.9:22 Masq 1",
	}
	if got := table(t, n1.Netns); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("node1 ipvsadm -Ln:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := table(t, c.Node(2).Netns); len(got) != 1 {
		t.Errorf("node2 is not public, ipvsadm -Ln: %q", got)
	}
	if addrs := n1.MustRun(t, "ip", "-o", "addr", "show", "dev", "minuteman"); strings.Contains(addrs, "192.0.2.1") {
		t.Errorf("the public address went onto the dummy interface:\n%s", addrs)
	}
	if fwd, err := ipvs.ReadSysctl(n1.Path(), "net.ipv4.ip_forward"); err != nil || fwd != "1" {
		t.Errorf("public node: net.ipv4.ip_forward = %q, %v; want 1", fwd, err)
	}

	seen := map[string]int{}
	for k := 0; k < 8; k++ {
		cn := dial(t, client, "192.0.2.1:10000")
		if err := cn.echo("hello"); err != nil {
			t.Errorf("connection from outside through the public address to %s: %v", cn.Backend, err)
		}
		seen[cn.Backend]++
		cn.Close()
	}
	if seen["node2"] != 4 || seen["node3"] != 4 {
		t.Errorf("8 connections from outside to 192.0.2.1:10000 (rr): %v, want 4 on each backend", seen)
	}

	t.Run("persistence per client through the public port", func(t *testing.T) {
		p := v
		p.Persistence = 60
		if got := lbs[1].apply(tableOf(p), false); got["update_service"] != 2 {
			t.Fatalf("persistence on: writes %v, want 2 update_service (the VIP and its public service)", got)
		}
		first := map[string]string{}
		for _, src := range []string{"192.0.2.100", "192.0.2.101"} {
			for k := 0; k < 4; k++ {
				var who string
				err := client.Do(func() error {
					d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
					cn, err := d.Dial("tcp", "192.0.2.1:10000")
					if err != nil {
						return err
					}
					defer cn.Close()
					_ = cn.SetDeadline(time.Now().Add(5 * time.Second))
					b := make([]byte, 16)
					n, err := cn.Read(b)
					who = strings.TrimSpace(string(b[:n]))
					return err
				})
				if err != nil {
					t.Fatalf("connect from %s: %v", src, err)
				}
				if first[src] == "" {
					first[src] = who
				} else if who != first[src] {
					t.Errorf("client %s: connection %d reached %s, the first reached %s", src, k, who, first[src])
				}
			}
		}
		if first["192.0.2.100"] == first["192.0.2.101"] {
			t.Errorf("two clients, rr with persistence: both on %s, want one on each backend", first["192.0.2.100"])
		}
	})

	t.Run("cleanup removes what l4lb recorded, not the operator's service", func(t *testing.T) {
		if b, err := os.ReadFile(record); err != nil || !strings.Contains(string(b), "192.0.2.1") {
			t.Fatalf("record %s: %q, %v", record, b, err)
		}
		if err := lbs[1].r.Close(false); err != nil {
			t.Fatal(err)
		}
		if err := ipvs.Cleanup(ipvs.Config{Namespace: n1.Path(), Logger: testLogger(t), Masquerade: ipvs.Masquerade{Disabled: true}, PublicRecord: record}); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		got := table(t, n1.Netns)
		if len(got) != 1 || got[0] != "TCP 192.0.2.1:22 rr: 10.200.0.9:22 Masq 1" {
			t.Errorf("after cleanup node1 ipvsadm -Ln:\n%s\nwant only the operator's service", strings.Join(got, "\n"))
		}
	})
}
