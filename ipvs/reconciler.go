package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/ipvs/public"
	"github.com/l4lb/l4lb/vip"
)

// Reconciler keeps one node's kernel equal to the desired table. Create it
// with New, run it with Run, feed it with Update.
type Reconciler struct {
	cfg    Config
	kernel Interface
	log    *logrus.Entry
	runner *runner.Runner
	host   *hostSetup // sysctls and iptables; nil with an injected Kernel
	pub    *public.Expander

	mu           sync.Mutex // guards the fields below, read by other goroutines
	desired      *vip.Table // latest Update; nil until the first
	resyncWanted bool       // Resync was called
	programmed   *vip.Table // what the kernel holds of desired, after the last sync
	owned        []Service  // services l4lb holds in the kernel, after the last sync
	stats        Stats      // counters
	opCounts     [numOpKinds]uint64
	drainingPub  map[vip.ServiceKey]map[netip.AddrPort]bool // draining real servers

	// Owned by the sync goroutine (the runner's); never touched elsewhere.
	applied   map[vip.ServiceKey]*appliedService
	addrs     map[netip.Addr]bool // addresses on the dummy interface
	adopted   bool                // the kernel has been read at least once
	lastFull  time.Time
	lastDrain time.Time // last read of draining backends' connections
	seq       uint64    // number of the current sync
	// prev is the desired table of the last sync: the next table says
	// what changed since (vip.Table.ChangedSince).
	prev *vip.Table
	// replanAll makes the next sync look at every service: a write failed.
	replanAll bool
	// drainingSvcs are the services with draining real servers.
	drainingSvcs map[vip.ServiceKey]bool
	// pubRecord lists the services at public addresses that l4lb created (or
	// is about to create), as Config.PublicRecord holds it; foreign the
	// wanted ones that the kernel holds and the record does not: an
	// operator's, never touched.
	pubRecord map[vip.ServiceKey]bool
	foreign   map[vip.ServiceKey]bool
}

// appliedService is what l4lb holds in the kernel for one virtual service.
type appliedService struct {
	svc   Service
	dests map[netip.AddrPort]*appliedDest
}

type appliedDest struct {
	Destination
	// drainingSince is when the backend left the desired table; zero while
	// it is wanted.
	drainingSince time.Time
	// drainSeq is the sync in which the drain began and connsSeq the sync
	// that last read ActiveConns from the kernel: a drained backend is
	// deleted for having no connections only on a count read after its
	// weight went to 0.
	drainSeq, connsSeq uint64
}

// Stats are the reconciler's counters.
type Stats struct {
	// Ops counts kernel writes by kind ("add_destination", ...).
	Ops map[string]uint64
	// Syncs counts syncs; FullSyncs those that read the kernel back.
	Syncs, FullSyncs uint64
	// FailedSyncs counts syncs that returned an error; FailedOps the kernel
	// writes that failed.
	FailedSyncs, FailedOps uint64
	// LastSync is when the last sync ended and LastSyncDuration how long it
	// took.
	LastSync         time.Time
	LastSyncDuration time.Duration
	// Services and Draining are how many virtual services l4lb holds and
	// how many real servers are draining, after the last sync.
	Services, Draining int
}

// Conns are one real server's connection counts as the kernel reports them.
type Conns struct {
	Active, Inactive uint32
	Weight           uint32
	Draining         bool
	// Traffic is the kernel's counters and rates; nil where the data
	// plane cannot count them (nftables).
	Traffic *Traffic
}

