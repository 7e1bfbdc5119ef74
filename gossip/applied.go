package gossip

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/l4lb/l4lb/vip"
)

// Applied is what one node's data plane has programmed, as that node
// reported it: the cluster-wide view behind `l4lb register --wait`,
// `deregister --wait` and "programmed on N of M nodes".
type Applied struct {
	Node string
	// Versions holds, per origin node, the version of that node's record
	// that the table this node's kernel last programmed was built from. A
	// node at or past version v of origin O serves every change O
	// published up to v.
	Versions map[string]Version
	// Draining are the backends this node's kernel holds at weight 0 after
	// they left the table, with their connection counts when reported.
	Draining []Drain
	// Received is when this node got the report (for self: when made).
	Received time.Time
}

// Drain is a backend draining on one node, with its connections there.
type Drain struct {
	Service          vip.ServiceKey
	Backend          netip.AddrPort
	Active, Inactive uint32
}

// Reports travel only when asked: a TCP request to each live member and
// its parts back, so that they cost nothing while no one looks and do not
// grow with the cluster on every change (each report holds a version per
// node: gossiping every node's report on every change would cost
// O(nodes²) bytes). appliedAskNow bounds how often AppliedNow asks (a
// waiting deploy polls it); appliedAskEvery how often Applied does (the
// stats page, /metrics).
const (
	appliedAskNow   = 500 * time.Millisecond
	appliedAskEvery = 5 * time.Second
)

// maxAppliedParts bounds how many packets one report may take.
const maxAppliedParts = 256

// appliedMsg is one part of a node's report (kind 6). A report at (Gen,
// RSeq) is split into Parts packets; it counts once every part is in.
type appliedMsg struct {
	Node        string
	Gen, RSeq   uint64
	Part, Parts uint32
	Versions    map[string]Version
	Draining    []Drain
}

// appliedBook holds every node's newest complete report and the parts of
// one being assembled. Its methods are safe for concurrent use.
type appliedBook struct {
	mu sync.Mutex // guards every field below
	// nodes: per reporting node, what was received.
	nodes map[string]*appliedEntry
	// self is this node's current report, its encoded parts and version.
	self      Applied
	selfParts [][]byte
	rseq      uint64
	// asked is when askApplied last asked the members; asking is set
	// while a round of questions is being sent.
	asked  time.Time
	asking bool
}

type appliedEntry struct {
	gen, rseq uint64 // of the report being assembled (or complete)
	parts     map[uint32]*appliedMsg
	want      uint32
	complete  *Applied
}

func newAppliedBook() *appliedBook {
	return &appliedBook{nodes: map[string]*appliedEntry{}}
}

// ReportApplied records what this node's data plane has programmed
// (versions: per origin node, the record version its table was built
// from) and which backends it holds draining, with their connections. It
// sends nothing: a member that asks (Applied on another node) gets it. A
// report equal to the previous one keeps its report sequence. It never
// blocks.
func (c *Cluster) ReportApplied(versions map[string]Version, draining []Drain) {
	b := c.applied
	d := slices.Clone(draining)
	slices.SortFunc(d, compareDrains)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rseq > 0 && maps.Equal(b.self.Versions, versions) && slices.Equal(b.self.Draining, d) {
		return
	}
	b.rseq++
	b.self = Applied{Node: c.cfg.NodeName, Versions: maps.Clone(versions), Draining: d, Received: c.now()}
	b.selfParts = encodeApplied(c.cfg.NodeName, c.generation.Load(), b.rseq, b.self.Versions, d, inlineRecordBytes)
}

// askApplied asks every live member for its report, at most once per gap
// and one round at a time; the answers arrive as kind-6 parts that
// handleMessage merges. It never blocks.
func (c *Cluster) askApplied(gap time.Duration) {
	now := c.now()
	c.applied.mu.Lock()
	due := !c.applied.asking && now.Sub(c.applied.asked) >= gap
	if due {
		c.applied.asking, c.applied.asked = true, now
	}
	c.applied.mu.Unlock()
	if !due {
		return
	}
	ml := c.memberlist()
	targets := c.store.liveTargets()
	if ml == nil || len(targets) == 0 {
		c.applied.mu.Lock()
		c.applied.asking = false
		c.applied.mu.Unlock()
		return
	}
	msg := encodeAppliedQuery(c.cfg.NodeName)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.applied.mu.Lock()
			c.applied.asking = false
			c.applied.mu.Unlock()
		}()
		for _, t := range targets {
			select {
			case <-c.stop:
				return
			default:
			}
			if err := ml.SendReliable(&memberlist.Node{Name: t.name, Addr: t.addr, Port: t.port}, msg); err != nil {
				c.log.WithField("peer", t.name).WithField("reason", err).Debug("applied report query failed")
				continue
			}
			c.counters.sent(len(msg))
		}
	}()
}

