package gossip

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Config says how a node takes part in the cluster.
type Config struct {
	// NodeName names this node; unique in the cluster.
	NodeName string
	// BindAddr and BindPort are where gossip listens (UDP and TCP); port 0
	// picks a free port. The agent's default port is DefaultPort.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what peers are told to use, when
	// that differs from the bind address (NAT); optional.
	AdvertiseAddr string
	AdvertisePort int
	// Join lists seed "host:port" addresses. Start tries them in the
	// background, with backoff, until one answers or the node is otherwise
	// in a cluster; the node works alone meanwhile.
	Join []string
	// Keys are gossip encryption keys (16, 24 or 32 bytes: AES-128/192/256
	// in GCM). Keys[0] encrypts; all of them decrypt. None means
	// unencrypted, which Start warns about.
	Keys [][]byte
	// RequireEncryption makes New refuse a config without a key.
	RequireEncryption bool
	// Label is stamped on every packet and stream (and authenticated when
	// encrypted); peers with another label are ignored, which keeps two
	// clusters on one network apart.
	Label string
	// Logger receives this package's logs; the standard logger if nil.
	Logger *logrus.Entry
	// Timing tunes failure detection and gossip; zero fields take the
	// values of LANTiming.
	Timing Timing
	// Transport replaces UDP/TCP on BindAddr (tests: an in-memory network).
	Transport memberlist.Transport
	// Now is the clock the generation is read from; time.Now if nil.
	Now func() time.Time
	// RestartGrace is how long peers keep a restarting node's backends
	// (Cluster.Restart) in State() after they see it gone, waiting for it
	// to come back; then they drop them as on a death. Zero means
	// DefaultRestartGrace.
	RestartGrace time.Duration
}

// DefaultRestartGrace is 30 s. An agent restart (stop, start, rejoin, first
// publication) takes a few seconds; its backends keep serving meanwhile, so
// withdrawing them would fail requests for nothing. 30 s covers a slow
// restart (a loaded host, a supervisor's restart delay of several seconds)
// several times over, and bounds how long traffic still goes to a host
// whose agent announced a restart and then never came back (a host that
// went down with it): about as long as memberlist keeps gossiping to the
// dead (GossipToTheDeadTime, 15 s) plus a failed rejoin's backoff.
const DefaultRestartGrace = 30 * time.Second

// DefaultPort is the agent's gossip port, memberlist's usual one.
const DefaultPort = 7946

// Timing tunes memberlist and this package's loops. See LANTiming and the
// README for the numbers and why.
type Timing struct {
	// Failure detection (memberlist): a random peer is probed every
	// ProbeInterval; no ack within ProbeTimeout starts indirect probes
	// through IndirectChecks peers and a TCP probe, which have until the end
	// of the interval. A node that fails that is suspect for
	// SuspicionMult × max(1, log10(N)) × ProbeInterval (stretched up to
	// SuspicionMaxTimeoutMult times while peers have not confirmed) before
	// it is declared dead, time in which it can refute.
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	IndirectChecks          int
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// Dissemination (memberlist): every GossipInterval, queued messages go
	// to GossipNodes random peers; each message is sent RetransmitMult ×
	// ceil(log10(N+1)) times by every node that forwards it.
	GossipInterval time.Duration
	GossipNodes    int
	RetransmitMult int
	// PushPullInterval is the anti-entropy period (memberlist scales it up
	// beyond 32 nodes); GossipToTheDeadTime is how long dead nodes still
	// get gossip, to refute; TCPTimeout bounds stream operations.
	PushPullInterval    time.Duration
	GossipToTheDeadTime time.Duration
	TCPTimeout          time.Duration
	// JoinRetryMin and JoinRetryMax bound the backoff between attempts to
	// reach the seeds.
	JoinRetryMin time.Duration
	JoinRetryMax time.Duration
	// ReconnectInterval is how often a node tries to rejoin failed members
	// (and its seeds, when alone), which heals partitions.
	ReconnectInterval time.Duration
	// AnnounceInterval is how often a node gossips a notice of its own
	// record's version, so that a node that missed a broadcast finds out
	// and pulls, instead of waiting for push/pull.
	AnnounceInterval time.Duration
	// PullGrace is how long a node waits for gossip to bring a new
	// member's record before asking the member directly.
	PullGrace time.Duration
	// ForgetAfter is how long a dead or departed member, and its record,
	// are remembered.
	ForgetAfter time.Duration
	// A death memberlist declares is confirmed by dialling the member's
	// gossip port (confirm.go): a dial not answered within
	// DeathCheckTimeout confirms it, and so does DeathReprieve passing
	// while the port still answers. DeathReprieve < 0 turns the check off
	// (a declared death is final at once).
	DeathCheckTimeout time.Duration
	DeathReprieve     time.Duration
}