// New opens the kernel (unless cfg.Kernel is given), checks that it has
// IPVS, sets the sysctls and the dummy interface up. It programs nothing
// until Run is running and Update has been called.
func New(cfg Config) (*Reconciler, error) {
	cfg = cfg.withDefaults()
	r := &Reconciler{cfg: cfg, log: cfg.Logger, kernel: cfg.Kernel, applied: map[vip.ServiceKey]*appliedService{}, addrs: map[netip.Addr]bool{}, drainingSvcs: map[vip.ServiceKey]bool{},
		pub: public.NewExpander(cfg.PublicAddrs), foreign: map[vip.ServiceKey]bool{}}
	var err error
	if r.pubRecord, err = readRecord(cfg.PublicRecord); err != nil {
		return nil, err
	}
	if r.kernel == nil {
		k, err := OpenKernel(KernelConfig{Namespace: cfg.Namespace, Interface: cfg.Interface, Timeout: cfg.KernelTimeout, Netlink: cfg.Netlink})
		if err != nil {
			return nil, err
		}
		r.kernel = k
		r.host = &hostSetup{namespace: cfg.Namespace, iface: cfg.Interface, masq: cfg.Masquerade, log: r.log, public: cfg.PublicAddrs}
		if err := r.host.setSysctls(); err != nil {
			k.Close()
			return nil, err
		}
	}
	if err := r.kernel.EnsureInterface(); err != nil {
		r.kernel.Close()
		return nil, fmt.Errorf("dummy interface %s: %w", cfg.Interface, err)
	}
	if r.host != nil {
		if err := r.host.ensureMasquerade(); err != nil {
			r.kernel.Close()
			return nil, err
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

// Run syncs on demand and every ResyncPeriod until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	r.runner.Run(ctx)
	return nil
}

// Update hands over a new desired table. It never blocks; tables that come
// faster than syncs are merged (only the newest is applied). The first sync
// waits for the first Update, so that a restarting agent never applies an
// empty table before it knows the cluster.
func (r *Reconciler) Update(t *vip.Table) {
	if why := r.IPv6Disabled(); why != "" {
		t = withoutIPv6(t, why)
	}
	r.mu.Lock()
	r.desired = t
	r.mu.Unlock()
	r.runner.Trigger()
}

// Resync asks for a full resync: read the kernel back and repair drift.
func (r *Reconciler) Resync() {
	r.mu.Lock()
	r.resyncWanted = true
	r.mu.Unlock()
	r.runner.Trigger()
}

// SyncNow runs one sync on the caller's goroutine, full if full is true.
// Tests and benchmarks use it instead of Run; it must not be called while
// Run is running.
func (r *Reconciler) SyncNow(full bool) error {
	if full {
		r.mu.Lock()
		r.resyncWanted = true
		r.mu.Unlock()
	}
	return r.sync()
}

// Programmed returns the VIPs of the desired table that the kernel holds, as
// last applied: what DNS may answer. Nil before the first sync.
func (r *Reconciler) Programmed() *vip.Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.programmed
}

// Stats returns a copy of the counters.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Ops = map[string]uint64{}
	for k, n := range r.opCounts {
		s.Ops[OpKind(k).String()] = n
	}
	return s
}

// Connections reads, now, the connection counts of every real server of
// every service l4lb holds. A service whose real servers cannot be read is
// left out, and the failure logged.
func (r *Reconciler) Connections() map[vip.ServiceKey]map[netip.AddrPort]Conns {
	r.mu.Lock()
	owned := r.owned
	r.mu.Unlock()
	out := make(map[vip.ServiceKey]map[netip.AddrPort]Conns, len(owned))
	for _, s := range owned {
		dests, err := r.kernel.Destinations(s)
		if err != nil {
			r.log.WithFields(logrus.Fields{"vip": s.String(), "reason": err.Error()}).Warn("cannot read connection counts")
			continue
		}
		m := make(map[netip.AddrPort]Conns, len(dests))
		for _, d := range dests {
			m[d.Addr] = Conns{Active: d.ActiveConns, Inactive: d.InactiveConns, Weight: d.Weight, Traffic: &d.Traffic}
		}
		out[s.ServiceKey] = m
	}
	r.mu.Lock()
	for k, m := range out {
		if ds := r.drainingPub[k]; ds != nil {
			for a, c := range m {
				c.Draining = ds[a]
				m[a] = c
			}
		}
	}
	r.mu.Unlock()
	return out
}

