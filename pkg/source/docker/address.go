package docker

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
)

// How a backend's address was found; Backend.Via says which.
const (
	ViaPublished = "published" // a published port: the node's address and the host port
	ViaHost      = "host"      // host networking: the node's address and the container port
	ViaNetwork   = "network"   // the container's address on a network other nodes reach
)

// Network drivers whose container addresses are on the nodes' own network,
// so other nodes reach them without this node's help.
var routableDrivers = []string{"macvlan", "ipvlan"}

// networkInfo is what the source knows of one Docker network.
type networkInfo struct {
	Name   string
	Driver string
}

// placement is where one port of a container is reached from other nodes,
// or why it is not.
type placement struct {
	Addr netip.AddrPort
	Via  string // ViaPublished, ViaHost or ViaNetwork; "" when not reachable
	// Network is the network whose address was taken (ViaNetwork).
	Network string
	// Reason says why the port cannot be reached; "" when it can.
	Reason string
}

// addressRule is what placePort needs beyond the container.
type addressRule struct {
	// Node is this node's address, as other nodes reach it.
	Node netip.Addr
	// Routable names networks, besides macvlan and ipvlan ones, whose
	// container addresses other nodes reach.
	Routable []string
	// Network returns what is known of a network by its ID; false when
	// nothing is.
	Network func(id string) (networkInfo, bool)
}

// placePort decides the address other nodes use for port p of container c,
// whose labels name network (l4lb.network; "" when not given). In order:
//
//  1. l4lb.network names a network: the container's address on it and the
//     container port (the container must be on it).
//  2. Host networking: the node's address and the container port.
//  3. The port is published: the node's address and the host port (a port
//     published on one address only gives that address; on a loopback
//     address only, it cannot be reached).
//  4. The container is on a macvlan or ipvlan network, or one of
//     rule.Routable: its address there (the first such network by name).
//  5. Otherwise other nodes cannot reach it: the reason says so.
func placePort(c *container.InspectResponse, p Port, labelNetwork string, rule addressRule) placement {
	var networks map[string]*network.EndpointSettings
	var ports network.PortMap
	if c.NetworkSettings != nil {
		networks = c.NetworkSettings.Networks
		ports = c.NetworkSettings.Ports
	}
	mode := container.NetworkMode("")
	if c.HostConfig != nil {
		mode = c.HostConfig.NetworkMode
	}

	if labelNetwork != "" {
		ep, on := networks[labelNetwork]
		if !on || ep == nil {
			return placement{Reason: fmt.Sprintf("label %s names network %q, but the container is not on it (its networks: %s)", LabelNetwork, labelNetwork, networkNames(networks, mode))}
		}
		addr, ok := endpointAddr(ep, rule.Node)
		if !ok {
			return placement{Reason: fmt.Sprintf("label %s names network %q, but the container has no address on it", LabelNetwork, labelNetwork)}
		}
		return placement{Addr: netip.AddrPortFrom(addr, p.Port), Via: ViaNetwork, Network: labelNetwork}
	}

	if mode.IsHost() {
		return placement{Addr: netip.AddrPortFrom(rule.Node, p.Port), Via: ViaHost}
	}
	if mode.IsContainer() {
		return placement{Reason: fmt.Sprintf("it shares the network of container %s: label that container instead", mode.ConnectedContainer())}
	}

	port, _ := network.PortFrom(p.Port, network.IPProtocol(p.Protocol))
	if bindings := ports[port]; len(bindings) > 0 {
		return placePublished(p, bindings, rule.Node)
	}

	names := make([]string, 0, len(networks))
	for name := range networks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ep := networks[name]
		if ep == nil {
			continue
		}
		routable := slices.Contains(rule.Routable, name)
		if !routable && rule.Network != nil {
			if info, known := rule.Network(ep.NetworkID); known && slices.Contains(routableDrivers, info.Driver) {
				routable = true
			}
		}
		if !routable {
			continue
		}
		if addr, ok := endpointAddr(ep, rule.Node); ok {
			return placement{Addr: netip.AddrPortFrom(addr, p.Port), Via: ViaNetwork, Network: name}
		}
	}
	return placement{Reason: fmt.Sprintf("port %s is not published and the container is only on network(s) %s, which other nodes cannot reach: publish the port (-p %d), use host networking, a macvlan or ipvlan network, or name a routable network with label %s",
		p.Key(), networkNames(networks, mode), p.Port, LabelNetwork)}
}

// placePublished picks the binding of a published port that other nodes
// reach: one on every address (0.0.0.0 or ::) or on the node's address
// gives the node's address; one on another address gives that address.
func placePublished(p Port, bindings []network.PortBinding, node netip.Addr) placement {
	var other []netip.AddrPort
	var loopback []string
	for _, b := range bindings {
		hostPort, err := strconv.ParseUint(b.HostPort, 10, 16)
		if err != nil || hostPort == 0 {
			continue
		}
		ip := b.HostIP.Unmap()
		switch {
		case !ip.IsValid() || ip.IsUnspecified() || ip == node:
			return placement{Addr: netip.AddrPortFrom(node, uint16(hostPort)), Via: ViaPublished}
		case ip.IsLoopback():
			loopback = append(loopback, netip.AddrPortFrom(ip, uint16(hostPort)).String())
		default:
			other = append(other, netip.AddrPortFrom(ip, uint16(hostPort)))
		}
	}
	for _, ap := range other {
		if ap.Addr().Is4() == node.Is4() {
			return placement{Addr: ap, Via: ViaPublished}
		}
	}
	if len(other) > 0 {
		return placement{Addr: other[0], Via: ViaPublished}
	}
	if len(loopback) > 0 {
		return placement{Reason: fmt.Sprintf("port %s is published on %s only, which other nodes cannot reach", p.Key(), strings.Join(loopback, ", "))}
	}
	return placement{Reason: fmt.Sprintf("port %s is published without a host port yet", p.Key())}
}

// endpointAddr returns the container's address on a network, of the node's
// family when it has both.
func endpointAddr(ep *network.EndpointSettings, node netip.Addr) (netip.Addr, bool) {
	v4, v6 := ep.IPAddress.Unmap(), ep.GlobalIPv6Address
	if node.Is6() && !node.Is4In6() && v6.IsValid() && !v6.IsUnspecified() {
		return v6, true
	}
	if v4.IsValid() && !v4.IsUnspecified() {
		return v4, true
	}
	if v6.IsValid() && !v6.IsUnspecified() {
		return v6, true
	}
	return netip.Addr{}, false
}

// networkNames lists a container's networks for a message.
func networkNames(networks map[string]*network.EndpointSettings, mode container.NetworkMode) string {
	names := make([]string, 0, len(networks))
	for name := range networks {
		names = append(names, name)
	}
	slices.Sort(names)
	if len(names) == 0 {
		if mode != "" {
			return "none (network mode " + string(mode) + ")"
		}
		return "none"
	}
	return strings.Join(names, ", ")
}
