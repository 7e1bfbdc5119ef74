package docker

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/l4lb/l4lb/vip"
)

// ctr builds a container as inspect shows it.
func ctr(mode string, nets map[string]*network.EndpointSettings, ports network.PortMap) *container.InspectResponse {
	return &container.InspectResponse{
		HostConfig:      &container.HostConfig{NetworkMode: container.NetworkMode(mode)},
		NetworkSettings: &container.NetworkSettings{Networks: nets, Ports: ports},
	}
}

func ep(id, v4, v6 string) *network.EndpointSettings {
	e := &network.EndpointSettings{NetworkID: id}
	if v4 != "" {
		e.IPAddress = netip.MustParseAddr(v4)
	}
	if v6 != "" {
		e.GlobalIPv6Address = netip.MustParseAddr(v6)
	}
	return e
}

func bind(hostIP, hostPort string) network.PortBinding {
	b := network.PortBinding{HostPort: hostPort}
	if hostIP != "" {
		b.HostIP = netip.MustParseAddr(hostIP)
	}
	return b
}

func TestPlacePort(t *testing.T) {
	node := netip.MustParseAddr("10.0.0.5")
	nets := map[string]networkInfo{
		"id-bridge": {Name: "bridge", Driver: "bridge"},
		"id-mac":    {Name: "lan", Driver: "macvlan"},
		"id-ipvlan": {Name: "lan2", Driver: "ipvlan"},
		"id-app":    {Name: "app", Driver: "bridge"},
		"id-ovl":    {Name: "ovl", Driver: "overlay"},
	}
	rule := addressRule{Node: node, Routable: []string{"routed"}, Network: func(id string) (networkInfo, bool) { n, ok := nets[id]; return n, ok }}
	tcp8080 := Port{Port: 8080, Protocol: vip.TCP}
	udp53 := Port{Port: 53, Protocol: vip.UDP}
	bridge := map[string]*network.EndpointSettings{"bridge": ep("id-bridge", "172.17.0.2", "")}
	cases := []struct {
		name     string
		c        *container.InspectResponse
		port     Port
		labelNet string
		rule     *addressRule
		want     string // address, or "!" and part of the reason
		via      string
	}{
		{name: "published on all addresses", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("8080/tcp"): {bind("0.0.0.0", "32768"), bind("::", "32768")}}),
			port: tcp8080, want: "10.0.0.5:32768", via: ViaPublished},
		{name: "published without a host IP", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("8080/tcp"): {bind("", "31000")}}),
			port: tcp8080, want: "10.0.0.5:31000", via: ViaPublished},
		{name: "published on the node address", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("8080/tcp"): {bind("10.0.0.5", "31000")}}),
			port: tcp8080, want: "10.0.0.5:31000", via: ViaPublished},
		{name: "published on another address", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("8080/tcp"): {bind("192.168.7.1", "31000")}}),
			port: tcp8080, want: "192.168.7.1:31000", via: ViaPublished},
		{name: "published on loopback only", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("8080/tcp"): {bind("127.0.0.1", "31000")}}),
			port: tcp8080, want: "!published on 127.0.0.1:31000 only"},
		{name: "udp published", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("53/udp"): {bind("0.0.0.0", "5353")}, network.MustParsePort("53/tcp"): {bind("0.0.0.0", "5354")}}),
			port: udp53, want: "10.0.0.5:5353", via: ViaPublished},
		{name: "only the tcp port published", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("53/tcp"): {bind("0.0.0.0", "5354")}}),
			port: udp53, want: "!port 53/udp is not published"},
		{name: "exposed, not published", c: ctr("bridge", bridge, network.PortMap{network.MustParsePort("8080/tcp"): nil}),
			port: tcp8080, want: "!port 8080/tcp is not published and the container is only on network(s) bridge"},
		{name: "default bridge", c: ctr("bridge", bridge, nil), port: tcp8080, want: "!other nodes cannot reach: publish the port (-p 8080)"},
		{name: "user bridge", c: ctr("app", map[string]*network.EndpointSettings{"app": ep("id-app", "172.18.0.2", "")}, nil), port: tcp8080, want: "!only on network(s) app"},
		{name: "overlay", c: ctr("ovl", map[string]*network.EndpointSettings{"ovl": ep("id-ovl", "10.9.0.2", "")}, nil), port: tcp8080, want: "!only on network(s) ovl"},
		{name: "host networking", c: ctr("host", map[string]*network.EndpointSettings{"host": ep("", "", "")}, nil), port: tcp8080, want: "10.0.0.5:8080", via: ViaHost},
		{name: "macvlan", c: ctr("lan", map[string]*network.EndpointSettings{"lan": ep("id-mac", "10.0.0.77", "")}, nil), port: tcp8080, want: "10.0.0.77:8080", via: ViaNetwork},
		{name: "ipvlan", c: ctr("lan2", map[string]*network.EndpointSettings{"lan2": ep("id-ipvlan", "10.0.0.78", "")}, nil), port: udp53, want: "10.0.0.78:53", via: ViaNetwork},
		{name: "macvlan beside bridge", c: ctr("bridge", map[string]*network.EndpointSettings{"bridge": ep("id-bridge", "172.17.0.2", ""), "lan": ep("id-mac", "10.0.0.77", "")}, nil),
			port: tcp8080, want: "10.0.0.77:8080", via: ViaNetwork},
		{name: "published wins over macvlan", c: ctr("bridge", map[string]*network.EndpointSettings{"bridge": ep("id-bridge", "172.17.0.2", ""), "lan": ep("id-mac", "10.0.0.77", "")},
			network.PortMap{network.MustParsePort("8080/tcp"): {bind("0.0.0.0", "31000")}}), port: tcp8080, want: "10.0.0.5:31000", via: ViaPublished},
		{name: "routable by configuration", c: ctr("routed", map[string]*network.EndpointSettings{"routed": ep("id-unknown", "10.8.0.2", "")}, nil), port: tcp8080, want: "10.8.0.2:8080", via: ViaNetwork},
		{name: "unknown network", c: ctr("x", map[string]*network.EndpointSettings{"x": ep("id-unknown", "10.8.0.2", "")}, nil), port: tcp8080, want: "!only on network(s) x"},
		{name: "label names the network", c: ctr("app", map[string]*network.EndpointSettings{"app": ep("id-app", "172.18.0.2", "")}, network.PortMap{network.MustParsePort("8080/tcp"): {bind("0.0.0.0", "31000")}}),
			port: tcp8080, labelNet: "app", want: "172.18.0.2:8080", via: ViaNetwork},
		{name: "label names a network the container is not on", c: ctr("bridge", bridge, nil), port: tcp8080, labelNet: "app", want: `!label l4lb.network names network "app", but the container is not on it (its networks: bridge)`},
		{name: "label network without an address", c: ctr("app", map[string]*network.EndpointSettings{"app": ep("id-app", "", "")}, nil), port: tcp8080, labelNet: "app", want: "!has no address on it"},
		{name: "IPv6 node takes the IPv6 address", c: ctr("lan", map[string]*network.EndpointSettings{"lan": ep("id-mac", "10.0.0.77", "fd00::77")}, nil), port: tcp8080,
			rule: &addressRule{Node: netip.MustParseAddr("fd00::5"), Network: rule.Network}, want: "[fd00::77]:8080", via: ViaNetwork},
		{name: "IPv4 node takes the IPv4 address", c: ctr("lan", map[string]*network.EndpointSettings{"lan": ep("id-mac", "10.0.0.77", "fd00::77")}, nil), port: tcp8080, want: "10.0.0.77:8080", via: ViaNetwork},
		{name: "IPv6-only network on an IPv4 node", c: ctr("lan", map[string]*network.EndpointSettings{"lan": ep("id-mac", "", "fd00::77")}, nil), port: tcp8080, want: "[fd00::77]:8080", via: ViaNetwork},
		{name: "shares another container's network", c: ctr("container:abc", nil, nil), port: tcp8080, want: "!shares the network of container abc"},
		{name: "no network", c: ctr("none", nil, nil), port: tcp8080, want: "!only on network(s) none (network mode none)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rule
			if tc.rule != nil {
				r = *tc.rule
			}
			got := placePort(tc.c, tc.port, tc.labelNet, r)
			if reason, bad := strings.CutPrefix(tc.want, "!"); bad {
				if got.Reason == "" || !strings.Contains(got.Reason, reason) {
					t.Fatalf("placePort = %+v, want a reason containing %q", got, reason)
				}
				if got.Addr.IsValid() || got.Via != "" {
					t.Errorf("unreachable placement has an address: %+v", got)
				}
				return
			}
			if got.Reason != "" || got.Addr.String() != tc.want || got.Via != tc.via {
				t.Fatalf("placePort = %+v, want %s via %s", got, tc.want, tc.via)
			}
		})
	}
}
