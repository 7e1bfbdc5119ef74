package ipvs

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

var _ Interface = (*Fake)(nil)

// Fake is an in-memory Interface for tests where the kernel is beside the
// point. It answers as the kernel does (EEXIST, ESRCH, ENOENT, with the same
// idempotent handling as Kernel), counts every call, and lets tests change
// its tables behind the reconciler's back.
type Fake struct {
	mu       sync.Mutex // guards every field below
	up       bool
	addrs    map[netip.Addr]bool
	services map[vip.ServiceKey]*fakeService
	writes   [numOpKinds]int
	reads    int
	// failures maps an op's text (Op.String()) to the error Apply returns
	// for it, once.
	failures map[string]error
}

type fakeService struct {
	svc   Service
	dests map[netip.AddrPort]Destination
}

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{addrs: map[netip.Addr]bool{}, services: map[vip.ServiceKey]*fakeService{}, failures: map[string]error{}}
}

// EnsureInterface records that the interface is up.
func (f *Fake) EnsureInterface() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = true
	return nil
}

// Addresses lists the fake interface's addresses, sorted.
func (f *Fake) Addresses() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := make([]netip.Addr, 0, len(f.addrs))
	for a := range f.addrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

// Services lists the fake's services, sorted by key.
func (f *Fake) Services() ([]Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := make([]Service, 0, len(f.services))
	for _, s := range f.services {
		out = append(out, s.svc)
	}
	sort.Slice(out, func(i, j int) bool { return vip.CompareServiceKeys(out[i].ServiceKey, out[j].ServiceKey) < 0 })
	return out, nil
}

// Destinations lists a service's real servers, sorted by address.
func (f *Fake) Destinations(s Service) ([]Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	fs, ok := f.services[s.ServiceKey]
	if !ok {
		return nil, fmt.Errorf("list real servers of %s: %w", s, unix.ESRCH)
	}
	out := make([]Destination, 0, len(fs.dests))
	for _, d := range fs.dests {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Compare(out[j].Addr) < 0 })
	return out, nil
}

// Apply applies ops in order, as Kernel does.
func (f *Fake) Apply(ops []Op) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(ops))
	for i, op := range ops {
		err := f.apply(op)
		if err != nil {
			if retry, ok := idempotent(op, err); ok {
				err = nil
			} else if retry != nil {
				err = f.apply(*retry)
			}
		}
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", op, err)
		}
	}
	return errs
}

func (f *Fake) apply(op Op) error {
	f.writes[op.Kind]++
	if len(f.failures) > 0 {
		if err, ok := f.failures[op.String()]; ok {
			delete(f.failures, op.String())
			return err
		}
	}
	key := op.Service.ServiceKey
	fs := f.services[key]
	switch op.Kind {
	case AddService:
		if fs != nil {
			return unix.EEXIST
		}
		f.services[key] = &fakeService{svc: op.Service, dests: map[netip.AddrPort]Destination{}}
	case UpdateService:
		if fs == nil {
			return unix.ESRCH
		}
		fs.svc = op.Service
	case DeleteService:
		if fs == nil {
			return unix.ESRCH
		}
		delete(f.services, key)
	case AddDestination, UpdateDestination, DeleteDestination:
		if fs == nil {
			return unix.ESRCH
		}
		d, exists := fs.dests[op.Destination.Addr]
		switch op.Kind {
		case AddDestination:
			if exists {
				return unix.EEXIST
			}
			d = op.Destination
			d.ActiveConns, d.InactiveConns = 0, 0
		case UpdateDestination:
			if !exists {
				return unix.ENOENT
			}
			d.Weight, d.Forward = op.Destination.Weight, op.Destination.Forward
		case DeleteDestination:
			if !exists {
				return unix.ENOENT
			}
			delete(fs.dests, op.Destination.Addr)
			return nil
		}
		fs.dests[d.Addr] = d
	case AddAddress:
		if f.addrs[op.Addr] {
			return unix.EEXIST
		}
		f.addrs[op.Addr] = true
	case DeleteAddress:
		if !f.addrs[op.Addr] {
			return unix.EADDRNOTAVAIL
		}
		delete(f.addrs, op.Addr)
	default:
		return fmt.Errorf("unknown op kind %d", op.Kind)
	}
	return nil
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// Writes returns how many kernel writes of each kind Apply made (retries of
// idempotent ops included), and ResetCounts zeroes the counters.
func (f *Fake) Writes() map[OpKind]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[OpKind]int{}
	for k, n := range f.writes {
		if n > 0 {
			out[OpKind(k)] = n
		}
	}
	return out
}

// TotalWrites is the sum of Writes.
func (f *Fake) TotalWrites() int {
	n := 0
	for _, c := range f.Writes() {
		n += c
	}
	return n
}

// Reads is how many list calls were made.
func (f *Fake) Reads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// ResetCounts zeroes the write and read counters.
func (f *Fake) ResetCounts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = [numOpKinds]int{}
	f.reads = 0
}

// FailOnce makes the next Apply of an op whose text is op.String() fail
// with err.
func (f *Fake) FailOnce(op Op, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[op.String()] = err
}

// Tamper changes the fake's tables behind the reconciler's back, as an
// operator's ipvsadm would; it is not counted.
func (f *Fake) Tamper(ops ...Op) {
	f.mu.Lock()
	defer f.mu.Unlock()
	saved := f.writes
	for _, op := range ops {
		_ = f.apply(op)
	}
	f.writes = saved
}

// Flush removes every service, as `ipvsadm -C` does.
func (f *Fake) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services = map[vip.ServiceKey]*fakeService{}
}

// SetConns sets a real server's connection counts, as traffic would.
func (f *Fake) SetConns(k vip.ServiceKey, backend netip.AddrPort, active, inactive uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fs := f.services[k]; fs != nil {
		if d, ok := fs.dests[backend]; ok {
			d.ActiveConns, d.InactiveConns = active, inactive
			fs.dests[backend] = d
		}
	}
}
