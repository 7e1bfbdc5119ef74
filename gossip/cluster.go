package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// inlineRecordBytes is the largest delta gossiped inline. A memberlist
// packet holds 1400 bytes, less the compound header, a label of up to 257
// bytes and 29 bytes of encryption: about 1110 bytes in the worst case.
// A larger change is announced with a notice and pulled over TCP.
const inlineRecordBytes = 1024

// recentChanges is how many of this node's latest publications are kept
// (their keys), so that a delta can span the publications whose gossip was
// cut short by a newer one: a peer that missed one of them still applies
// the next.
const recentChanges = 8

// recentKeysMax is the most keys kept for one publication; a larger one
// does not fit in a packet anyway.
const recentKeysMax = 64

// ErrRecordFull is returned (wrapped) by PublishDelta when the change would
// take this node's record past MaxRecordBytes on the wire; nothing changed.
var ErrRecordFull = errors.New("gossip: this node's record is full")

// ErrLeft is returned by PublishDelta after Leave, Restart or Shutdown.
var ErrLeft = errors.New("gossip: this node has left the cluster")

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
	conflict chan error // NameConflict
	pullWake chan struct{}
	replies  chan pullRequest
	// deaths carries declared deaths to confirmDeaths; transport dials
	// for it (memberlist's transport, counted).
	deaths    chan deathCheck
	transport memberlist.Transport
	// appliedAsks are the members that asked for this node's report.
	appliedAsks chan string
	badLog      *logLimiter
	keyring     *memberlist.Keyring
	// applied holds every node's report of what its kernel programmed.
	applied *appliedBook

	// generation is read by memberlist (NodeMeta) without c.mu.
	generation atomic.Uint64
	livePeers  atomic.Int64
	pushPulled atomic.Bool // a peer's whole state was merged (Merged)

	mu      sync.Mutex // guards ml, started, left, recent, fullReply; serialises publications
	ml      *memberlist.Memberlist
	started bool
	left    bool
	// recent holds the keys of this node's latest publications, oldest
	// first, consecutive seqs (see queueSelfLocked).
	recent []selfChange
	// lastSelf is the latest gossip queued about this node's record: the
	// base it spans from, and whether the queue is done with it.
	lastSelf struct {
		base uint64
		done *atomic.Bool
	}
	// fullReply caches the encoded whole record for pulls, by version.
	fullReply struct {
		version Version
		msg     []byte
	}

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
		cfg:         cfg,
		timing:      cfg.Timing.withDefaults(),
		log:         cfg.Logger,
		now:         cfg.Now,
		store:       newStore(cfg.NodeName),
		changes:     make(chan struct{}, 1),
		conflict:    make(chan error, 1),
		pullWake:    make(chan struct{}, 1),
		replies:     make(chan pullRequest, 256),
		deaths:      make(chan deathCheck, 256),
		appliedAsks: make(chan string, 256),
		badLog:      newLogLimiter(10, time.Second),
		applied:     newAppliedBook(),
		stop:        make(chan struct{}),
	}
	if c.log == nil {
		c.log = logrus.NewEntry(logrus.StandardLogger())
	}
	c.log = c.log.WithFields(logrus.Fields{"component": "gossip", "node": cfg.NodeName})
	if c.now == nil {
		c.now = time.Now
	}
	if c.cfg.RestartGrace == 0 {
		c.cfg.RestartGrace = DefaultRestartGrace
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
	c.store.notify = c.signal
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
	c.queueSelfLocked()
	c.wg.Add(3)
	go c.joinSeeds(ctx, self.Address())
	go c.run()
	go c.confirmDeaths()
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
	conf.Conflict = &conflicts{c: c}
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
	c.transport = conf.Transport
	return conf, nil
}