// Close releases the kernel handles. With clean, it also removes the owned
// iptables rules (the agent is leaving for good); IPVS services and
// addresses stay either way, so that a restarting agent adopts them without
// cutting a connection.
func (r *Reconciler) Close(clean bool) error {
	var errs []error
	if clean && r.host != nil {
		if err := r.host.removeMasquerade(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.kernel.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sync is one run: read the kernel back when a full resync is due, check
// draining backends, compute the difference and apply it.
func (r *Reconciler) sync() error {
	start := r.cfg.Clock.Now()
	r.mu.Lock()
	desired := r.desired
	full := r.resyncWanted || !r.adopted || start.Sub(r.lastFull) >= r.cfg.ResyncPeriod
	if desired != nil {
		r.resyncWanted = false
	}
	r.mu.Unlock()
	if desired == nil {
		return nil // nothing known yet: touch nothing
	}
	r.seq++
	// The kernel gets the table with the public services; Programmed
	// reports the table as handed over.
	input := desired
	desired = r.pub.Expand(desired)

	var errs []error
	if full {
		if err := r.readKernel(desired, start); err != nil {
			r.finish(start, true, 0, err)
			return err
		}
	}
	if err := r.readDraining(start, full); err != nil {
		errs = append(errs, err)
	}
	ops, planned := r.plan(desired, start, full || r.replanAll)
	failed := 0
	servicesChanged := full
	if err := r.recordAdds(ops); err != nil {
		// Without the record a restarted agent would not know them as
		// its own: add no public service this time.
		errs = append(errs, err)
		ops = slices.DeleteFunc(ops, func(op Op) bool { return op.Kind == AddService && r.pub.IsPublic(op.Service.Addr) })
		failed++
	}
	if len(ops) > 0 {
		results := r.kernel.Apply(ops)
		for i, op := range ops {
			if err := results[i]; err != nil {
				failed++
				errs = append(errs, err)
				r.log.WithFields(logrus.Fields{"vip": keyString(op.Service.ServiceKey), "backend": backendField(op), "reason": err.Error()}).Warn("kernel write failed; will retry")
				continue
			}
			if op.Kind == AddService || op.Kind == DeleteService {
				servicesChanged = true
			}
			r.record(op, start)
		}
		r.mu.Lock()
		for _, op := range ops {
			r.opCounts[op.Kind]++
		}
		r.mu.Unlock()
	}
	if full || r.replanAll {
		r.drainingSvcs = map[vip.ServiceKey]bool{}
	}
	for _, k := range planned {
		if as := r.applied[k]; as != nil && as.hasDraining() {
			r.drainingSvcs[k] = true
		} else {
			delete(r.drainingSvcs, k)
		}
	}
	if err := r.recordDeletes(); err != nil {
		errs = append(errs, err)
	}
	r.prev = desired
	r.replanAll = failed > 0
	r.publish(input, servicesChanged)
	if len(r.drainingSvcs) > 0 {
		r.runner.TriggerAfter(r.cfg.DrainCheckInterval)
	}
	err := errors.Join(errs...)
	r.finish(start, full, failed, err)
	return err
}

func backendField(op Op) string {
	if op.Destination.Addr.IsValid() {
		return op.Destination.Addr.String()
	}
	return ""
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

// readKernel replaces what the reconciler believes it applied with what the
// kernel holds: the dummy interface's addresses, and every service that
// l4lb owns (its address is on the dummy interface, or it is desired) with
// its real servers. Draining marks of real servers still present are kept.
func (r *Reconciler) readKernel(desired *vip.Table, now time.Time) error {
	if err := r.kernel.EnsureInterface(); err != nil {
		return fmt.Errorf("full resync: dummy interface %s: %w", r.cfg.Interface, err)
	}
	addrs, err := r.kernel.Addresses()
	if err != nil {
		return fmt.Errorf("full resync: %w", err)
	}
	svcs, err := r.kernel.Services()
	if err != nil {
		return fmt.Errorf("full resync: list virtual services: %w", err)
	}
	wanted := make(map[vip.ServiceKey]bool, len(desired.VIPs))
	for i := range desired.VIPs {
		wanted[desired.VIPs[i].ServiceKey] = true
	}
	onDummy := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		onDummy[a] = true
	}
	applied := make(map[vip.ServiceKey]*appliedService, len(svcs))
	var errs []error
	foreign := map[vip.ServiceKey]bool{}
	for _, s := range svcs {
		switch {
		case r.pub.IsPublic(s.Addr) && !onDummy[s.Addr]:
			// A node address: l4lb's only if it created the service.
			if !r.pubRecord[s.ServiceKey] {
				if wanted[s.ServiceKey] {
					foreign[s.ServiceKey] = true
					if !r.foreign[s.ServiceKey] {
						r.log.WithFields(logrus.Fields{"vip": keyString(s.ServiceKey), "reason": "the kernel holds a virtual service there that l4lb did not create"}).Warn("public service left out: an operator's service holds its address and port")
					}
				}
				continue
			}
		case r.pubRecord[s.ServiceKey]:
			// Created at a public address the node no longer has: still
			// l4lb's, removed as it is not wanted.
		case !onDummy[s.Addr] && !wanted[s.ServiceKey]:
			continue // not l4lb's: never touched
		}
		dests, err := r.kernel.Destinations(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("full resync: list real servers of %s: %w", s, err))
			continue
		}
		as := &appliedService{svc: s, dests: make(map[netip.AddrPort]*appliedDest, len(dests))}
		old := r.applied[s.ServiceKey]
		for _, d := range dests {
			ad := &appliedDest{Destination: d, connsSeq: r.seq}
			if old != nil {
				if od := old.dests[d.Addr]; od != nil {
					ad.drainingSince, ad.drainSeq = od.drainingSince, od.drainSeq
				}
			}
			as.dests[d.Addr] = ad
		}
		applied[s.ServiceKey] = as
	}
	if len(errs) > 0 {
		// Keep the old belief for what could not be read.
		for k, as := range r.applied {
			if _, ok := applied[k]; !ok && wanted[k] {
				applied[k] = as
			}
		}
	}
	r.applied = applied
	r.foreign = foreign
	r.addrs = onDummy
	r.adopted = true
	r.lastFull = now
	return errors.Join(errs...)
}

// readDraining reads the connection counts of services with draining TCP
// backends, at most once per DrainCheckInterval (a full resync has just
// read them).
func (r *Reconciler) readDraining(now time.Time, full bool) error {
	if full {
		r.lastDrain = now
		return nil
	}
	if now.Sub(r.lastDrain) < r.cfg.DrainCheckInterval {
		return nil
	}
	var errs []error
	read := false
	for k := range r.drainingSvcs {
		as := r.applied[k]
		if as == nil || !as.hasDraining() {
			continue
		}
		read = true
		dests, err := r.kernel.Destinations(as.svc)
		if err != nil {
			errs = append(errs, fmt.Errorf("read connections of draining real servers of %s: %w", as.svc, err))
			continue
		}
		for _, d := range dests {
			if ad := as.dests[d.Addr]; ad != nil {
				ad.ActiveConns, ad.InactiveConns, ad.connsSeq = d.ActiveConns, d.InactiveConns, r.seq
			}
		}
	}
	if read {
		r.lastDrain = now
	}
	return errors.Join(errs...)
}

func (as *appliedService) hasDraining() bool {
	for _, d := range as.dests {
		if !d.drainingSince.IsZero() {
			return true
		}
	}
	return false
}

// record updates the belief after a successful write.
func (r *Reconciler) record(op Op, now time.Time) {
	key := op.Service.ServiceKey
	switch op.Kind {
	case AddAddress:
		r.addrs[op.Addr] = true
	case DeleteAddress:
		delete(r.addrs, op.Addr)
	case AddService, UpdateService:
		as := r.applied[key]
		if as == nil {
			as = &appliedService{dests: map[netip.AddrPort]*appliedDest{}}
			r.applied[key] = as
		}
		as.svc = op.Service
	case DeleteService:
		delete(r.applied, key)
	case AddDestination, UpdateDestination:
		as := r.applied[key]
		if as == nil {
			return
		}
		ad := as.dests[op.Destination.Addr]
		if ad == nil {
			ad = &appliedDest{}
			as.dests[op.Destination.Addr] = ad
		}
		conns := [2]uint32{ad.ActiveConns, ad.InactiveConns}
		ad.Destination = op.Destination
		ad.ActiveConns, ad.InactiveConns = conns[0], conns[1]
		if op.drain {
			if ad.drainingSince.IsZero() {
				ad.drainingSince, ad.drainSeq = now, r.seq
			}
		} else {
			ad.drainingSince, ad.drainSeq = time.Time{}, 0
		}
	case DeleteDestination:
		if as := r.applied[key]; as != nil {
			delete(as.dests, op.Destination.Addr)
		}
	}
}

// publish computes what other goroutines may read: the programmed table,
// the owned services (when the set of services changed), the draining
// backends; and calls OnProgrammed when the programmed table changed. When
// every write succeeded, the programmed table is the desired one itself.
func (r *Reconciler) publish(desired *vip.Table, servicesChanged bool) {
	prog := desired
	if r.replanAll {
		prog = &vip.Table{Errors: desired.Errors}
		for i := range desired.VIPs {
			v := &desired.VIPs[i]
			if r.applied[v.ServiceKey] != nil && r.addrs[v.Addr] {
				prog.VIPs = append(prog.VIPs, *v)
			}
		}
	}
	var owned []Service
	if servicesChanged || r.owned == nil {
		owned = make([]Service, 0, len(r.applied))
		for _, as := range r.applied {
			owned = append(owned, as.svc)
		}
	}
	draining := make(map[vip.ServiceKey]map[netip.AddrPort]bool, len(r.drainingSvcs))
	nDraining := 0
	for k := range r.drainingSvcs {
		for a, d := range r.applied[k].dests {
			if !d.drainingSince.IsZero() {
				if draining[k] == nil {
					draining[k] = map[netip.AddrPort]bool{}
				}
				draining[k][a] = true
				nDraining++
			}
		}
	}
	r.mu.Lock()
	changed := r.programmed != prog
	r.programmed = prog
	if owned != nil {
		r.owned = owned
		r.stats.Services = len(owned)
	}
	r.drainingPub = draining
	r.stats.Draining = nDraining
	r.mu.Unlock()
	if changed && r.cfg.OnProgrammed != nil {
		r.cfg.OnProgrammed(prog)
	}
}
