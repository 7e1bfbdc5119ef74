package vip

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The default ranges from which named VIPs get their addresses.
var (
	DefaultV4Range = netip.MustParsePrefix("11.0.0.0/8")
	DefaultV6Range = netip.MustParsePrefix("fd01:c::/64")
)

// ErrRangeFull is wrapped by ProposeClaim's error when no address is left.
var ErrRangeFull = errors.New("range is full")

// WithDefaults returns c with its zero fields set to the defaults
// (DefaultDomain, DefaultV4Range, DefaultV6Range) and its ranges masked.
func (c Config) WithDefaults() Config {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if !c.V4.IsValid() {
		c.V4 = DefaultV4Range
	}
	if !c.V6.IsValid() {
		c.V6 = DefaultV6Range
	}
	c.V4, c.V6 = c.V4.Masked(), c.V6.Masked()
	return c
}

// Build computes the desired table from the cluster state: a pure function,
// so every node holding the same state builds a reflect.DeepEqual table,
// whatever the order of its nodes and of their backends. The rules (address
// book, health, conflicts) are in the package README. Nothing is ever
// dropped silently: a registration or VIP that is left out says why in
// Table.Errors.
func Build(cfg Config, state ClusterState) *Table {
	b := newBuilder(cfg)
	b.collect(state)
	b.place()
	return b.table().lineage()
}

// ProposeClaim returns the Claim a node publishes (in Registration.Claim)
// when it registers a backend of family v6 for the named VIP spec started by
// framework:
//   - when the state already places the name, its current address; with the
//     Since of the name's claim when the name holds its claimed address, so
//     that the name keeps its place in the address book, else with now;
//   - otherwise the first address, probing from the name's hash, that
//     neither a name nor an IP VIP of the state holds, with Since = now. Once
//     published, Build gives the name exactly that address and moves no other
//     name, whatever now is relative to the other claims.
//
// The error wraps ErrRangeFull when no address is free, or says why spec or
// framework cannot be a named VIP.
func ProposeClaim(cfg Config, state ClusterState, spec Spec, framework string, v6 bool, now time.Time) (Claim, error) {
	spec, id, err := checkClaimRequest(cfg.WithDefaults().Domain, spec, framework, v6)
	if err != nil {
		return Claim{}, err
	}
	b := newBuilder(cfg)
	b.collect(state)
	b.place()

	alloc := b.alloc(v6)
	if e, ok := b.entries[id]; ok && e.dnsErr == nil {
		return claimOfPlaced(spec, e, alloc.r, now)
	}
	c, _, err := claimOfNew(spec, id, alloc.r, alloc.firstFree, now)
	return c, err
}

// checkClaimRequest checks what ProposeClaim is asked and returns the spec
// normalised and the identity whose address is asked for.
func checkClaimRequest(domain string, spec Spec, framework string, v6 bool) (Spec, identity, error) {
	spec, err := spec.validate()
	if err == nil && !spec.Named() {
		err = fmt.Errorf("%s is an IP VIP: only named VIPs claim an address", spec)
	}
	if framework == "" {
		framework = DefaultFramework
	}
	if err == nil {
		_, _, err = DNSNames(spec.Name, framework, domain)
	}
	if err != nil {
		return spec, identity{}, fmt.Errorf("propose claim for %s: %w", spec, err)
	}
	return spec, identity{framework: strings.ToLower(framework), name: strings.ToLower(spec.Name), v6: v6}, nil
}

// claimOfPlaced is ProposeClaim's answer for a name the state already has
// (e, placed by the address book, in range r).
func claimOfPlaced(spec Spec, e *nameEntry, r addrRange, now time.Time) (Claim, error) {
	if !e.placed {
		return Claim{}, fmt.Errorf("propose claim for %s (%s): range %s: %w", spec, e.id.framework, r.prefix, ErrRangeFull)
	}
	if e.claimed && e.claim.Addr == e.addr {
		return e.claim, nil
	}
	return Claim{Addr: e.addr, Since: now}, nil
}

