package ipvs

import (
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/vip"
)

// Defaults of Config.
const (
	DefaultInterface          = "minuteman"
	DefaultResyncPeriod       = 30 * time.Second
	DefaultDrainTimeout       = 5 * time.Minute
	DefaultDrainCheckInterval = 2 * time.Second
	DefaultKernelTimeout      = 10 * time.Second
)

// Config configures a Reconciler.
type Config struct {
	// Interface is the dummy interface that holds the VIPs; default
	// "minuteman". Every address on it is l4lb's (see README: ownership).
	Interface string
	// Namespace is the path of the network namespace to program
	// ("/run/netns/NAME"); "" is the caller's own.
	Namespace string
	// LocalAddrs are kept on the dummy interface besides the VIPs (the DNS
	// listen address, 198.51.100.1).
	LocalAddrs []netip.Addr
	// PublicAddrs make the node public: every VIP with a public port is
	// also served at each of these addresses of its family, at that port
	// (package ipvs/public). They are the node's own addresses:
	// never put on the dummy interface. Connections to them are
	// masqueraded like VIP connections, and New sets forwarding on (README:
	// public nodes).
	PublicAddrs []netip.Addr
	// PublicRecord is the file that lists the public services l4lb created
	// (written before a service is added, after one is deleted), so that a
	// restarted agent and Cleanup know them from an operator's services on
	// the same address; "" keeps the list in memory only.
	PublicRecord string
	// ResyncPeriod is how often the kernel is read back in full and drift
	// repaired; default 30s.
	ResyncPeriod time.Duration
	// DrainTimeout bounds how long a TCP backend that left stays in the
	// kernel at weight 0 while it still has active connections; default 5m.
	DrainTimeout time.Duration
	// DrainCheckInterval is how often the connection counts of draining
	// backends are read; default 2s.
	DrainCheckInterval time.Duration
	// MinSyncInterval is the least time between two syncs; bursts of Update
	// calls within it are merged. Default 0: sync as soon as asked.
	MinSyncInterval time.Duration
	// KernelTimeout is the deadline of each kernel call; a socket that
	// misses it is closed and reopened. Default 10s.
	KernelTimeout time.Duration
	// Netlink chooses the IPVS netlink client: "genl" (default, batched) or
	// "moby" (github.com/moby/ipvs, one command per round trip).
	Netlink string
	// Masquerade configures the owned iptables rules that make VIPs
	// reachable from every node (README: reachability).
	Masquerade Masquerade
	// Logger receives the reconciler's logs; default the standard logger.
	Logger *logrus.Entry
	// Clock is the source of time; default the wall clock.
	Clock runner.Clock
	// OnProgrammed, if set, is called from the sync goroutine with the VIPs
	// that are in the kernel after every sync that changed them. It must
	// not block; it must not modify the table.
	OnProgrammed func(*vip.Table)
	// Kernel, if set, replaces the real kernel (tests pass a Fake). The
	// reconciler then sets no sysctls and no iptables rules: those belong
	// to the real kernel only.
	Kernel Interface
}

// Masquerade configures source NAT of VIP traffic leaving the node.
type Masquerade struct {
	// Disabled turns the iptables rules off.
	Disabled bool
	// VIPRanges are the virtual addresses whose connections are
	// masqueraded; default 11.0.0.0/8 and fd01:c::/64 (vip's named-VIP
	// ranges). Add the ranges of your IP VIPs.
	VIPRanges []netip.Prefix
	// IPTables forces the iptables backend ("legacy" or "nft"); "" detects
	// it (see README).
	IPTables string
}

func (c Config) withDefaults() Config {
	if c.Interface == "" {
		c.Interface = DefaultInterface
	}
	if c.ResyncPeriod <= 0 {
		c.ResyncPeriod = DefaultResyncPeriod
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.DrainCheckInterval <= 0 {
		c.DrainCheckInterval = DefaultDrainCheckInterval
	}
	if c.KernelTimeout <= 0 {
		c.KernelTimeout = DefaultKernelTimeout
	}
	if c.Netlink == "" {
		c.Netlink = "genl"
	}
	if len(c.Masquerade.VIPRanges) == 0 {
		c.Masquerade.VIPRanges = []netip.Prefix{netip.MustParsePrefix("11.0.0.0/8"), netip.MustParsePrefix("fd01:c::/64")}
	}
	for _, a := range c.PublicAddrs {
		c.Masquerade.VIPRanges = append(c.Masquerade.VIPRanges, netip.PrefixFrom(a, a.BitLen()))
	}
	if c.Logger == nil {
		c.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	c.Logger = c.Logger.WithField("component", "ipvs")
	if c.Clock == nil {
		c.Clock = runner.RealClock{}
	}
	return c
}
