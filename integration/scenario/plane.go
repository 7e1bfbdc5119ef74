package scenario

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/l4lb/l4lb/integration/bed"
)

// Plane is a data plane the agents program (their --dataplane), with how
// the scenario reads what a node's kernel serves, as an operator would.
type Plane string

// The data planes the scenario runs against.
const (
	// IPVS: VIPs on the dummy interface, services in IPVS (`ipvsadm -Ln`);
	// DNS on 198.51.100.1, which the agent holds on the dummy interface.
	IPVS Plane = "ipvs"
	// NFTables: table inet l4lb (`nft list table inet l4lb`); VIPs are on
	// no interface, so DNS listens on the node's own address and the node
	// has a default route that covers the VIP ranges.
	NFTables Plane = "nftables"
)

// Planes lists every data plane, for tables of cases.
var Planes = []Plane{IPVS, NFTables}

// ListCommand is the operator's command that shows what the plane serves.
func (p Plane) ListCommand() []string {
	if p == NFTables {
		return []string{"nft", "list", "table", "inet", "l4lb"}
	}
	return []string{"ipvsadm", "-Ln"}
}

// servedBackends returns the backends of the TCP service svc
// ("11.1.2.3:10000") that take new connections in node n's kernel, address
// -> weight. IPVS: the real servers of `ipvsadm -Ln` with their weight (a
// draining one at weight 0). nftables: the backends of the service's slots
// map with their number of slots (weight / gcd of the weights; a draining
// backend holds none, so it is absent).
func (p Plane) servedBackends(t bed.T, n *bed.Node, svc string) (map[string]int, error) {
	out := map[string]int{}
	if p != NFTables {
		for _, s := range n.IPVSTable(t) {
			if s.Address == svc {
				for _, r := range s.Real {
					out[r.Address] = r.Weight
				}
			}
		}
		return out, nil
	}
	ap, err := netip.ParseAddrPort(svc)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", svc, err)
	}
	raw, err := n.Run("nft", "-j", "list", "map", "inet", "l4lb", slotsMap(ap))
	if err != nil {
		// No such map: the kernel serves no such service.
		if strings.Contains(raw, "No such file or directory") {
			return out, nil
		}
		return nil, err
	}
	return parseSlots(raw)
}

// slotsMap is the name of the nftables map that holds the backends of the
// TCP service ap.
func slotsMap(ap netip.AddrPort) string {
	return "slots-tcp-" + strings.ReplaceAll(ap.Addr().String(), ":", "_") + "-" + strconv.Itoa(int(ap.Port()))
}

// parseSlots reads the elements of a slots map from `nft -j list map`:
// [slot, {"concat": [address, port]}] each.
func parseSlots(raw string) (map[string]int, error) {
	var doc struct {
		Nftables []struct {
			Map *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return nil, fmt.Errorf("nft -j list map: %w", err)
	}
	out := map[string]int{}
	for _, o := range doc.Nftables {
		if o.Map == nil {
			continue
		}
		for _, el := range o.Map.Elem {
			var pair []json.RawMessage
			if err := json.Unmarshal(el, &pair); err != nil || len(pair) != 2 {
				return nil, fmt.Errorf("slots map element %s: want [slot, backend]", el)
			}
			var val struct {
				Concat []json.RawMessage `json:"concat"`
			}
			if err := json.Unmarshal(pair[1], &val); err != nil || len(val.Concat) != 2 {
				return nil, fmt.Errorf("slots map element %s: want address . port", el)
			}
			var addr string
			var port int
			if err := json.Unmarshal(val.Concat[0], &addr); err != nil {
				return nil, fmt.Errorf("slots map element %s: address: %w", el, err)
			}
			if err := json.Unmarshal(val.Concat[1], &port); err != nil {
				return nil, fmt.Errorf("slots map element %s: port: %w", el, err)
			}
			out[net.JoinHostPort(addr, strconv.Itoa(port))]++
		}
	}
	return out, nil
}

// Listing is what node n's kernel serves, as the plane's ListCommand shows
// it, reduced to what an agent writes: connection counts (IPVS) are left
// out, so that two listings are equal when the agent changed nothing.
func (p Plane) Listing(t bed.T, n *bed.Node) string {
	t.Helper()
	if p != NFTables {
		var sb strings.Builder
		for _, s := range n.IPVSTable(t) {
			fmt.Fprintf(&sb, "%s %s %s %s;", s.Protocol, s.Address, s.Scheduler, s.Flags)
			for _, r := range s.Real {
				fmt.Fprintf(&sb, " %s %s %d,", r.Address, r.Forward, r.Weight)
			}
			sb.WriteString("\n")
		}
		return sb.String()
	}
	return n.MustRun(t, p.ListCommand()...)
}

// prepareNode makes node n what the plane expects of a node: with nftables,
// a default route (the first packet of a local process's connection to a
// VIP must be routed before the output chain rewrites it; a real node's
// default route does it). The gateway is an unused address of the node
// network: nothing is sent to it, since every VIP is rewritten.
func (p Plane) prepareNode(t bed.T, n *bed.Node) {
	t.Helper()
	if p != NFTables {
		return
	}
	n.MustRun(t, "ip", "route", "add", "default", "via", "10.200.0.254")
	n.MustRun(t, "ip", "-6", "route", "add", "default", "via", "fd00:200::fe")
}

// RequireKernel fails the test, with the reason, when the kernel lacks what
// the plane needs. For nftables: a table with a NAT chain, made and deleted
// in a namespace of the test's own (ns).
func (p Plane) RequireKernel(t bed.T, ns *bed.Netns) {
	t.Helper()
	if p != NFTables {
		return
	}
	const probe = "add table inet l4lbprobe; add chain inet l4lbprobe p { type nat hook prerouting priority dstnat; }"
	if out, err := ns.Run("nft", probe); err != nil {
		t.Fatalf("this kernel has no nf_tables with NAT in network namespaces (nft %q: %v): the nftables data plane cannot run: %s", probe, err, out)
	}
	ns.MustRun(t, "nft", "delete", "table", "inet", "l4lbprobe")
}