// claimOfNew is ProposeClaim's answer for a name the state does not have:
// the first free address of r from the name's hash, as firstFree finds it
// (it does not take the address). It also returns the address's index.
func claimOfNew(spec Spec, id identity, r addrRange, firstFree func(uint64) (uint64, bool), now time.Time) (Claim, uint64, error) {
	if r.size == 0 {
		return Claim{}, 0, fmt.Errorf("propose claim for %s (%s): range %s has no usable address: %w", spec, id.framework, r.prefix, ErrRangeFull)
	}
	i, ok := firstFree(probeStart(id, r.size))
	if !ok {
		return Claim{}, 0, fmt.Errorf("propose claim for %s (%s): range %s: %w", spec, id.framework, r.prefix, ErrRangeFull)
	}
	return Claim{Addr: r.addr(i), Since: now}, i, nil
}

// Find returns the VIP with key k.
func (t *Table) Find(k ServiceKey) (VIP, bool) {
	if t == nil {
		return VIP{}, false
	}
	i, ok := slices.BinarySearchFunc(t.VIPs, k, func(v VIP, k ServiceKey) int { return compareServiceKeys(v.ServiceKey, k) })
	if !ok {
		return VIP{}, false
	}
	return t.VIPs[i], true
}

// Equal reports whether t and o hold the same VIPs and errors. Nil and empty
// slices are equal; a nil Table equals an empty one.
func (t *Table) Equal(o *Table) bool {
	if t == nil {
		t = &Table{}
	}
	if o == nil {
		o = &Table{}
	}
	return slices.Equal(t.Errors, o.Errors) && slices.EqualFunc(t.VIPs, o.VIPs, equalVIPs)
}

func equalVIPs(a, b VIP) bool {
	return a.ServiceKey == b.ServiceKey && a.Label == b.Label && a.Name == b.Name &&
		a.Framework == b.Framework && a.Scheduler == b.Scheduler && a.Persistence == b.Persistence &&
		a.PublicPort == b.PublicPort && slices.Equal(a.Names, b.Names) && slices.Equal(a.Backends, b.Backends) && slices.Equal(a.Down, b.Down) && slices.Equal(a.Conflicts, b.Conflicts)
}

func compareServiceKeys(a, b ServiceKey) int {
	if d := a.Addr.Compare(b.Addr); d != 0 {
		return d
	}
	if d := cmp.Compare(a.Port, b.Port); d != 0 {
		return d
	}
	return strings.Compare(string(a.Protocol), string(b.Protocol))
}

// groupKey identifies one VIP of the table before named VIPs have addresses:
// a named identity or an IP VIP's address, with port and protocol.
type groupKey struct {
	id    identity
	addr  netip.Addr
	port  uint16
	proto Protocol
}

// member is one valid registration of a VIP, as Build keeps it: the backend
// as plain bytes, the node as an index into the state and the scheduler as
// an index into the builder's interned names, so that the 100,000 members of
// a large state hold no pointers (no write barriers when they are copied and
// sorted, nothing for the garbage collector to scan) and fillBackends never
// reads the registrations again.
type member struct {
	addr        [16]byte // the backend's address, in 16-byte form
	port        uint16
	is4         bool
	health      uint8 // index into healthNames
	sched       uint32
	node        int32 // index into the state
	weight      uint32
	persistence uint32
	public      uint16 // PublicPortOf the registration: 0 when not public
}

// healthNames are the health values a member can hold, sorted.
var healthNames = [...]Health{Draining, Healthy, Unhealthy}

func healthIndex(h Health) uint8 {
	switch h {
	case Draining:
		return 0
	case Unhealthy:
		return 2
	default: // "" and Healthy; add has refused anything else
		return 1
	}
}

func (b *builder) newMember(node int, r *Registration) member {
	a := r.Backend.Addr().Unmap()
	return member{
		addr: a.As16(), port: r.Backend.Port(), is4: a.Is4(), node: int32(node),
		health: healthIndex(r.Health), sched: b.schedIndex(r.Scheduler),
		weight: r.Weight, persistence: r.Persistence, public: PublicPortOf(r),
	}
}

