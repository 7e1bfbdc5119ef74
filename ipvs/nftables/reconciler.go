package nftables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/ipvs/public"
	"github.com/l4lb/l4lb/vip"
)

// Reconciler keeps table inet l4lb equal to the desired table. Its methods
// are those of ipvs.Reconciler, so the agent can hold either.
type Reconciler struct {
	cfg    Config
	log    *logrus.Entry
	kernel Interface
	ct     Conntrack
	runner *runner.Runner
	pub    *public.Expander // owned by the sync goroutine

	mu           sync.Mutex // guards the fields down to refusedPub
	desired      *vip.Table // latest Update; nil until the first
	resyncWanted bool
	programmed   *vip.Table
	stats        ipvs.Stats
	opCounts     [numOpKinds]uint64
	writes       Writes
	drainingPub  map[vip.ServiceKey]map[netip.AddrPort]bool
	ownedKeys    map[vip.ServiceKey]bool
	refusedPub   map[vip.ServiceKey]string

	// Owned by the sync goroutine (the runner's); never touched elsewhere.
	applied   map[vip.ServiceKey]*appliedService
	base      appliedBase
	adopted   bool
	forceFull bool // a transaction failed: read the kernel back next time
	lastFull  time.Time
	lastDrain time.Time
	prev      *vip.Table // desired table of the last sync
	// keysChanged: services were added to or removed from applied since
	// the owned keys were last published.
	keysChanged bool
	refused     map[vip.ServiceKey]string
	// draining holds the backends that stopped taking new connections
	// and when.
	draining map[drainKey]time.Time
}

// Writes count what the reconciler wrote: transactions, ops and set
// elements (added plus deleted).
type Writes struct {
	Transactions, Ops, Elements uint64
}

type drainKey struct {
	svc     vip.ServiceKey
	backend netip.AddrPort
}

// appliedService is what the kernel holds for one service, as l4lb
// believes.
type appliedService struct {
	chain    bool
	rules    []string // comments, in order
	slotsSet bool
	slots    []netip.AddrPort
	liveSet  bool
	live     map[netip.AddrPort]bool
	aff      uint32 // the affinity map's timeout in seconds; 0: no map
	mapGoto  string // the chain its services map element jumps to; "" none
}

func (as *appliedService) empty() bool {
	return !as.chain && !as.slotsSet && !as.liveSet && as.aff == 0 && as.mapGoto == ""
}

// appliedBase is what the kernel holds of the table's own objects.
type appliedBase struct {
	table  bool
	chains map[string]bool
	rules  map[string][]string
	sets   map[string]bool
}

// New opens nf_tables (unless cfg.Kernel is given) and checks that it works;
// it programs nothing until Run is running and Update has been called.
func New(cfg Config) (*Reconciler, error) {
	cfg = cfg.withDefaults()
	r := &Reconciler{cfg: cfg, log: cfg.Logger, kernel: cfg.Kernel, ct: cfg.Conntrack, pub: public.NewExpander(cfg.PublicAddrs),
		applied: map[vip.ServiceKey]*appliedService{}, refused: map[vip.ServiceKey]string{}, draining: map[drainKey]time.Time{}}
	if r.kernel == nil {
		k, err := OpenKernel(cfg.Namespace, cfg.KernelTimeout)
		if err != nil {
			return nil, err
		}
		r.kernel = k
		if !cfg.KeepSysctls {
			if err := setForwarding(cfg.Namespace); err != nil {
				k.Close()
				return nil, err
			}
		}
		if r.ct == nil {
			ct, err := openConntrack(cfg.Namespace)
			if err != nil {
				k.Close()
				return nil, err
			}
			r.ct = ct
		}
	}
	r.runner = runner.New(r.sync, runner.Config{
		MinInterval: cfg.MinSyncInterval,
		MaxInterval: cfg.ResyncPeriod,
		RetryMin:    time.Second,
		RetryMax:    cfg.ResyncPeriod,
		Clock:       cfg.Clock,
	})
	return r, nil
}

// Forwarding are the sysctls New sets: traffic from other namespaces or
// hosts to a VIP is routed through the node.
var Forwarding = []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}

func setForwarding(ns string) error {
	return inNamespace(ns, func() error {
		var errs []error
		for _, k := range Forwarding {
			p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set sysctl %s=1 (VIP traffic is forwarded): %w", k, err))
			}
		}
		return errors.Join(errs...)
	})
}

// Run syncs on demand and every ResyncPeriod until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	r.runner.Run(ctx)
	return nil
}