// LANTiming returns the tuning for a LAN cluster; the README explains the
// arithmetic. A node that dies is out of every peer's State() in at most
// about 2.2 s in a 3-node cluster (up to 0.6 s until it is probed, 0.3 s of
// probing, 1.2 s of suspicion, a gossip round) and about 3.5 s at 100 nodes
// (suspicion grows with log10 N); a node that is only slow has 150 ms to
// answer a direct probe, the rest of the interval (times up to 8 when the
// prober itself is slow) for indirect and TCP probes, and then the whole
// suspicion to refute.
func LANTiming() Timing {
	return Timing{
		ProbeInterval:           300 * time.Millisecond,
		ProbeTimeout:            150 * time.Millisecond,
		IndirectChecks:          3,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 4,
		GossipInterval:          100 * time.Millisecond,
		GossipNodes:             4,
		RetransmitMult:          4,
		PushPullInterval:        15 * time.Second,
		GossipToTheDeadTime:     15 * time.Second,
		TCPTimeout:              5 * time.Second,
		JoinRetryMin:            200 * time.Millisecond,
		JoinRetryMax:            5 * time.Second,
		ReconnectInterval:       5 * time.Second,
		AnnounceInterval:        2 * time.Second,
		PullGrace:               time.Second,
		ForgetAfter:             10 * time.Minute,
		DeathCheckTimeout:       time.Second,
		DeathReprieve:           15 * time.Second,
	}
}

// withDefaults fills zero fields from LANTiming.
func (t Timing) withDefaults() Timing {
	d := LANTiming()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&t.ProbeInterval, d.ProbeInterval)
	setDur(&t.ProbeTimeout, d.ProbeTimeout)
	setInt(&t.IndirectChecks, d.IndirectChecks)
	setInt(&t.SuspicionMult, d.SuspicionMult)
	setInt(&t.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	setDur(&t.GossipInterval, d.GossipInterval)
	setInt(&t.GossipNodes, d.GossipNodes)
	setInt(&t.RetransmitMult, d.RetransmitMult)
	setDur(&t.PushPullInterval, d.PushPullInterval)
	setDur(&t.GossipToTheDeadTime, d.GossipToTheDeadTime)
	setDur(&t.TCPTimeout, d.TCPTimeout)
	setDur(&t.JoinRetryMin, d.JoinRetryMin)
	setDur(&t.JoinRetryMax, d.JoinRetryMax)
	setDur(&t.ReconnectInterval, d.ReconnectInterval)
	setDur(&t.AnnounceInterval, d.AnnounceInterval)
	setDur(&t.PullGrace, d.PullGrace)
	setDur(&t.ForgetAfter, d.ForgetAfter)
	setDur(&t.DeathCheckTimeout, d.DeathCheckTimeout)
	setDur(&t.DeathReprieve, d.DeathReprieve)
	return t
}

// ErrNoKey is returned by New when RequireEncryption is set without a key.
var ErrNoKey = errors.New("gossip encryption required but no key given")

func (c *Config) validate() error {
	if c.NodeName == "" {
		return errors.New("node name is empty")
	}
	if len(c.NodeName) > maxStringBytes {
		return fmt.Errorf("node name is %d bytes, over %d", len(c.NodeName), maxStringBytes)
	}
	if c.Transport == nil && c.BindAddr == "" {
		return errors.New("bind address is empty")
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("bind port %d out of range", c.BindPort)
	}
	if c.RestartGrace < 0 {
		return fmt.Errorf("restart grace %v is negative", c.RestartGrace)
	}
	if c.RequireEncryption && len(c.Keys) == 0 {
		return ErrNoKey
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("gossip key %d: %w", i, err)
		}
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		return fmt.Errorf("label is %d bytes, over %d", len(c.Label), memberlist.LabelMaxSize)
	}
	t := c.Timing.withDefaults()
	if t.ProbeTimeout >= t.ProbeInterval {
		return fmt.Errorf("probe timeout %v must be shorter than probe interval %v", t.ProbeTimeout, t.ProbeInterval)
	}
	return nil
}
