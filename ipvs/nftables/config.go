package nftables

import (
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/vip"
)

// Config configures a Reconciler. Zero values take the defaults in
// brackets.
type Config struct {
	// Namespace is the path of the network namespace to program
	// (/run/netns/NAME); "" is the caller's own.
	Namespace string
	// PublicAddrs make the node public: every VIP with a public port is
	// also served at each of these addresses of its family, at that port
	// (package ipvs/public), by the same rules as a VIP: one more
	// element of the services map per public service. Everything stays in
	// table inet l4lb, so no record of ownership is needed.
	PublicAddrs []netip.Addr
	// ResyncPeriod is how often the table is read back and drift repaired
	// [30s].
	ResyncPeriod time.Duration
	// DrainTimeout is how long the connections of a backend that stopped
	// taking new ones (weight 0, or gone from the table) may last before
	// their conntrack entries are deleted [5m].
	DrainTimeout time.Duration
	// DrainCheckInterval is how often conntrack is read while backends
	// drain [2s].
	DrainCheckInterval time.Duration
	// MinSyncInterval is the least time between two syncs [0].
	MinSyncInterval time.Duration
	// KernelTimeout bounds every netlink exchange [10s].
	KernelTimeout time.Duration
	// MasqueradeMark is the packet mark bit that the service chains set and
	// the postrouting chain masquerades (and clears) [0x00200000]. It must
	// not be used by another rule set on the host.
	MasqueradeMark uint32
	// KeepSysctls leaves forwarding as it is; by default New sets
	// net.ipv4.ip_forward and net.ipv6.conf.all.forwarding to 1, which
	// traffic from other namespaces or hosts to a VIP needs.
	KeepSysctls bool
	Logger      *logrus.Entry
	// Clock drives the runner [the wall clock].
	Clock runner.Clock
	// OnProgrammed is called from the sync goroutine when the programmed
	// table changes; it must not block.
	OnProgrammed func(*vip.Table)
	// Kernel and Conntrack replace the real ones (tests); with Kernel set,
	// no sysctl is touched, and without Conntrack nothing drains.
	Kernel    Interface
	Conntrack Conntrack
}

// DefaultMasqueradeMark is the default MasqueradeMark.
const DefaultMasqueradeMark = 0x00200000

func (c Config) withDefaults() Config {
	if c.ResyncPeriod <= 0 {
		c.ResyncPeriod = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Minute
	}
	if c.DrainCheckInterval <= 0 {
		c.DrainCheckInterval = 2 * time.Second
	}
	if c.KernelTimeout <= 0 {
		c.KernelTimeout = 10 * time.Second
	}
	if c.MasqueradeMark == 0 {
		c.MasqueradeMark = DefaultMasqueradeMark
	}
	if c.Logger == nil {
		c.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	c.Logger = c.Logger.WithField("component", "nftables")
	if c.Clock == nil {
		c.Clock = runner.RealClock{}
	}
	return c
}
