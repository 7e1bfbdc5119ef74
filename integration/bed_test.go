package integration

import (
	"bufio"
	"fmt"
	"net"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/integration/bed"
)

// TestBedProvesIPVS proves the test bed itself, below any l4lb code: a dummy
// interface holding a VIP, a virtual service with two masquerading real
// servers in two namespaces, and TCP connections from a third namespace that
// reach both; the real ipvsadm shows the same table.
//
//	client (10.1.3.2) --- lb (10.1.3.1 | 10.1.1.1 | 10.1.2.1, VIP 11.0.0.1 on dummy) --- b1 (10.1.1.2), b2 (10.1.2.2)
func TestBedProvesIPVS(t *testing.T) {
	lb := bed.NewNetns(t, "lb")
	b1 := bed.NewNetns(t, "b1")
	b2 := bed.NewNetns(t, "b2")
	client := bed.NewNetns(t, "client")
	bed.Link(t, lb, "10.1.1.1/24", b1, "10.1.1.2/24")
	bed.Link(t, lb, "10.1.2.1/24", b2, "10.1.2.2/24")
	bed.Link(t, lb, "10.1.3.1/24", client, "10.1.3.2/24")
	b1.MustRun(t, "ip", "route", "add", "default", "via", "10.1.1.1")
	b2.MustRun(t, "ip", "route", "add", "default", "via", "10.1.2.1")
	client.MustRun(t, "ip", "route", "add", "default", "via", "10.1.3.1")
	lb.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	const vip, port = "11.0.0.1", 8080
	// The dummy interface and the VIP, through vishvananda/netlink.
	nl, err := netlink.NewHandleAt(lb.Handle(), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", lb.Name, err)
	}
	defer nl.Close()
	if err := nl.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "minuteman"}}); err != nil {
		t.Fatalf("add dummy interface: %v", err)
	}
	link, err := nl.LinkByName("minuteman")
	if err != nil {
		t.Fatalf("find dummy interface: %v", err)
	}
	addr, _ := netlink.ParseAddr(vip + "/32")
	if err := nl.AddrAdd(link, addr); err != nil {
		t.Fatalf("add VIP to dummy interface: %v", err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		t.Fatalf("set dummy interface up: %v", err)
	}

	// The virtual service and its real servers, through moby/ipvs.
	h, err := mobyipvs.New(lb.Path())
	if err != nil {
		t.Fatalf("IPVS handle in %s: %v", lb.Name, err)
	}
	defer h.Close()
	svc := &mobyipvs.Service{Address: net.ParseIP(vip), Protocol: syscall.IPPROTO_TCP, Port: port, SchedName: "rr", AddressFamily: syscall.AF_INET, Netmask: 0xffffffff}
	if err := h.NewService(svc); err != nil {
		t.Fatalf("add virtual service: %v", err)
	}
	for _, rs := range []string{"10.1.1.2", "10.1.2.2"} {
		d := &mobyipvs.Destination{Address: net.ParseIP(rs), Port: port, Weight: 1, ConnectionFlags: mobyipvs.ConnectionFlagMasq, AddressFamily: syscall.AF_INET}
		if err := h.NewDestination(svc, d); err != nil {
			t.Fatalf("add real server %s: %v", rs, err)
		}
	}

	// Each backend answers with its own name.
	for _, b := range []struct {
		ns   *bed.Netns
		name string
	}{{b1, "b1"}, {b2, "b2"}} {
		ln, err := b.ns.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatalf("listen in %s: %v", b.name, err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveName(ln, b.name)
	}

	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		c, err := client.Dial("tcp", fmt.Sprintf("%s:%d", vip, port), 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d to the VIP: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatalf("connection %d: read answer: %v", i, err)
		}
		seen[strings.TrimSpace(line)]++
	}
	if seen["b1"] != 5 || seen["b2"] != 5 {
		t.Errorf("round robin over two real servers: got answers %v, want 5 from b1 and 5 from b2", seen)
	}

	got := lb.IPVSTable(t)
	// Connection counts move between ActiveConn and InActConn as the closed
	// connections wind down; each real server must have had its five.
	for i := range got {
		for j := range got[i].Real {
			r := &got[i].Real[j]
			if n := r.ActiveConn + r.InActConn; n != 5 {
				t.Errorf("real server %s has %d connections, want 5", r.Address, n)
			}
			r.ActiveConn, r.InActConn = 0, 0
		}
	}
	want := []bed.IPVSService{{Protocol: "TCP", Address: "11.0.0.1:8080", Scheduler: "rr", Real: []bed.IPVSReal{
		{Address: "10.1.1.2:8080", Forward: "Masq", Weight: 1},
		{Address: "10.1.2.2:8080", Forward: "Masq", Weight: 1},
	}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ipvsadm -Ln shows %+v, want %+v", got, want)
	}
}

func serveName(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, name)
		c.Close()
	}
}