// Update hands over a new desired table. It never blocks; only the newest
// table of a burst is applied. Nothing is written before the first Update.
func (r *Reconciler) Update(t *vip.Table) {
	r.mu.Lock()
	r.desired = t
	r.mu.Unlock()
	r.runner.Trigger()
}

// Resync asks for a full resync: read the table back and repair drift.
func (r *Reconciler) Resync() {
	r.mu.Lock()
	r.resyncWanted = true
	r.mu.Unlock()
	r.runner.Trigger()
}

// SyncNow runs one sync on the caller's goroutine, full if full is true.
// Tests and benchmarks use it instead of Run; not while Run runs.
func (r *Reconciler) SyncNow(full bool) error {
	if full {
		r.mu.Lock()
		r.resyncWanted = true
		r.mu.Unlock()
	}
	return r.sync()
}

// Programmed returns the VIPs of the desired table that the kernel holds:
// what DNS may answer. Nil before the first sync.
func (r *Reconciler) Programmed() *vip.Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.programmed
}

// Stats returns a copy of the counters, in ipvs.Stats's shape: Ops counts
// writes by OpKind name.
func (r *Reconciler) Stats() ipvs.Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Ops = map[string]uint64{}
	for k, n := range r.opCounts {
		s.Ops[OpKind(k).String()] = n
	}
	return s
}

// Writes returns how many transactions, ops and elements were written.
func (r *Reconciler) Writes() Writes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// Refused returns the desired VIPs left out because their scheduler has no
// nftables equivalent, with why.
func (r *Reconciler) Refused() map[vip.ServiceKey]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[vip.ServiceKey]string, len(r.refusedPub))
	for k, why := range r.refusedPub {
		out[k] = why
	}
	return out
}

// Connections reads conntrack now and counts, per service l4lb holds, the
// connections NATed to each backend: Active are established TCP
// connections, Inactive the others (TCP in other states, UDP). Weight is
// the desired one; Draining marks backends that take no new connections
// while some remain.
func (r *Reconciler) Connections() map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns {
	r.mu.Lock()
	owned := r.ownedKeys
	prog := r.programmed
	draining := r.drainingPub
	r.mu.Unlock()
	out := make(map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns, len(owned))
	if prog != nil {
		for i := range prog.VIPs {
			v := &prog.VIPs[i]
			m := make(map[netip.AddrPort]ipvs.Conns, len(v.Backends))
			for _, b := range v.Backends {
				m[b.Addr] = ipvs.Conns{Weight: b.Weight}
			}
			out[v.ServiceKey] = m
		}
	}
	if r.ct == nil {
		return out
	}
	flows, err := r.ct.Flows(owned)
	if err != nil {
		r.log.WithField("reason", err.Error()).Warn("cannot read connection counts")
		return out
	}
	for _, f := range flows {
		m := out[f.Service]
		if m == nil {
			m = map[netip.AddrPort]ipvs.Conns{}
			out[f.Service] = m
		}
		c := m[f.Backend]
		if f.Established {
			c.Active++
		} else {
			c.Inactive++
		}
		m[f.Backend] = c
	}
	for k, ds := range draining {
		for a := range ds {
			if m := out[k]; m != nil {
				c := m[a]
				c.Draining = true
				m[a] = c
			}
		}
	}
	return out
}