// answerApplied sends this node's report to the member that asked for it.
func (c *Cluster) answerApplied(requester string, send func(func()) bool) {
	t, ok := c.store.member(requester)
	ml := c.memberlist()
	c.applied.mu.Lock()
	parts := c.applied.selfParts
	c.applied.mu.Unlock()
	if !ok || ml == nil || len(parts) == 0 {
		return
	}
	send(func() {
		for _, p := range parts {
			if err := ml.SendReliable(&memberlist.Node{Name: t.name, Addr: t.addr, Port: t.port}, p); err != nil {
				c.log.WithField("peer", requester).WithField("reason", err).Debug("applied report answer failed")
				return
			}
			c.counters.sent(len(p))
		}
	})
}

func encodeAppliedQuery(requester string) []byte {
	e := header(kindAppliedQuery)
	e.str(requester)
	return e.b
}

// Applied returns the newest complete report of every live member, this
// node's own included, sorted by node. A live member that has reported
// nothing yet (or runs a version without reports) is left out. It costs
// O(nodes + their draining backends).
//
// Reports are fetched on demand: a call asks the live members for theirs
// when the last question is appliedAskEvery (5 s) old, so a caller that
// polls sees them arrive; the first call may find none yet. AppliedNow
// asks when the last question is 500 ms old, for a caller that waits on
// them (register --wait).
func (c *Cluster) Applied() []Applied {
	c.askApplied(appliedAskEvery)
	return c.appliedReports()
}

// AppliedNow is Applied for a caller that waits on the reports: it asks at
// most every 500 ms.
func (c *Cluster) AppliedNow() []Applied {
	c.askApplied(appliedAskNow)
	return c.appliedReports()
}

