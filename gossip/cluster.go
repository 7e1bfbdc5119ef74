package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// inlineRecordBytes is the largest record broadcast whole. A memberlist
// packet holds 1400 bytes, less the compound header, a label of up to 257
// bytes and 29 bytes of encryption: about 1110 bytes in the worst case.
// Larger records are announced with a notice and fetched over TCP.
const inlineRecordBytes = 1024

// Cluster is this node's membership in the gossip cluster. Its methods are
// safe for concurrent use.
type Cluster struct {
	cfg      Config
	timing   Timing
	log      *logrus.Entry
	now      func() time.Time
	store    *store
	counters counters
	queue    *broadcastQueue
	// announce carries this node's periodic notice of its own version,
	// sent 2 × ceil(log10(N+1)) times each, after everything in queue.
	announce *broadcastQueue
	changes  chan struct{}
	pullWake chan struct{}
	replies  chan string
	badLog   *logLimiter
	keyring  *memberlist.Keyring

	// generation is read by memberlist (NodeMeta) without c.mu.
	generation atomic.Uint64
	livePeers  atomic.Int64

	mu      sync.Mutex // guards seq, ml, started, left; serialises publications
	seq     uint64
	ml      *memberlist.Memberlist
	started bool
	left    bool

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New checks cfg and builds a Cluster; Start brings it up.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	c := &Cluster{
		cfg:      cfg,
		timing:   cfg.Timing.withDefaults(),
		log:      cfg.Logger,
		now:      cfg.Now,
		store:    newStore(cfg.NodeName),
		changes:  make(chan struct{}, 1),
		pullWake: make(chan struct{}, 1),
		replies:  make(chan string, 256),
		badLog:   newLogLimiter(10, time.Second),
		stop:     make(chan struct{}),
	}
	if c.log == nil {
		c.log = logrus.NewEntry(logrus.StandardLogger())
	}
	c.log = c.log.WithFields(logrus.Fields{"component": "gossip", "node": cfg.NodeName})
	if c.now == nil {
		c.now = time.Now
	}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys[1:], cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		c.keyring = kr
	}
	numNodes := func() int { return int(c.livePeers.Load()) + 1 }
	c.queue = newBroadcastQueue(numNodes, c.timing.RetransmitMult)
	c.announce = newBroadcastQueue(numNodes, 2)
	gen := uint64(c.now().UnixNano())
	if gen == 0 {
		gen = 1
	}
	c.generation.Store(gen)
	c.seq = 1
	c.store.setSelf(&record{Node: cfg.NodeName, Version: Version{Generation: gen, Seq: 1}}, c.now())
	return c, nil
}

// Start creates the memberlist on the configured address and begins
// joining the seeds in the background, retrying with backoff until one
// answers or ctx is done. It returns once this node is listening.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("gossip: already started")
	}
	conf, err := c.memberlistConfig()
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(conf)
	if err != nil {
		_ = conf.Transport.Shutdown()
		return fmt.Errorf("create memberlist %s: %w", c.cfg.NodeName, err)
	}
	c.ml, c.started = ml, true
	if c.keyring == nil {
		c.log.WithField("reason", "no gossip key configured").
			Warn("gossip is NOT encrypted: any host that can reach this port can join the cluster and publish backends")
	}
	self := ml.LocalNode()
	c.log.WithFields(logrus.Fields{"addr": self.Address(), "generation": c.generation.Load(),
		"label": c.cfg.Label, "encrypted": c.keyring != nil}).Info("gossip started")

	// Announce this node's record (an empty one, or what Publish set).
	if r := c.store.selfRecord(); r != nil {
		c.queueRecordLocked(r)
	}
	c.wg.Add(2)
	go c.joinSeeds(ctx, self.Address())
	go c.run()
	return nil
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	t := c.timing
	conf := memberlist.DefaultLANConfig()
	conf.Name = c.cfg.NodeName
	conf.BindAddr = c.cfg.BindAddr
	conf.BindPort = c.cfg.BindPort
	conf.AdvertiseAddr = c.cfg.AdvertiseAddr
	conf.AdvertisePort = c.cfg.AdvertisePort
	conf.Label = c.cfg.Label
	conf.Keyring = c.keyring
	conf.GossipVerifyIncoming = true
	conf.GossipVerifyOutgoing = true
	conf.ProbeInterval = t.ProbeInterval
	conf.ProbeTimeout = t.ProbeTimeout
	conf.IndirectChecks = t.IndirectChecks
	conf.SuspicionMult = t.SuspicionMult
	conf.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	conf.GossipInterval = t.GossipInterval
	conf.GossipNodes = t.GossipNodes
	conf.RetransmitMult = t.RetransmitMult
	conf.PushPullInterval = t.PushPullInterval
	conf.GossipToTheDeadTime = t.GossipToTheDeadTime
	conf.TCPTimeout = t.TCPTimeout
	// LZW on every gossip packet costs more CPU than it saves on a LAN:
	// packets are at most 1400 bytes and records are compact already.
	conf.EnableCompression = false
	conf.Delegate = &delegate{c: c}
	conf.Events = &events{c: c}
	logger := log.New(&memberlistLog{
		log:       c.log,
		limit:     newLogLimiter(10, time.Second),
		counters:  &c.counters,
		onSuspect: c.onSuspect,
	}, "", 0)
	conf.Logger = logger

	inner := c.cfg.Transport
	if inner == nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{c.cfg.BindAddr},
			BindPort:  c.cfg.BindPort,
			Logger:    logger,
		})
		if err != nil {
			return nil, fmt.Errorf("listen for gossip on %s: %w",
				net.JoinHostPort(c.cfg.BindAddr, strconv.Itoa(c.cfg.BindPort)), err)
		}
		conf.BindPort = nt.GetAutoBindPort()
		if conf.AdvertisePort == 0 {
			conf.AdvertisePort = conf.BindPort
		}
		inner = nt
	}
	conf.Transport = newCountingTransport(inner, &c.counters)
	return conf, nil
}