// PublicPortOf is the public port a registration asks for its VIP: 0 when
// it does not ask that the VIP be public, else its PublicPort, or the VIP's
// own port when PublicPort is 0.
func PublicPortOf(r *Registration) uint16 {
	switch {
	case !r.Public:
		return 0
	case r.PublicPort != 0:
		return r.PublicPort
	}
	return r.VIP.Port
}

// schedIndex interns a scheduler name: a cluster asks for a handful.
func (b *builder) schedIndex(s string) uint32 {
	if s == "" {
		s = DefaultScheduler
	}
	for i, x := range b.scheds {
		if x == s {
			return uint32(i)
		}
	}
	if i, ok := b.schedMap[s]; ok {
		return i
	}
	if len(b.scheds) < 8 {
		b.scheds = append(b.scheds, s)
		return uint32(len(b.scheds) - 1)
	}
	// Many distinct names (misconfigured backends): a map from here on.
	if b.schedMap == nil {
		b.schedMap = map[string]uint32{}
	}
	i := uint32(len(b.scheds) + len(b.schedMap))
	b.schedMap[s] = i
	b.schedByIndex = append(b.schedByIndex, s)
	return i
}

func (b *builder) schedName(i uint32) string {
	if int(i) < len(b.scheds) {
		return b.scheds[i]
	}
	return b.schedByIndex[int(i)-len(b.scheds)]
}

// backend is the member's backend address.
func (m member) backend() netip.AddrPort {
	if m.is4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.addr[12:])), m.port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(m.addr), m.port)
}

// memberView is a member as fillBackends reads it.
type memberView struct {
	node        string
	weight      uint32
	health      Health
	scheduler   string
	persistence uint32
	public      uint16
}

func (b *builder) view(m member) memberView {
	return memberView{node: b.nodeNames[m.node], weight: m.weight, health: healthNames[m.health], scheduler: b.schedName(m.sched), persistence: m.persistence, public: m.public}
}

// compareMembers orders members by backend (IPv4 first, as netip does),
// then, for one backend registered more than once, by node name and the
// rest of the registration, so that the first of a backend is chosen the
// same way on every node.
func (b *builder) compareMembers(x, y member) int {
	if x.is4 != y.is4 {
		if x.is4 {
			return -1
		}
		return 1
	}
	if d := bytes.Compare(x.addr[:], y.addr[:]); d != 0 {
		return d
	}
	if d := cmp.Compare(x.port, y.port); d != 0 {
		return d
	}
	a, c := b.view(x), b.view(y)
	if d := strings.Compare(a.node, c.node); d != 0 {
		return d
	}
	if d := cmp.Compare(a.health, c.health); d != 0 {
		return d
	}
	if d := cmp.Compare(a.weight, c.weight); d != 0 {
		return d
	}
	if d := strings.Compare(a.scheduler, c.scheduler); d != 0 {
		return d
	}
	if d := cmp.Compare(a.persistence, c.persistence); d != 0 {
		return d
	}
	return cmp.Compare(a.public, c.public)
}

type group struct {
	key     groupKey
	entry   *nameEntry // named VIPs only
	count   int        // registrations filed while collecting
	members []member   // set when collecting is done
}

type builder struct {
	cfg      Config
	domain   string
	v4, v6   *allocator
	entries  map[identity]*nameEntry
	groups   map[groupKey]int32 // index in groupList
	group    []group
	suffixes map[string]suffixResult // framework -> "framework.domain."
	errs     []string
	// specs remembers, for each spec as registrations spell it, the group
	// it was filed in (or why it was refused): a VIP's backends repeat the
	// same spec, and checking and lower-casing it once is most of add.
	specs     map[specMemo]specResult
	state     ClusterState     // what collect read; members point into it
	nodeNames []string         // member.node -> node name
	views     []memberView     // fillBackends' scratch: the kept members' registrations
	addrs     []netip.AddrPort // and their backends

	scheds       []string          // interned scheduler names (schedIndex)
	schedMap     map[string]uint32 // past the first few
	schedByIndex []string
	entryChunk   []nameEntry // where entry allocates
	backends     []Backend   // where fillBackends carves VIPs' backends from
	backendsLeft int         // members not yet through fillBackends: the size of the next array
}