func (c *Cluster) appliedReports() []Applied {
	live := map[string]bool{c.cfg.NodeName: true}
	for _, m := range c.Members() {
		if m.State == MemberAlive || m.State == MemberSuspect {
			live[m.Name] = true
		}
	}
	b := c.applied
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Applied
	if b.rseq > 0 {
		out = append(out, b.self)
	}
	for name, e := range b.nodes {
		if e.complete == nil || !live[name] || name == c.cfg.NodeName {
			continue
		}
		out = append(out, *e.complete)
	}
	slices.SortFunc(out, func(a, b Applied) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// Versions returns the version of every record in State(), by node: what
// a table built from the changes taken after this call carries at least.
// O(nodes).
func (c *Cluster) Versions() map[string]Version {
	s := c.store
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Version, len(s.records))
	for name, e := range s.records {
		if s.visibleLocked(name) {
			out[name] = e.rec.version
		}
	}
	return out
}

// SelfVersion is the version of this node's own record: a change
// PublishDelta accepted is carried by this version or an earlier one.
func (c *Cluster) SelfVersion() Version { return c.store.selfVersion() }

// mergeApplied takes one part of a peer's report. It reports whether the
// part was new (to be passed on).
func (b *appliedBook) mergeApplied(self string, m *appliedMsg, now time.Time) bool {
	if m.Node == self {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.nodes[m.Node]
	if e == nil {
		e = &appliedEntry{}
		b.nodes[m.Node] = e
	}
	switch {
	case m.Gen < e.gen || (m.Gen == e.gen && m.RSeq < e.rseq):
		return false // older than what is held or assembled
	case m.Gen > e.gen || m.RSeq > e.rseq:
		if m.Gen > e.gen {
			e.complete = nil // a new process: its previous life's report is void
		}
		e.gen, e.rseq, e.want, e.parts = m.Gen, m.RSeq, m.Parts, map[uint32]*appliedMsg{}
	}
	if _, dup := e.parts[m.Part]; dup || m.Parts != e.want {
		return false
	}
	e.parts[m.Part] = m
	if uint32(len(e.parts)) == e.want {
		a := &Applied{Node: m.Node, Versions: map[string]Version{}, Received: now}
		for i := uint32(0); i < e.want; i++ {
			p := e.parts[i]
			maps.Copy(a.Versions, p.Versions)
			a.Draining = append(a.Draining, p.Draining...)
		}
		e.complete = a
	}
	return true
}

// forget drops the reports of nodes that are no longer members.
func (b *appliedBook) forget(keep func(string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name := range b.nodes {
		if !keep(name) {
			delete(b.nodes, name)
		}
	}
}

func compareDrains(a, b Drain) int {
	if c := compareServiceKey(a.Service, b.Service); c != 0 {
		return c
	}
	return compareAddrPort(a.Backend, b.Backend)
}

func compareServiceKey(a, b vip.ServiceKey) int {
	if c := strings.Compare(string(a.Protocol), string(b.Protocol)); c != 0 {
		return c
	}
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	return int(a.Port) - int(b.Port)
}

// Wire: kind 6, "applied". node, generation, report seq, part, parts, count
// + (origin node, generation, seq), count + (protocol, VIP address, VIP
// port (2 bytes), backend address, backend port (2 bytes), active,
// inactive).
const (
	minAppliedVersionBytes = 3
	minDrainBytes          = 8
)

// encodeApplied encodes one report in as few parts of at most limit bytes
// as it takes (at least one, at most maxAppliedParts: past that, the last
// part takes the rest).
func encodeApplied(node string, gen, rseq uint64, versions map[string]Version, draining []Drain, limit int) [][]byte {
	budget := limit - len(node) - 40 // a part's header takes less
	var parts []*appliedMsg
	cur := &appliedMsg{Versions: map[string]Version{}}
	size := 0
	next := func(n int) {
		if size+n > budget && size > 0 && len(parts) < maxAppliedParts-1 {
			parts = append(parts, cur)
			cur, size = &appliedMsg{Versions: map[string]Version{}}, 0
		}
		size += n
	}
	for _, o := range slices.Sorted(maps.Keys(versions)) {
		var e encoder
		e.appliedVersion(o, versions[o])
		next(len(e.b))
		cur.Versions[o] = versions[o]
	}
	for _, d := range draining {
		var e encoder
		e.drain(d)
		next(len(e.b))
		cur.Draining = append(cur.Draining, d)
	}
	parts = append(parts, cur)
	out := make([][]byte, len(parts))
	for i, p := range parts {
		p.Node, p.Gen, p.RSeq, p.Part, p.Parts = node, gen, rseq, uint32(i), uint32(len(parts))
		out[i] = encodeAppliedPart(p)
	}
	return out
}

// encodeAppliedPart encodes one part of a report.
func encodeAppliedPart(m *appliedMsg) []byte {
	e := header(kindApplied)
	e.str(m.Node)
	e.uvarint(m.Gen)
	e.uvarint(m.RSeq)
	e.uvarint(uint64(m.Part))
	e.uvarint(uint64(m.Parts))
	e.uvarint(uint64(len(m.Versions)))
	for _, o := range slices.Sorted(maps.Keys(m.Versions)) {
		e.appliedVersion(o, m.Versions[o])
	}
	e.uvarint(uint64(len(m.Draining)))
	for _, d := range m.Draining {
		e.drain(d)
	}
	return e.b
}

func (e *encoder) appliedVersion(origin string, v Version) {
	e.str(origin)
	e.uvarint(v.Generation)
	e.uvarint(v.Seq)
}

func (e *encoder) drain(d Drain) {
	e.str(string(d.Service.Protocol))
	e.addr(d.Service.Addr)
	e.uint16(d.Service.Port)
	e.addr(d.Backend.Addr())
	e.uint16(d.Backend.Port())
	e.uvarint(uint64(d.Active))
	e.uvarint(uint64(d.Inactive))
}

// applied decodes the body of a kind-6 message.
func (d *decoder) applied() *appliedMsg {
	m := &appliedMsg{}
	m.Node = d.node("node")
	m.Gen = d.uvarint("generation")
	m.RSeq = d.uvarint("report seq")
	m.Part = d.uint32("part")
	m.Parts = d.uint32("parts")
	if d.err == nil && (m.Parts == 0 || m.Parts > maxAppliedParts || m.Part >= m.Parts) {
		d.fail("part %d of %d", m.Part, m.Parts)
	}
	n := d.count("applied versions", minAppliedVersionBytes)
	m.Versions = make(map[string]Version, n)
	for i := 0; i < n && d.err == nil; i++ {
		o := d.node("origin")
		v := Version{Generation: d.uvarint("generation"), Seq: d.uvarint("seq")}
		if _, dup := m.Versions[o]; dup && d.err == nil {
			d.fail("origin %q twice", o)
		}
		m.Versions[o] = v
	}
	n = d.count("draining backends", minDrainBytes)
	for i := 0; i < n && d.err == nil; i++ {
		var x Drain
		x.Service.Protocol = vip.Protocol(d.str("protocol"))
		x.Service.Addr = d.addr("vip address")
		x.Service.Port = d.uint16("vip port")
		ba := d.addr("backend address")
		x.Backend = netip.AddrPortFrom(ba, d.uint16("backend port"))
		x.Active = d.uint32("active")
		x.Inactive = d.uint32("inactive")
		if d.err == nil && (!x.Service.Addr.IsValid() || !ba.IsValid()) {
			d.fail("draining backend without an address")
		}
		m.Draining = append(m.Draining, x)
	}
	return m
}
