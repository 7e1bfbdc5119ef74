package nftables

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

// Conntrack is what the reconciler reads and deletes in the connection
// tracking table: the connections that a service chain DNATed.
type Conntrack interface {
	// Flows lists the connections whose original destination is one of
	// services, with the backend they were NATed to.
	Flows(services map[vip.ServiceKey]bool) ([]Flow, error)
	// Delete deletes the entries of the connections to svc that were NATed
	// to backend, and returns how many it deleted.
	Delete(svc vip.ServiceKey, backend netip.AddrPort) (int, error)
	Close() error
}

// Flow is one tracked connection through a VIP.
type Flow struct {
	Service vip.ServiceKey
	Backend netip.AddrPort
	// Established is true for a TCP connection in state ESTABLISHED.
	Established bool
}

// tcpEstablished is TCP_CONNTRACK_ESTABLISHED.
const tcpEstablished = 3

// kernelConntrack reads conntrack through ctnetlink in one namespace.
type kernelConntrack struct {
	h *netlink.Handle
}

func openConntrack(nsPath string) (*kernelConntrack, error) {
	var h *netlink.Handle
	var err error
	if nsPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	} else {
		ns, nerr := netns.GetFromPath(nsPath)
		if nerr != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", nsPath, nerr)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("open conntrack netlink: %w", err)
	}
	return &kernelConntrack{h: h}, nil
}

func flowOf(f *netlink.ConntrackFlow) (vip.ServiceKey, netip.AddrPort, bool) {
	var p vip.Protocol
	switch f.Forward.Protocol {
	case unix.IPPROTO_TCP:
		p = vip.TCP
	case unix.IPPROTO_UDP:
		p = vip.UDP
	default:
		return vip.ServiceKey{}, netip.AddrPort{}, false
	}
	dst, ok1 := netip.AddrFromSlice(f.Forward.DstIP)
	be, ok2 := netip.AddrFromSlice(f.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return vip.ServiceKey{}, netip.AddrPort{}, false
	}
	return vip.ServiceKey{Addr: dst.Unmap(), Port: f.Forward.DstPort, Protocol: p}, netip.AddrPortFrom(be.Unmap(), f.Reverse.SrcPort), true
}

func (c *kernelConntrack) Flows(services map[vip.ServiceKey]bool) ([]Flow, error) {
	var out []Flow
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := c.h.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return nil, fmt.Errorf("list conntrack entries: %w", err)
		}
		for _, f := range flows {
			k, be, ok := flowOf(f)
			if !ok || !services[k] || netip.AddrPortFrom(k.Addr, k.Port) == be {
				continue
			}
			est := false
			if tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && tcp.State == tcpEstablished {
				est = true
			}
			out = append(out, Flow{Service: k, Backend: be, Established: est})
		}
	}
	return out, nil
}

// flowFilter matches the entries of one service NATed to one backend.
type flowFilter struct {
	svc     vip.ServiceKey
	backend netip.AddrPort
}

func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	k, be, ok := flowOf(flow)
	return ok && k == f.svc && be == f.backend
}

func (c *kernelConntrack) Delete(svc vip.ServiceKey, backend netip.AddrPort) (int, error) {
	fam := netlink.InetFamily(unix.AF_INET)
	if svc.Addr.Is6() {
		fam = unix.AF_INET6
	}
	n, err := c.h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flowFilter{svc, backend})
	if err != nil {
		return int(n), fmt.Errorf("delete conntrack entries of %s to %s: %w", keyString(svc), backend, err)
	}
	return int(n), nil
}

func (c *kernelConntrack) Close() error {
	c.h.Close()
	return nil
}