// Close releases the handles. With clean (the agent leaves for good) it also
// deletes table inet l4lb; established connections keep their conntrack
// NAT mappings either way. Without clean the table stays, and a restarting
// reconciler adopts it and writes only the difference.
func (r *Reconciler) Close(clean bool) error {
	var errs []error
	if clean {
		if err := r.kernel.Apply([]Op{{Kind: AddTable}, {Kind: DeleteTable}}); err != nil {
			errs = append(errs, fmt.Errorf("delete table inet %s: %w", TableName, err))
		}
	}
	if r.ct != nil {
		if err := r.ct.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.kernel.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sync is one run: read the table back when a full resync is due, plan the
// difference, apply it as one transaction, check draining backends.
func (r *Reconciler) sync() error {
	start := r.cfg.Clock.Now()
	r.mu.Lock()
	desired := r.desired
	full := r.resyncWanted || !r.adopted || r.forceFull || start.Sub(r.lastFull) >= r.cfg.ResyncPeriod
	if desired != nil {
		r.resyncWanted = false
	}
	r.mu.Unlock()
	if desired == nil {
		return nil // nothing known yet: touch nothing
	}
	// The kernel gets the table with the public services; Programmed
	// reports the table as handed over.
	input := desired
	desired = r.pub.Expand(desired)
	if full {
		rs, err := r.kernel.Read()
		if err != nil {
			err = fmt.Errorf("full resync: %w", err)
			r.finish(start, true, 0, err)
			return err
		}
		r.adopt(rs)
		r.lastFull, r.forceFull = start, false
	}
	keys := r.candidates(desired, full)
	ops := r.plan(desired, keys)
	var errs []error
	failed := 0
	if len(ops) > 0 {
		if err := r.apply(ops); err != nil {
			// The transaction changed nothing. Apply service by service,
			// so that one refused write does not hold back the others,
			// and read the kernel back next time.
			r.forceFull = true
			for _, g := range groupOps(ops) {
				if err := r.apply(g); err != nil {
					failed++
					errs = append(errs, err)
					r.log.WithFields(logrus.Fields{"vip": keyString(g[0].Service), "reason": err.Error()}).Warn("nftables write failed; will retry")
					continue
				}
				r.record(g)
			}
		} else {
			r.record(ops)
		}
	}
	r.trackDrains(desired, keys, start)
	if err := r.checkDrains(start, full); err != nil {
		errs = append(errs, err)
	}
	r.prev = desired
	r.publish(input, failed > 0 || len(r.refused) > 0)
	if len(r.draining) > 0 {
		r.runner.TriggerAfter(r.cfg.DrainCheckInterval)
	}
	err := errors.Join(errs...)
	r.finish(start, full, failed, err)
	return err
}

// apply runs ops as one transaction and counts it.
func (r *Reconciler) apply(ops []Op) error {
	err := r.kernel.Apply(ops)
	elems := 0
	for _, op := range ops {
		elems += len(op.Elements)
	}
	r.mu.Lock()
	r.writes.Transactions++
	r.writes.Ops += uint64(len(ops))
	r.writes.Elements += uint64(elems)
	if err == nil {
		for _, op := range ops {
			r.opCounts[op.Kind]++
		}
	}
	r.mu.Unlock()
	return err
}

// groupOps splits ops into the table's own (first) and one group per
// service, keeping their order.
func groupOps(ops []Op) [][]Op {
	var groups [][]Op
	idx := map[vip.ServiceKey]int{}
	for _, op := range ops {
		i, ok := idx[op.Service]
		if !ok {
			i = len(groups)
			idx[op.Service] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], op)
	}
	return groups
}

func (r *Reconciler) finish(start time.Time, full bool, failedOps int, err error) {
	end := r.cfg.Clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Syncs++
	if full {
		r.stats.FullSyncs++
	}
	if err != nil {
		r.stats.FailedSyncs++
	}
	r.stats.FailedOps += uint64(failedOps)
	r.stats.LastSync = end
	r.stats.LastSyncDuration = end.Sub(start)
}

// adopt replaces what the reconciler believes the kernel holds with what
// Read found.
func (r *Reconciler) adopt(rs *Ruleset) {
	r.base = appliedBase{table: rs.Exists, chains: map[string]bool{}, rules: map[string][]string{}, sets: map[string]bool{}}
	applied := make(map[vip.ServiceKey]*appliedService, len(r.applied))
	get := func(k vip.ServiceKey) *appliedService {
		as := applied[k]
		if as == nil {
			as = &appliedService{}
			applied[k] = as
		}
		return as
	}
	for name := range rs.Chains {
		switch name {
		case chainPrerouting, chainOutput, chainPostrouting:
			r.base.chains[name] = true
			r.base.rules[name] = rs.Rules[name]
			continue
		}
		if k, ok := keyOfChain(name); ok {
			as := get(k)
			as.chain = true
			as.rules = rs.Rules[name]
		}
	}
	for name, s := range rs.Sets {
		switch name {
		case mapServices4, mapServices6:
			r.base.sets[name] = true
			for _, e := range rs.Elements[name] {
				if k, ok := keyOfServiceBytes(e.Key); ok {
					get(k).mapGoto = e.Goto
				}
			}
			continue
		}
		prefix, id, ok := strings.Cut(name, "-")
		if !ok {
			continue
		}
		k, ok := keyOfChain("svc-" + id)
		if !ok {
			continue
		}
		as := get(k)
		switch prefix {
		case "slots":
			as.slotsSet = true
			for _, e := range rs.Elements[name] {
				i, ok1 := slotOfKey(e.Key)
				b, ok2 := backendOfBytes(e.Data)
				if !ok1 || !ok2 || i > 1<<16 {
					continue
				}
				for len(as.slots) <= i {
					as.slots = append(as.slots, netip.AddrPort{})
				}
				as.slots[i] = b
			}
		case "live":
			as.liveSet = true
			as.live = map[netip.AddrPort]bool{}
			for _, e := range rs.Elements[name] {
				if b, ok := backendOfBytes(e.Key); ok {
					as.live[b] = true
				}
			}
		case "aff":
			as.aff = max(1, uint32(s.TimeoutMS/1000))
		}
	}
	r.applied = applied
	r.adopted = true
	r.keysChanged = true
}

// candidates returns the service keys to look at: every desired and applied
// one after a full read; otherwise those the table's lineage says changed
// since the previous sync (or, without a lineage, those whose VIP differs),
// and those refused before.
func (r *Reconciler) candidates(desired *vip.Table, all bool) []vip.ServiceKey {
	set := map[vip.ServiceKey]bool{}
	if !all && r.prev != nil {
		if changed, ok := desired.ChangedSince(r.prev); ok {
			for _, k := range changed {
				set[k] = true
			}
		} else {
			i, j := 0, 0
			for i < len(desired.VIPs) || j < len(r.prev.VIPs) {
				switch {
				case j >= len(r.prev.VIPs) || (i < len(desired.VIPs) && vip.CompareServiceKeys(desired.VIPs[i].ServiceKey, r.prev.VIPs[j].ServiceKey) < 0):
					set[desired.VIPs[i].ServiceKey] = true
					i++
				case i >= len(desired.VIPs) || vip.CompareServiceKeys(desired.VIPs[i].ServiceKey, r.prev.VIPs[j].ServiceKey) > 0:
					set[r.prev.VIPs[j].ServiceKey] = true
					j++
				default:
					if !sameVIP(&desired.VIPs[i], &r.prev.VIPs[j]) {
						set[desired.VIPs[i].ServiceKey] = true
					}
					i++
					j++
				}
			}
		}
		for k := range r.refused {
			set[k] = true
		}
	} else {
		for i := range desired.VIPs {
			set[desired.VIPs[i].ServiceKey] = true
		}
		for k := range r.applied {
			set[k] = true
		}
	}
	keys := make([]vip.ServiceKey, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, vip.CompareServiceKeys)
	return keys
}

func sameVIP(a, b *vip.VIP) bool {
	if a.Scheduler != b.Scheduler || a.Persistence != b.Persistence || len(a.Backends) != len(b.Backends) {
		return false
	}
	for i := range a.Backends {
		if a.Backends[i].Addr != b.Backends[i].Addr || a.Backends[i].Weight != b.Backends[i].Weight {
			return false
		}
	}
	return true
}

// findVIP returns the VIP of t with key k, or nil.
func findVIP(t *vip.Table, k vip.ServiceKey) *vip.VIP {
	if t == nil {
		return nil
	}
	i := sort.Search(len(t.VIPs), func(i int) bool { return vip.CompareServiceKeys(t.VIPs[i].ServiceKey, k) >= 0 })
	if i < len(t.VIPs) && t.VIPs[i].ServiceKey == k {
		return &t.VIPs[i]
	}
	return nil
}

// trackDrains starts the drain clock of every backend of the looked-at
// services that took new connections in the previous table and takes none
// now, and stops it for backends taking new connections again. A UDP
// backend that left the table has its conntrack entries deleted at once.
func (r *Reconciler) trackDrains(desired *vip.Table, keys []vip.ServiceKey, now time.Time) {
	for _, k := range keys {
		v := findVIP(desired, k)
		if _, refused := r.refused[k]; refused {
			v = nil
		}
		live := map[netip.AddrPort]bool{}
		present := map[netip.AddrPort]bool{}
		if v != nil {
			for _, b := range v.Backends {
				present[b.Addr] = true
				if b.Weight > 0 {
					live[b.Addr] = true
					delete(r.draining, drainKey{k, b.Addr})
				}
			}
		}
		pv := findVIP(r.prev, k)
		if pv == nil {
			continue
		}
		for _, b := range pv.Backends {
			dk := drainKey{k, b.Addr}
			if b.Weight == 0 || live[b.Addr] {
				continue
			}
			if _, ok := r.draining[dk]; ok {
				continue
			}
			if k.Protocol == vip.UDP && !present[b.Addr] {
				r.flushConntrack(dk, "UDP backend left the table")
				continue
			}
			r.draining[dk] = now
		}
	}
}

func (r *Reconciler) flushConntrack(dk drainKey, why string) {
	if r.ct == nil {
		return
	}
	n, err := r.ct.Delete(dk.svc, dk.backend)
	fields := logrus.Fields{"vip": keyString(dk.svc), "backend": dk.backend.String(), "reason": why}
	if err != nil {
		fields["error"] = err.Error()
		r.log.WithFields(fields).Warn("cannot delete conntrack entries")
		return
	}
	if n > 0 {
		fields["entries"] = n
		r.log.WithFields(fields).Info("conntrack entries deleted")
	}
}

// checkDrains reads conntrack (at most once per DrainCheckInterval) and
// ends the drain of backends without connections; at DrainTimeout, the
// remaining connections' entries are deleted.
func (r *Reconciler) checkDrains(now time.Time, full bool) error {
	if len(r.draining) == 0 || r.ct == nil {
		return nil
	}
	if !full && now.Sub(r.lastDrain) < r.cfg.DrainCheckInterval {
		return nil
	}
	r.lastDrain = now
	svcs := map[vip.ServiceKey]bool{}
	for dk := range r.draining {
		svcs[dk.svc] = true
	}
	flows, err := r.ct.Flows(svcs)
	if err != nil {
		return fmt.Errorf("read connections of draining backends: %w", err)
	}
	count := map[drainKey]int{}
	for _, f := range flows {
		count[drainKey{f.Service, f.Backend}]++
	}
	for dk, since := range r.draining {
		switch {
		case count[dk] == 0:
			delete(r.draining, dk)
		case now.Sub(since) >= r.cfg.DrainTimeout:
			r.flushConntrack(dk, "drain deadline passed")
			delete(r.draining, dk)
		}
	}
	return nil
}

// publish computes what other goroutines read: the programmed table (the
// desired one itself when every VIP is in the kernel), the owned services,
// the draining backends; and calls OnProgrammed when the table changed.
func (r *Reconciler) publish(desired *vip.Table, partial bool) {
	prog := desired
	if partial {
		prog = &vip.Table{Errors: desired.Errors}
		for i := range desired.VIPs {
			v := &desired.VIPs[i]
			if _, refused := r.refused[v.ServiceKey]; refused {
				continue
			}
			if as := r.applied[v.ServiceKey]; as != nil && as.chain && as.mapGoto == nameOf(v.ServiceKey).chain && len(as.rules) > 0 {
				prog.VIPs = append(prog.VIPs, *v)
			}
		}
		r.mu.Lock()
		same := r.programmed != nil && samePrograms(r.programmed, prog)
		r.mu.Unlock()
		if same {
			r.mu.Lock()
			prog = r.programmed
			r.mu.Unlock()
		}
	}
	refused := make(map[vip.ServiceKey]string, len(r.refused))
	for k, why := range r.refused {
		refused[k] = why
	}
	var owned map[vip.ServiceKey]bool
	if r.keysChanged || r.ownedKeys == nil {
		owned = make(map[vip.ServiceKey]bool, len(r.applied))
		for k := range r.applied {
			owned[k] = true
		}
		r.keysChanged = false
	}
	draining := map[vip.ServiceKey]map[netip.AddrPort]bool{}
	for dk := range r.draining {
		if draining[dk.svc] == nil {
			draining[dk.svc] = map[netip.AddrPort]bool{}
		}
		draining[dk.svc][dk.backend] = true
	}
	r.mu.Lock()
	changed := r.programmed != prog
	r.programmed = prog
	if owned != nil {
		r.ownedKeys = owned
	}
	r.refusedPub = refused
	r.drainingPub = draining
	r.stats.Services = len(r.applied)
	r.stats.Draining = len(r.draining)
	r.mu.Unlock()
	if changed && r.cfg.OnProgrammed != nil {
		r.cfg.OnProgrammed(prog)
	}
}

// samePrograms reports whether two programmed tables list the same VIPs
// with the same backends.
func samePrograms(a, b *vip.Table) bool {
	if len(a.VIPs) != len(b.VIPs) || !slices.Equal(a.Errors, b.Errors) {
		return false
	}
	for i := range a.VIPs {
		if a.VIPs[i].ServiceKey != b.VIPs[i].ServiceKey || !sameVIP(&a.VIPs[i], &b.VIPs[i]) {
			return false
		}
	}
	return true
}

// KernelCounters returns what the real kernel handle sent (transactions,
// netlink messages, elements, dumps); zero with an injected Interface.
func (r *Reconciler) KernelCounters() Counters {
	if k, ok := r.kernel.(*Kernel); ok {
		return k.Counters()
	}
	return Counters{}
}