type specMemo struct {
	spec      Spec
	framework string
	v6        bool
}

type specResult struct {
	group int32
	name  string // the spec's name as validate normalised it
	err   error
}

type suffixResult struct {
	suffix string
	err    error
}

func newBuilder(cfg Config) *builder {
	cfg = cfg.WithDefaults()
	b := &builder{
		cfg:      cfg,
		entries:  map[identity]*nameEntry{},
		groups:   map[groupKey]int32{},
		suffixes: map[string]suffixResult{},
		specs:    map[specMemo]specResult{},
	}
	b.v4 = newAllocator(cfg.V4)
	if !cfg.V4.Addr().Is4() {
		b.v4.r.size = 0
		b.errs = append(b.errs, fmt.Sprintf("config: V4 range %s is not an IPv4 range", cfg.V4))
	}
	b.v6 = newAllocator(cfg.V6)
	if !cfg.V6.Addr().Is6() || cfg.V6.Addr().Is4In6() {
		b.v6.r.size = 0
		b.errs = append(b.errs, fmt.Sprintf("config: V6 range %s is not an IPv6 range", cfg.V6))
	}
	return b
}

func (b *builder) alloc(v6 bool) *allocator {
	if v6 {
		return b.v6
	}
	return b.v4
}

func (b *builder) collect(state ClusterState) {
	b.state = state
	b.nodeNames = make([]string, len(state))
	for i := range state {
		b.nodeNames[i] = state[i].Node
	}
	// First pass: check each registration and find its group; second pass:
	// copy the members into one array, grouped, so that a large state costs
	// a few allocations rather than one per group.
	total := 0
	for i := range state {
		total += len(state[i].Backends)
	}
	// Size the maps for a few backends per VIP, so that a large state does
	// not spend its time growing them.
	hint := total / 4
	b.specs = make(map[specMemo]specResult, hint)
	b.groups = make(map[groupKey]int32, hint)
	b.entries = make(map[identity]*nameEntry, hint)
	b.group = make([]group, 0, hint)
	groupOf := make([]int32, 0, total)
	b.backendsLeft = total
	for i := range state {
		node := &state[i]
		for j := range node.Backends {
			r := &node.Backends[j]
			gi, err := b.add(node.Node, r)
			if err != nil {
				b.errs = append(b.errs, fmt.Sprintf("node %q: %s backend %s: %v", node.Node, r.VIP, r.Backend, err))
				gi = -1
			}
			groupOf = append(groupOf, gi)
		}
	}
	members := make([]member, total)
	start := 0
	for i := range b.group {
		g := &b.group[i]
		g.members = members[start : start : start+g.count]
		start += g.count
	}
	k := 0
	for i := range state {
		node := &state[i]
		for j := range node.Backends {
			if gi := groupOf[k]; gi >= 0 {
				g := &b.group[gi]
				g.members = append(g.members, b.newMember(i, &node.Backends[j]))
			}
			k++
		}
	}
}

// add checks one registration and returns the index of the group it
// belongs to.
func (b *builder) add(node string, r *Registration) (int32, error) {
	backendAddr, err := checkBackend(r)
	if err != nil {
		return 0, err
	}
	mk := specMemo{spec: r.VIP, framework: r.Framework, v6: backendAddr.Is6()}
	res, ok := b.specs[mk]
	if !ok {
		res.group, res.name, res.err = b.fileSpec(r.VIP, r.Framework, backendAddr)
		b.specs[mk] = res
	}
	if res.err != nil {
		return 0, res.err
	}
	g := &b.group[res.group]
	if e := g.entry; e != nil {
		if e.display == "" || res.name < e.display {
			e.display = res.name
		}
		e.offerClaim(r.Claim, node)
	}
	g.count++
	return res.group, nil
}

