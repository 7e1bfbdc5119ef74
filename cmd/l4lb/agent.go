package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/l4lb/l4lb/cmd/l4lb/internal/config"
	"github.com/l4lb/l4lb/dns"
	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/pkg/agent"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/vip"
)

func runAgent(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent", "[flags]", "run the l4lb daemon: gossip with the other nodes, program IPVS, answer DNS and serve the local API", stderr)
	host, _ := os.Hostname()
	o := agent.Options{}
	cfgFile := fs.String("config", "", "JSON file of flag values ({\"join\": \"10.0.0.1,10.0.0.2\", ...}); flags given on the command line win")
	fs.StringVar(&o.NodeName, "node-name", host, "this node's name in the cluster (unique)")
	fs.StringVar(&o.Bind, "bind", "0.0.0.0", "address to gossip on")
	fs.IntVar(&o.GossipPort, "gossip-port", gossip.DefaultPort, "port to gossip on (TCP and UDP)")
	fs.StringVar(&o.Advertise, "advertise", "", "address other nodes reach this one at (default: --bind, or an address of this host that memberlist picks when --bind is 0.0.0.0)")
	join := fs.String("join", "", "comma-separated seed addresses (host or host:port) of other agents; retried until one answers")
	fs.StringVar(&o.APIListen, "api-listen", api.DefaultAddr, "address of the local HTTP API")
	fs.StringVar(&o.StatsListen, "stats-listen", "", "address:port of the stats page (/ and /haproxy?stats; CSV at /stats.csv and /haproxy?stats;csv); off when empty")
	dnsListen := fs.String("dns-listen", "198.51.100.1:53", "comma-separated addresses to serve DNS on; addresses in 198.51.100.0/24 are held on --interface")
	dnsUpstreams := fs.String("dns-upstreams", "", "comma-separated upstream resolvers for names outside the zone (default: the nameservers in /etc/resolv.conf that are not this server)")
	fs.BoolVar(&o.DNSForward, "dns-forward", true, "forward names outside the zone to the upstream resolvers")
	durationVar(fs, &o.DNSTTL, "dns-ttl", dns.DefaultTTL, "TTL of DNS answers for VIP names")
	fs.StringVar(&o.Domain, "domain", vip.DefaultDomain, "DNS domain of named VIPs")
	vipCIDR := fs.String("vip-cidr", vip.DefaultV4Range.String(), "range that IPv4 named VIPs get their addresses from")
	vip6CIDR := fs.String("vip6-cidr", vip.DefaultV6Range.String(), "range that IPv6 named VIPs get their addresses from")
	ipVIPCIDRs := fs.String("ip-vip-cidrs", "", "comma-separated ranges that IP VIPs (registered as 10.0.0.1:80 rather than by name) come from; their traffic is masqueraded like named VIPs' so that replies from other nodes come back")
	publicAddrs := fs.String("public-address", "", "comma-separated addresses of this node that clients outside the cluster use: marks the node public, and it serves every VIP registered with --public on them, at its public port")
	fs.StringVar(&o.Interface, "interface", ipvs.DefaultInterface, "dummy interface that holds the VIPs")
	fs.StringVar(&o.GossipKeyFile, "gossip-key-file", "", "file holding the base64-encoded 16, 24 or 32-byte gossip key (see l4lb keygen); without it gossip is not encrypted")
	fs.StringVar(&o.GossipLabel, "gossip-label", "", "cluster label: agents with different labels ignore each other")
	fs.StringVar(&o.ServicesDir, "services-dir", "", "directory of JSON backend files (e.g. /etc/l4lb/services.d) to publish, watched for changes")
	fs.StringVar(&o.DockerEndpoint, "docker-endpoint", "", "follow the local Docker engine at this address (unix:///var/run/docker.sock, or DOCKER_HOST's forms) and publish the containers labelled l4lb.vip.<port>=<VIP> (see pkg/source/docker); off when empty")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/l4lb", "directory for what must survive a restart (registrations, VIP address claims)")
	fs.StringVar(&o.DataPlane, "dataplane", "ipvs", "ipvs: program this node's kernel's IPVS; nftables: program table inet l4lb instead, for kernels without IPVS (give --dns-listen an address the host has); auto: IPVS where the kernel has it, else nftables; none: serve DNS and the API only")
	durationVar(fs, &o.ResyncPeriod, "resync-period", ipvs.DefaultResyncPeriod, "period of the full IPVS resync that repairs drift")
	durationVar(fs, &o.DrainTimeout, "drain-timeout", ipvs.DefaultDrainTimeout, "longest time a withdrawn TCP backend drains before it is removed (it goes sooner once its connections are done); must be positive")
	fs.BoolVar(&o.LeaveOnTerminate, "leave-on-terminate", false, "leave the cluster when stopped (SIGTERM, SIGINT): peers drop this node's backends at once. Without it a stop is a restart: the kernel keeps serving and nothing is withdrawn on purpose")
	cleanup := fs.Bool("cleanup", false, "remove what l4lb holds in this node's kernel (IPVS services on --interface, their addresses, the masquerade rules), cutting their connections, and exit; for a node that stops running l4lb for good. The state directory is kept")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if _, err := parse(fs, args, nil); err != nil {
		return err
	}
	if *cfgFile != "" {
		if err := config.ApplyFile(fs, *cfgFile); err != nil {
			return err
		}
	}
	var err error
	if o.Log, err = config.Logger(*logLevel, *logFormat, stderr); err != nil {
		return err
	}
	o.Join = config.SplitList(*join)
	o.DNSListen = config.SplitList(*dnsListen)
	o.DNSUpstreams = config.SplitList(*dnsUpstreams)
	if o.VIPCIDR, err = config.ParsePrefix("vip-cidr", *vipCIDR, false); err != nil {
		return err
	}
	if o.VIP6CIDR, err = config.ParsePrefix("vip6-cidr", *vip6CIDR, true); err != nil {
		return err
	}
	for _, c := range config.SplitList(*ipVIPCIDRs) {
		p, err := netip.ParsePrefix(c)
		if err != nil || p != p.Masked() {
			return fmt.Errorf("--ip-vip-cidrs %q: want ranges like 10.10.0.0/16", c)
		}
		o.IPVIPCIDRs = append(o.IPVIPCIDRs, p)
	}
	if o.PublicAddrs, err = config.ParseAddrs("public-address", *publicAddrs); err != nil {
		return err
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"dns-ttl", o.DNSTTL}, {"resync-period", o.ResyncPeriod}, {"drain-timeout", o.DrainTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("--%s %v: want a positive duration like 5m or 30s", d.flag, d.v)
		}
	}
	if *cleanup {
		return agent.Cleanup(o)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP rereads the gossip key file (key rotation) and the services
	// directory.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{})
	go func() {
		for range hup {
			reload <- struct{}{}
		}
	}()
	o.Reload = reload
	if err := agent.Run(ctx, o); err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}