// onSuspect is called (from memberlist's logger) when this node's failure
// detector suspects a peer.
func (c *Cluster) onSuspect(node string) {
	t := c.timing
	bound := time.Duration(t.SuspicionMaxTimeoutMult*t.SuspicionMult) * t.ProbeInterval * 4
	now := c.now()
	c.store.suspect(node, now, now.Add(bound))
}

// joinSeeds tries the seeds until one answers, this node is already in a
// cluster, ctx is done or the cluster stops.
func (c *Cluster) joinSeeds(ctx context.Context, selfAddr string) {
	defer c.wg.Done()
	seeds := make([]string, 0, len(c.cfg.Join))
	for _, s := range c.cfg.Join {
		if s != selfAddr {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		return
	}
	backoff := c.timing.JoinRetryMin
	for attempt := 1; ; attempt++ {
		ml := c.memberlist()
		if ml == nil {
			return
		}
		n, err := ml.Join(seeds)
		if n > 0 {
			c.log.WithField("seeds", seeds).WithField("attempts", attempt).Info("joined cluster")
			return
		}
		if c.livePeers.Load() > 0 {
			c.log.WithField("reason", "a peer joined this node first").Info("stopped trying seeds")
			return
		}
		entry := c.log.WithField("seeds", seeds).WithField("reason", err).WithField("retry_in", backoff)
		if attempt == 1 {
			entry.Warn("no seed answered; working alone and retrying")
		} else {
			entry.Debug("no seed answered; retrying")
		}
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		select {
		case <-ctx.Done():
			return
		case <-c.stop:
			return
		case <-time.After(backoff + jitter):
		}
		backoff = min(2*backoff, c.timing.JoinRetryMax)
	}
}

func (c *Cluster) memberlist() *memberlist.Memberlist {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left {
		return nil
	}
	return c.ml
}

// run is the single background loop: it pulls records that gossip has
// announced but not brought, answers pull requests, forgets long-dead
// members and reconnects to failed ones.
func (c *Cluster) run() {
	defer c.wg.Done()
	tick := time.NewTicker(c.timing.GossipInterval * 2)
	defer tick.Stop()
	sweep := time.NewTicker(5 * time.Second)
	defer sweep.Stop()
	reconnect := time.NewTicker(c.timing.ReconnectInterval)
	defer reconnect.Stop()
	announce := time.NewTicker(c.timing.AnnounceInterval)
	defer announce.Stop()

	const maxSends = 8
	sem := make(chan struct{}, maxSends)
	inflight := make(map[string]pull) // pulls asked for, by node
	var reconnecting atomic.Bool

	send := func(fn func()) bool {
		select {
		case sem <- struct{}{}:
		default:
			return false
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-sem }()
			fn()
		}()
		return true
	}

	for {
		select {
		case <-c.stop:
			return
		case requester := <-c.replies:
			c.answerPull(requester, send)
		case <-c.pullWake:
			c.pullDue(inflight, send)
		case <-tick.C:
			c.pullDue(inflight, send)
		case <-announce.C:
			// A record broadcast can miss a node (gossip is random); this
			// notice lets every node see within an interval or two that
			// it is behind, and pull.
			if r := c.store.selfRecord(); r != nil && c.livePeers.Load() > 0 {
				c.announce.QueueBroadcast(&nodeBroadcast{node: r.Node, msg: encodeNotice(r.Node, r.Version)})
			}
		case <-sweep.C:
			if n := c.store.sweep(c.now(), c.timing.ForgetAfter); n > 0 {
				c.log.WithField("forgotten", n).Debug("forgot long-gone members")
			}
		case <-reconnect.C:
			if reconnecting.Load() {
				continue
			}
			targets := c.store.deadMembers()
			if c.livePeers.Load() == 0 {
				targets = append(targets, c.cfg.Join...)
			}
			if len(targets) == 0 {
				continue
			}
			rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
			targets = targets[:min(3, len(targets))]
			reconnecting.Store(true)
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer reconnecting.Store(false)
				ml := c.memberlist()
				if ml == nil {
					return
				}
				if n, _ := ml.Join(targets); n > 0 {
					c.log.WithField("peers", targets).Info("reconnected to failed members")
				}
			}()
		}
	}
}