// checkBackend checks what a registration says of its backend and returns
// the backend's address, unmapped.
func checkBackend(r *Registration) (netip.Addr, error) {
	backendAddr := r.Backend.Addr().Unmap()
	if err := checkVIPAddr(backendAddr); err != nil {
		return backendAddr, fmt.Errorf("backend %w", err)
	}
	if r.Backend.Port() == 0 {
		return backendAddr, fmt.Errorf("backend port \"0\" %w", ErrBadPort)
	}
	switch r.Health {
	case "", Healthy, Draining, Unhealthy:
	default:
		return backendAddr, fmt.Errorf("health %q is not one of healthy, draining, unhealthy", r.Health)
	}
	return backendAddr, nil
}

// checkSpec checks a registration's spec and framework and returns the key
// of the group its VIP is filed in, and the name as validate normalised it.
func checkSpec(vipSpec Spec, framework string, backendAddr netip.Addr) (groupKey, string, error) {
	spec, err := vipSpec.validate()
	if err != nil {
		return groupKey{}, "", err
	}
	key := groupKey{port: spec.Port, proto: spec.Protocol}
	if spec.Named() {
		if framework == "" {
			framework = DefaultFramework
		}
		if err := checkLabel(framework); err != nil {
			return groupKey{}, "", fmt.Errorf("framework: %w", err)
		}
		key.id = identity{framework: strings.ToLower(framework), name: strings.ToLower(spec.Name), v6: backendAddr.Is6()}
	} else {
		if spec.Addr.Is6() != backendAddr.Is6() {
			return groupKey{}, "", fmt.Errorf("backend is %s but the VIP is %s: an IP VIP's backends must be of its family", family(backendAddr), family(spec.Addr))
		}
		key.addr = spec.Addr
	}
	return key, spec.Name, nil
}

// named reports whether k is the key of a named VIP's group.
func (k groupKey) named() bool { return !k.addr.IsValid() }

// fileSpec checks a registration's spec and framework and returns the group
// of its VIP, made if new.
func (b *builder) fileSpec(vipSpec Spec, framework string, backendAddr netip.Addr) (int32, string, error) {
	key, name, err := checkSpec(vipSpec, framework, backendAddr)
	if err != nil {
		return 0, "", err
	}
	gi, ok := b.groups[key]
	if !ok {
		gi = int32(len(b.group))
		b.groups[key] = gi
		g := group{key: key}
		if key.named() {
			g.entry = b.entry(key.id)
		}
		b.group = append(b.group, g)
	}
	return gi, name, nil
}