// onSuspect is called (from memberlist's logger) when this node's failure
// detector suspects a peer.
func (c *Cluster) onSuspect(node string) {
	t := c.timing
	bound := time.Duration(t.SuspicionMaxTimeoutMult*t.SuspicionMult) * t.ProbeInterval * 4
	now := c.now()
	c.store.suspect(node, now, now.Add(bound))
	c.log.WithFields(logrus.Fields{"peer": node, "reason": "no acks received"}).Info("member suspected; declared failed unless it refutes")
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

	// Sends run on goroutines of their own: at most maxSends at once for
	// this node's pulls (and applied reports), as many again for its
	// answers to peers' pulls, so that neither starves the other.
	const maxSends = 8
	sendSlots := make(chan struct{}, maxSends)
	replySlots := make(chan struct{}, maxSends)
	slotFreed := make(chan struct{}, 1)
	inflight := make(map[string]pull) // pulls asked for, by node
	var reconnecting atomic.Bool

	goWith := func(slots chan struct{}, fn func()) bool {
		select {
		case slots <- struct{}{}:
		default:
			return false
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() {
				<-slots
				select {
				case slotFreed <- struct{}{}:
				default:
				}
			}()
			fn()
		}()
		return true
	}
	send := func(fn func()) bool { return goWith(sendSlots, fn) }
	reply := func(fn func()) bool { return goWith(replySlots, fn) }
	// pullDue runs only when a send slot is free: with every slot busy it
	// could send nothing, and its scan of the due wants on every wake-up
	// of a busy node would be for nothing.
	pullIfFree := func() {
		if len(sendSlots) < cap(sendSlots) {
			c.pullDue(inflight, send)
		}
	}

	for {
		// A pull request waits in c.replies until a reply slot is free:
		// it is answered, not dropped. Dropped, the requester asked again
		// a second later, and a node that many peers pulled at once (a
		// joiner, the owner of a large change) answered 8 and dropped the
		// rest, round after round.
		replies := c.replies
		if len(replySlots) == cap(replySlots) {
			replies = nil
		}
		select {
		case <-c.stop:
			return
		case req := <-replies:
			c.answerPull(req, reply)
		case <-slotFreed:
			pullIfFree()
		case <-c.pullWake:
			pullIfFree()
		case <-tick.C:
			pullIfFree()
			if n := c.store.expireRestarts(c.now(), c.cfg.RestartGrace); n > 0 {
				c.log.WithFields(logrus.Fields{"members": n, "reason": "not back within the restart grace " + c.cfg.RestartGrace.String()}).
					Info("restarting members declared dead; their backends leave the cluster state")
			}
		case <-announce.C:
			// A record broadcast can miss a node (gossip is random); the
			// announcement repairs that within an interval or two.
			if c.livePeers.Load() > 0 {
				c.announce.QueueBroadcast(&nodeBroadcast{node: c.cfg.NodeName, msg: c.announcement()})
			}
		case who := <-c.appliedAsks:
			c.answerApplied(who, send)
		case <-sweep.C:
			if n := c.store.sweep(c.now(), c.timing.ForgetAfter); n > 0 {
				c.log.WithField("forgotten", n).Debug("forgot long-gone members")
			}
			// O(reports): Members() would build and sort the whole list.
			c.applied.forget(c.store.known)
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
	retry := min(c.timing.TCPTimeout, time.Second)
	for name, p := range inflight {
		if now.Sub(p.at) >= retry {
			delete(inflight, name)
		}
	}
	for _, t := range c.store.pullTargets(now) {
		// The owner answers with its newest record, so a pull asked for
		// after learning of this version will bring it; a newer version
		// than the one in flight was asked for is pulled again at once
		// (the owner may have answered before it made that version).
		if p, busy := inflight[t.name]; busy && !p.version.Less(t.version) {
			c.store.pullStarted(t.name, t.version, p.at.Add(retry))
			continue
		}
		ml := c.memberlist()
		if ml == nil {
			return
		}
		t := t
		msg := encodePull(c.cfg.NodeName, t.name, t.since, t.layout)
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
		c.store.pullStarted(t.name, t.version, now.Add(retry))
	}
}

// pull is a record pull in flight: when it was asked for, and the version
// that was wanted then.
type pull struct {
	at      time.Time
	version Version
}

// pullRequest is a peer's request for what changed since the version it
// holds.
type pullRequest struct {
	requester string
	since     Version
	layout    uint8
}

// answerPull sends a peer the pages of this node's record that changed
// since the version it holds (everything if it holds another generation or
// layout). The run loop calls it with a reply slot free, so send takes it.
func (c *Cluster) answerPull(req pullRequest, send func(func()) bool) {
	t, ok := c.store.member(req.requester)
	ml := c.memberlist()
	if !ok || ml == nil {
		return
	}
	p := c.store.pagesSince(req.since, req.layout)
	var msg []byte
	if p.Full {
		c.mu.Lock()
		if c.fullReply.version == (Version{Generation: p.Gen, Seq: p.Seq}) && c.fullReply.msg != nil {
			msg = c.fullReply.msg
		} else {
			msg = encodePages(p)
			c.fullReply.version, c.fullReply.msg = Version{Generation: p.Gen, Seq: p.Seq}, msg
		}
		c.mu.Unlock()
	} else {
		msg = encodePages(p)
	}
	send(func() {
		if err := ml.SendReliable(&memberlist.Node{Name: t.name, Addr: t.addr, Port: t.port}, msg); err != nil {
			c.log.WithField("peer", req.requester).WithField("reason", err).Debug("record pull reply failed")
			return
		}
		c.counters.pullsServed.Add(1)
		c.counters.sent(len(msg))
	})
}

// Publish replaces this node's registrations with regs (normalised; of
// registrations with the same vip.RegKey the last counts) and gossips what
// changed: it is a diff, then PublishDelta. Publishing the registrations
// already published does nothing. A change that would make the record full
// is refused and logged; PublishDelta returns it as an error. Publish may
// be called before Start.
func (c *Cluster) Publish(regs []vip.Registration) {
	want := make(map[vip.RegKey]bool, len(regs))
	for i := range regs {
		want[regs[i].Key()] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left {
		return
	}
	var removed []vip.RegKey
	for _, k := range c.store.selfKeys() {
		if !want[k] {
			removed = append(removed, k)
		}
	}
	if err := c.publishLocked(regs, removed); err != nil {
		c.log.WithFields(logrus.Fields{"backends": len(regs), "reason": err.Error()}).
			Error("registrations not published; the previous ones stay")
	}
}

// PublishDelta changes this node's registrations by key: set adds or
// replaces (by vip.RegKey; registrations are normalised first, and of two
// with one key the last counts), removed drops; a key in both is set. It
// costs O(len(set)+len(removed)) amortised. It returns an error wrapping
// ErrRecordFull and changes nothing when the record would pass
// MaxRecordBytes, and ErrLeft after Leave or Shutdown. A change that
// changes nothing bumps no version and sends nothing. PublishDelta may be
// called before Start.
func (c *Cluster) PublishDelta(set []vip.Registration, removed []vip.RegKey) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left {
		return ErrLeft
	}
	return c.publishLocked(set, removed)
}

func (c *Cluster) publishLocked(set []vip.Registration, removed []vip.RegKey) error {
	changed, v, err := c.store.publish(set, removed, c.now())
	if err != nil {
		return fmt.Errorf("publish %d registrations, remove %d: %w", len(set), len(removed), err)
	}
	if changed == nil {
		return nil
	}
	ch := selfChange{seq: v.Seq}
	if len(changed) <= recentKeysMax {
		ch.keys = changed
	} else {
		ch.big = true
	}
	c.recent = append(c.recent, ch)
	if len(c.recent) > recentChanges {
		c.recent = slices.Delete(c.recent, 0, len(c.recent)-recentChanges)
	}
	if c.started {
		c.queueSelfLocked()
	}
	return nil
}

// TakeChanges returns, per node, how the registrations visible in State()
// changed since the previous call, coalesced: a key changed many times
// appears once, with its final value (Set) or in Removed; a node that
// became invisible (dead, left) has all its keys in Removed; one that
// became visible has all its registrations in Set. Nodes are sorted by
// name. The first call returns everything in State(); from then on the
// cost is in proportion to the changes. Applying every result in turn to
// an empty map gives State().
func (c *Cluster) TakeChanges() []vip.NodeDelta { return c.store.takeChanges() }

// selfChange is one publication of this node: its seq and the keys it
// changed (big: too many to keep).
type selfChange struct {
	seq  uint64
	keys []vip.RegKey
	big  bool
}

// queueSelfLocked queues gossip about this node's current record: the
// whole record when it fits in a packet (anyone can apply it); else a delta
// from the previous version, widened back to the base of the previous
// delta when the queue replaced that one before it was sent its
// transmissions (so a peer that missed it still applies this one), as far
// as fits in a packet; else a notice that peers answer with a pull.
// c.mu is held.
func (c *Cluster) queueSelfLocked() {
	v := c.store.selfVersion()
	msg, base := c.selfGossip(v)
	done := new(atomic.Bool)
	c.lastSelf.base, c.lastSelf.done = base, done
	c.queue.QueueBroadcast(&nodeBroadcast{node: c.cfg.NodeName, msg: msg, done: done})
}

// selfGossip returns the message about this node's record at v and the
// base it spans from (v.Seq for a notice).
func (c *Cluster) selfGossip(v Version) ([]byte, uint64) {
	if _, bytes := c.store.selfSize(); bytes <= inlineRecordBytes {
		if msg := encodeDelta(c.store.selfDelta(0, nil)); len(msg) <= inlineRecordBytes {
			return msg, 0
		}
	}
	// Widen back to the previous delta's base while it is unsent.
	from := v.Seq - 1
	if d := c.lastSelf.done; d != nil && !d.Load() && c.lastSelf.base < from {
		from = max(c.lastSelf.base, 1)
	}
	var best []byte
	bestBase := v.Seq
	var keys []vip.RegKey
	expect := v.Seq
	for i := len(c.recent) - 1; i >= 0 && expect > from; i-- {
		ch := c.recent[i]
		if ch.seq != expect || ch.big || ch.seq <= 1 {
			break
		}
		keys = append(keys, ch.keys...)
		msg := encodeDelta(c.store.selfDelta(ch.seq-1, keys))
		if len(msg) > inlineRecordBytes {
			break
		}
		best, bestBase = msg, ch.seq-1
		expect--
	}
	if best != nil {
		return best, bestBase
	}
	return encodeNotice(c.cfg.NodeName, v), v.Seq
}

// announcement returns this node's periodic announcement: its whole record
// when that fits in a packet, as the record's own gossip carries it, which
// a peer that lacks it applies as it is (and passes on, as any news); else
// a notice of its version, on which a peer that is behind pulls. A notice
// therefore always means a record that only a pull brings. With a notice
// every time, each node that heard a joiner's announcement before its
// gossip pulled the joiner and passed the notice on to others without the
// record, which pulled too: 537,000 pulls while a one-process 1,000-node
// cluster was built (where starting nodes slows gossip down), and still
// 497,000 when only the announcements of the first 4 s after a change
// were whole. A whole announcement costs at most inlineRecordBytes per
// transmission instead of about 30 bytes.
func (c *Cluster) announcement() []byte {
	if _, bytes := c.store.selfSize(); bytes <= inlineRecordBytes {
		if msg := encodeDelta(c.store.selfDelta(0, nil)); len(msg) <= inlineRecordBytes {
			return msg
		}
	}
	return encodeNotice(c.cfg.NodeName, c.store.selfVersion())
}

// fence moves this node's generation past v, a version of its own name
// found in the cluster (its clock went back across a restart, or another
// process shares its name), and republishes its record.
func (c *Cluster) fence(v Version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.store.selfVersion().Less(v) || c.left {
		return
	}
	c.counters.generationBumps.Add(1)
	gen := v.Generation + 1
	c.generation.Store(gen)
	c.store.fenceSelf(gen, c.now())
	c.recent = nil
	c.lastSelf.done = nil
	c.log.WithFields(logrus.Fields{"seen": v, "generation": gen,
		"reason": "a newer record of this node's name is in the cluster"}).Warn("moved generation forward")
	if c.started {
		c.queueSelfLocked()
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
	d := c.store.leaveSelf(c.now())
	c.queue.QueueBroadcast(&nodeBroadcast{node: c.cfg.NodeName, msg: encodeDelta(d)})
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

// Restart tells the cluster this node is restarting, not leaving: it
// publishes a new version of its record, same registrations, marked
// restarting; waits up to timeout for that to go out (stopping early when
// no live peer is left to tell); and shuts down without memberlist's
// goodbye. When the failure detector then reports the node gone, peers
// keep its backends in State() for Config.RestartGrace; when it comes back
// (a new process, a new generation) they keep them until its new record
// arrives and switch in one step, so TakeChanges reports only what really
// changed. A node that does not come back within the grace is dropped as
// on a death. Safe after Leave or Shutdown (it then only shuts down).
//
// Leave is for leaving for good (backends dropped at once); Shutdown is a
// crash as peers see it (backends dropped on failure detection); Restart
// is for a stop that will be followed by a start.
func (c *Cluster) Restart(timeout time.Duration) error {
	c.mu.Lock()
	if !c.started || c.left {
		c.mu.Unlock()
		return c.Shutdown()
	}
	v := c.store.restartSelf(c.now())
	// The restarting publication changed no key: a peer that holds the
	// previous version applies an empty delta.
	c.recent = append(c.recent, selfChange{seq: v.Seq})
	if len(c.recent) > recentChanges {
		c.recent = slices.Delete(c.recent, 0, len(c.recent)-recentChanges)
	}
	c.queueSelfLocked()
	done := c.lastSelf.done
	c.left = true // no publication may follow the restarting record
	c.mu.Unlock()

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for !done.Load() {
		select {
		case <-deadline.C:
			err = fmt.Errorf("restart: record %v not sent its transmissions within %v", v, timeout)
			break wait
		case <-tick.C:
			if c.livePeers.Load() == 0 {
				c.log.Info("no live peer left to tell of the restart; stopping without waiting")
				break wait
			}
		}
	}
	if err == nil {
		c.log.WithField("version", v).Info("told the cluster this node is restarting")
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