// pullDue asks members for the records the store wants, one request in
// flight per member.
func (c *Cluster) pullDue(inflight map[string]pull, send func(func()) bool) {
	now := c.now()
	// A pull normally completes in milliseconds; one that has not brought
	// the record in a second may be retried.
	for name, p := range inflight {
		if now.Sub(p.at) > min(c.timing.TCPTimeout, time.Second) {
			delete(inflight, name)
		}
	}
	for _, t := range c.store.pullTargets(now) {
		// The owner answers with its newest record, so a pull asked for
		// after learning of this version will bring it; a newer version
		// than the one in flight was asked for is pulled again at once
		// (the owner may have answered before it made that version).
		if p, busy := inflight[t.name]; busy && !p.version.Less(t.version) {
			continue
		}
		ml := c.memberlist()
		if ml == nil {
			return
		}
		t := t
		msg := encodePull(c.cfg.NodeName, t.name)
		ok := send(func() {
			err := ml.SendReliable(&memberlist.Node{Name: t.name, Addr: t.addr, Port: t.port}, msg)
			if err != nil {
				c.counters.pullsFailed.Add(1)
				c.log.WithField("peer", t.name).WithField("reason", err).Debug("record pull failed")
				return
			}
			c.counters.pullsSent.Add(1)
			c.counters.sent(len(msg))
		})
		if !ok {
			return
		}
		inflight[t.name] = pull{at: now, version: t.version}
	}
}

// pull is a record pull in flight: when it was asked for, and the version
// that was wanted then.
type pull struct {
	at      time.Time
	version Version
}

// answerPull sends this node's record to a member that asked for it.
func (c *Cluster) answerPull(requester string, send func(func()) bool) {
	t, ok := c.store.member(requester)
	ml := c.memberlist()
	if !ok || ml == nil {
		return
	}
	r := c.store.selfRecord()
	msg := encodeRecord(r)
	send(func() {
		if err := ml.SendReliable(&memberlist.Node{Name: t.name, Addr: t.addr, Port: t.port}, msg); err != nil {
			c.log.WithField("peer", requester).WithField("reason", err).Debug("record pull reply failed")
			return
		}
		c.counters.pullsServed.Add(1)
		c.counters.sent(len(msg))
	})
}