func family(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// entry returns the address-book entry of id, creating it on first sight.
func (b *builder) entry(id identity) *nameEntry {
	e := b.entries[id]
	if e == nil {
		// Entries come from chunks, one allocation per 256 names; a chunk
		// is never grown, so the pointers into it stay valid.
		if len(b.entryChunk) == cap(b.entryChunk) {
			b.entryChunk = make([]nameEntry, 0, 256)
		}
		b.entryChunk = append(b.entryChunk, nameEntry{id: id})
		e = &b.entryChunk[len(b.entryChunk)-1]
		b.entries[id] = e
	}
	return e
}

// place settles each name's DNS names and address.
func (b *builder) place() {
	var v4, v6 []*nameEntry
	for _, e := range b.entries {
		if err := b.setNames(e); err != nil {
			e.dnsErr = err
			b.errs = append(b.errs, fmt.Sprintf("%s (%s): %v", e.display, e.id.framework, err))
			continue
		}
		if e.id.v6 {
			v6 = append(v6, e)
		} else {
			v4 = append(v4, e)
		}
	}
	for i := range b.group {
		if k := b.group[i].key; k.addr.IsValid() {
			b.alloc(k.addr.Is6()).reserve(k.addr)
		}
	}
	b.errs = append(b.errs, placeNames(b.v4, v4)...)
	b.errs = append(b.errs, placeNames(b.v6, v6)...)
}

func (b *builder) setNames(e *nameEntry) error {
	s, ok := b.suffixes[e.id.framework]
	if !ok {
		s.suffix, s.err = nameSuffix(e.id.framework, b.cfg.Domain)
		b.suffixes[e.id.framework] = s
	}
	if s.err != nil {
		return s.err
	}
	// e.id.name was validated when the registration was added.
	path, flat := namesWithSuffix(e.id.name, s.suffix)
	if n := len(path) - 1; n > maxNameLen {
		return fmt.Errorf("name %q: %d characters: %w", path, n, ErrNameTooLong)
	}
	if flat != "" && flat != path {
		e.names = []string{path, flat}
	} else {
		e.names = []string{path}
	}
	return nil
}

func (b *builder) table() *Table {
	// Order the groups by service key first (small values to move), named
	// VIPs before an IP VIP on the same key, then build the VIPs in order.
	type slot struct {
		key ServiceKey
		g   *group
	}
	slots := make([]slot, 0, len(b.group))
	for i := range b.group {
		g := &b.group[i]
		k := ServiceKey{Addr: g.key.addr, Port: g.key.port, Protocol: g.key.proto}
		if g.entry != nil {
			if !g.entry.placed {
				continue
			}
			k.Addr = g.entry.addr
		}
		slots = append(slots, slot{key: k, g: g})
	}
	slices.SortFunc(slots, func(a, b slot) int {
		if d := compareServiceKeys(a.key, b.key); d != 0 {
			return d
		}
		switch {
		case a.g.entry != nil && b.g.entry == nil:
			return -1
		case a.g.entry == nil && b.g.entry != nil:
			return 1
		}
		return 0
	})

	t := &Table{VIPs: make([]VIP, 0, len(slots))}
	for _, s := range slots {
		g := s.g
		if g.entry == nil {
			if n := len(t.VIPs); n > 0 && t.VIPs[n-1].ServiceKey == s.key {
				b.errs = append(b.errs, leftOutLine(g.key, &t.VIPs[n-1]))
				continue
			}
		}
		t.VIPs = append(t.VIPs, groupVIP(s.key, g.key, g.entry))
		b.fillBackends(&t.VIPs[len(t.VIPs)-1], g.members)
	}
	if len(b.errs) > 0 {
		slices.Sort(b.errs)
		t.Errors = slices.Compact(b.errs)
	}
	return t
}

// groupVIP is the VIP of the group with key gk (and entry e, for a named
// VIP) at service key k, before its backends are filled.
func groupVIP(k ServiceKey, gk groupKey, e *nameEntry) VIP {
	if e == nil {
		return VIP{ServiceKey: k, Label: Spec{Protocol: gk.proto, Addr: gk.addr, Port: gk.port}.String()}
	}
	return VIP{
		ServiceKey: k,
		Label:      Spec{Protocol: gk.proto, Name: e.display, Port: gk.port}.String(),
		Name:       e.display,
		Framework:  e.id.framework,
		Names:      e.names, // shared by the ports of one name; a Table is immutable
	}
}

// leftOutLine is the error line of the IP VIP of group key gk, left out
// because the named VIP held is on the same service key.
func leftOutLine(gk groupKey, held *VIP) string {
	spec := Spec{Protocol: gk.proto, Addr: gk.addr, Port: gk.port}
	return fmt.Sprintf("vip %s: left out: named VIP %s (%s) holds %s", spec, held.Name, held.Framework, spec)
}

// fillBackends settles v's backends, scheduler, persistence and conflicts
// from its registrations.
func (b *builder) fillBackends(v *VIP, members []member) {
	b.backendsLeft -= len(members)
	slices.SortFunc(members, b.compareMembers)
	// Keep the first member of each backend; read the registrations of the
	// kept ones once, into a scratch slice the builder reuses.
	kept := b.views[:0]
	var conflicts []string
	var previous member
	for i, m := range members {
		mv := b.view(m)
		if i > 0 && m.addr == previous.addr && m.port == previous.port && m.is4 == previous.is4 {
			first := kept[len(kept)-1]
			if mv.node == first.node {
				conflicts = append(conflicts, fmt.Sprintf("backend %s: registered more than once by node %q", m.backend(), mv.node))
			} else {
				conflicts = append(conflicts, fmt.Sprintf("backend %s: node %q over node %q", m.backend(), first.node, mv.node))
			}
			continue
		}
		previous = m
		kept = append(kept, mv)
		b.addrs = append(b.addrs[:len(kept)-1], m.backend())
	}
	b.views = kept
	conflicts = slices.Compact(conflicts)

	v.Scheduler, conflicts = vote(kept, func(m memberView) string { return m.scheduler }, "scheduler", func(s string) string { return s }, conflicts)
	v.Persistence, conflicts = vote(kept, func(m memberView) uint32 { return m.persistence }, "persistence", func(p uint32) string { return strconv.FormatUint(uint64(p), 10) }, conflicts)
	v.PublicPort, conflicts = vote(kept, func(m memberView) uint16 { return m.public }, "public port", formatPublicPort, conflicts)
	v.Conflicts = conflicts

	healthy := 0
	for _, m := range kept {
		if m.health != Unhealthy {
			healthy++
		}
	}
	if healthy > 0 {
		// Carved from one array for the whole table; the three-index
		// slice keeps an append to one VIP's backends off its neighbour's.
		if len(b.backends)+healthy > cap(b.backends) {
			b.backends = make([]Backend, 0, healthy+b.backendsLeft)
		}
		start := len(b.backends)
		b.backends = b.backends[:start+healthy]
		v.Backends = b.backends[start : start : start+healthy]
	}
	if healthy < len(kept) {
		v.Down = make([]Backend, 0, len(kept)-healthy)
	}
	for i, m := range kept {
		switch m.health {
		case Unhealthy:
			v.Down = append(v.Down, Backend{Addr: b.addrs[i], Weight: m.weight, Node: m.node, Health: m.health})
			continue
		case Draining:
			m.weight = 0
		}
		v.Backends = append(v.Backends, Backend{Addr: b.addrs[i], Weight: m.weight, Node: m.node, Health: m.health})
	}
}

// formatPublicPort is a public port as a conflict line shows it.
func formatPublicPort(p uint16) string {
	if p == 0 {
		return "none"
	}
	return strconv.FormatUint(uint64(p), 10)
}

// vote returns the value asked for by the most members (ties to the smallest
// value) and, when members disagreed, appends a conflict line such as
// "scheduler: wlc (2 backends) over rr (1 backend)".
func vote[T cmp.Ordered](members []memberView, value func(memberView) T, what string, format func(T) string, conflicts []string) (T, []string) {
	// The usual case: every member asks for the same value.
	if len(members) > 0 {
		first, same := value(members[0]), true
		for _, m := range members[1:] {
			if value(m) != first {
				same = false
				break
			}
		}
		if same {
			return first, conflicts
		}
	}
	type tally struct {
		value T
		count int
	}
	var tallies []tally
	for _, m := range members {
		x := value(m)
		found := false
		for i := range tallies {
			if tallies[i].value == x {
				tallies[i].count++
				found = true
				break
			}
		}
		if !found {
			tallies = append(tallies, tally{value: x, count: 1})
		}
	}
	if len(tallies) == 0 {
		var zero T
		return zero, conflicts
	}
	slices.SortFunc(tallies, func(a, b tally) int { return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.value, b.value)) })
	if len(tallies) == 1 {
		return tallies[0].value, conflicts
	}
	var line strings.Builder
	line.WriteString(what)
	line.WriteString(": ")
	for i, t := range tallies {
		switch i {
		case 0:
		case 1:
			line.WriteString(" over ")
		default:
			line.WriteString(", ")
		}
		line.WriteString(format(t.value))
		line.WriteString(" (")
		line.WriteString(strconv.Itoa(t.count))
		if t.count == 1 {
			line.WriteString(" backend)")
		} else {
			line.WriteString(" backends)")
		}
	}
	return tallies[0].value, append(conflicts, line.String())
}