// Publish replaces this node's registrations with regs and gossips the
// change. Publishing the registrations already published does nothing.
// Publish may be called before Start.
func (c *Cluster) Publish(regs []vip.Registration) {
	norm := normalizeRegistrations(regs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left {
		return
	}
	cur := c.store.selfRecord()
	if !cur.Leaving && equalRegistrations(cur.Registrations, norm) {
		return
	}
	r := &record{Node: c.cfg.NodeName, Version: Version{Generation: c.generation.Load(), Seq: c.seq + 1}, Registrations: norm}
	if n := len(encodeRecord(r)); n > MaxMessageBytes {
		c.log.WithFields(logrus.Fields{"backends": len(norm), "bytes": n,
			"reason": fmt.Sprintf("record over %d bytes", MaxMessageBytes)}).
			Error("registrations not published; the previous ones stay")
		return
	}
	c.seq++
	c.store.setSelf(r, c.now())
	if c.started {
		c.queueRecordLocked(r)
	}
	c.signal()
}

// queueRecordLocked queues a record of this node for gossip: whole when it
// fits in a packet, else as a notice that peers answer with a pull.
func (c *Cluster) queueRecordLocked(r *record) {
	msg := encodeRecord(r)
	if len(msg) > inlineRecordBytes {
		msg = encodeNotice(r.Node, r.Version)
	}
	c.queue.QueueBroadcast(&nodeBroadcast{node: r.Node, msg: msg})
}

// fence moves this node's generation past v, a version of its own name
// found in the cluster (its clock went back across a restart, or another
// process shares its name), and republishes its record.
func (c *Cluster) fence(v Version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.store.selfRecord()
	if !cur.Version.Less(v) || c.left {
		return
	}
	c.counters.generationBumps.Add(1)
	gen := v.Generation + 1
	c.generation.Store(gen)
	c.seq = 1
	r := &record{Node: cur.Node, Version: Version{Generation: gen, Seq: 1}, Registrations: cur.Registrations}
	c.store.setSelf(r, c.now())
	c.log.WithFields(logrus.Fields{"seen": v, "generation": gen,
		"reason": "a newer record of this node's name is in the cluster"}).Warn("moved generation forward")
	if c.started {
		c.queueRecordLocked(r)
		ml := c.ml
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := ml.UpdateNode(c.timing.TCPTimeout); err != nil {
				c.log.WithField("reason", err).Debug("announce new generation")
			}
		}()
	}
}

// signal wakes whoever waits on Changes.
func (c *Cluster) signal() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// State returns the live nodes' registrations, this node's included,
// sorted by node name. Dead and departed nodes are not in it.
func (c *Cluster) State() vip.ClusterState { return c.store.state() }

// Changes returns a channel that receives (coalesced, capacity 1) whenever
// State may have changed.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// Members returns every member this node knows, sorted by name, with its
// state and the number of its backends in State.
func (c *Cluster) Members() []Member { return c.store.memberList(c.now()) }

// Generation returns this node's current generation.
func (c *Cluster) Generation() uint64 { return c.generation.Load() }

// Stats returns this node's counters and gauges.
func (c *Cluster) Stats() Stats {
	var s Stats
	c.counters.fill(&s)
	s.BroadcastQueue = c.queue.NumQueued() + c.announce.NumQueued()
	s.BackendsByNode = c.store.backendCounts()
	for _, n := range s.BackendsByNode {
		s.Backends += n
	}
	s.Members = c.store.livePeerCount() + 1
	return s
}

// Leave tells the cluster this node is going, so that peers drop its
// backends at once rather than after failure detection, waits up to
// timeout for the news to go out, and shuts down. It stops waiting early
// when no live peer is left to tell (the whole cluster stopping at once).
func (c *Cluster) Leave(timeout time.Duration) error {
	c.mu.Lock()
	if !c.started || c.left {
		c.mu.Unlock()
		return c.Shutdown()
	}
	cur := c.store.selfRecord()
	r := &record{Node: cur.Node, Version: Version{Generation: cur.Version.Generation, Seq: c.seq + 1}, Leaving: true}
	c.seq++
	c.store.setSelf(r, c.now())
	c.queueRecordLocked(r)
	c.left = true // no publication may follow the leaving record
	ml := c.ml
	c.mu.Unlock()

	// memberlist's Leave waits until its goodbye has been gossiped to a
	// peer; when every peer has gone meanwhile, nobody can hear it. Its
	// goroutine ends at the timeout at the latest.
	done := make(chan error, 1)
	go func() { done <- ml.Leave(timeout) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			if err != nil {
				err = fmt.Errorf("leave cluster: %w", err)
			}
			break wait
		case <-tick.C:
			if c.livePeers.Load() == 0 {
				c.log.Info("no live peer left to say goodbye to; leaving without waiting")
				break wait
			}
		}
	}
	return errors.Join(err, c.Shutdown())
}

// Shutdown stops gossip without saying goodbye: peers find out through
// failure detection. Safe to call more than once.
func (c *Cluster) Shutdown() error {
	var err error
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.left = true
		ml := c.ml
		c.mu.Unlock()
		close(c.stop)
		if ml != nil {
			if e := ml.Shutdown(); e != nil {
				err = fmt.Errorf("shut down memberlist: %w", e)
			}
		}
		c.wg.Wait()
		c.log.Info("gossip stopped")
	})
	return err
}

var _ io.Writer = (*memberlistLog)(nil)
