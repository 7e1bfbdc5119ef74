package nftables

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var _ Interface = (*Fake)(nil)

// Fake is an in-memory table inet l4lb for tests where the kernel is beside
// the point. Transactions are atomic and fail as the kernel's do (ENOENT
// for what is missing, EEXIST for an element whose data differs or a set
// redefined, EBUSY for a chain or set still in use), and it counts them.
type Fake struct {
	mu    sync.Mutex // guards every field below
	rs    *Ruleset
	tx    int
	elems int
	reads int
	// fail makes every op it matches fail with failErrno.
	fail      func(Op) bool
	failErrno unix.Errno
}

// Fail makes every op that match returns true for fail with errno (and so
// its whole transaction), until Fail(nil, 0).
func (f *Fake) Fail(match func(Op) bool, errno unix.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail, f.failErrno = match, errno
}

// NewFake returns a Fake without the table.
func NewFake() *Fake { return &Fake{rs: emptyRuleset()} }

func emptyRuleset() *Ruleset {
	return &Ruleset{Chains: map[string]bool{}, Rules: map[string][]string{}, Sets: map[string]Set{}, Elements: map[string][]Element{}}
}

func cloneRuleset(rs *Ruleset) *Ruleset {
	c := emptyRuleset()
	c.Exists = rs.Exists
	for k, v := range rs.Chains {
		c.Chains[k] = v
	}
	for k, v := range rs.Rules {
		c.Rules[k] = slices.Clone(v)
	}
	for k, v := range rs.Sets {
		c.Sets[k] = v
	}
	for k, v := range rs.Elements {
		c.Elements[k] = slices.Clone(v)
	}
	return c
}

// Apply applies ops atomically.
func (f *Fake) Apply(ops []Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tx++
	work := cloneRuleset(f.rs)
	for i, op := range ops {
		f.elems += len(op.Elements)
		if f.fail != nil && f.fail(op) {
			return fmt.Errorf("%s: %w", op, &TxError{Index: i, Errno: f.failErrno})
		}
		if err := fakeApply(work, op); err != 0 {
			return fmt.Errorf("%s: %w", op, &TxError{Index: i, Errno: err})
		}
	}
	f.rs = work
	return nil
}

func setsUsed(r Rule) []string {
	var out []string
	for _, e := range r.Exprs {
		switch x := e.(type) {
		case *expr.Lookup:
			out = append(out, x.SetName)
		case *expr.Dynset:
			out = append(out, x.SetName)
		}
	}
	return out
}

// fakeUsesPrefix keys, in Rules, the sets each chain's rules use (for
// EBUSY); Read leaves those keys out.
const fakeUsesPrefix = "\x00uses:"

func fakeApply(rs *Ruleset, op Op) unix.Errno {
	needTable := op.Kind != AddTable && op.Kind != DeleteTable
	if needTable && !rs.Exists {
		return unix.ENOENT
	}
	switch op.Kind {
	case AddTable:
		rs.Exists = true
	case DeleteTable:
		if !rs.Exists {
			return unix.ENOENT
		}
		*rs = *emptyRuleset()
	case AddChain:
		rs.Chains[op.Chain.Name] = true
	case DeleteChain:
		if !rs.Chains[op.Chain.Name] {
			return unix.ENOENT
		}
		if len(rs.Rules[op.Chain.Name]) > 0 {
			return unix.EBUSY
		}
		for _, els := range rs.Elements {
			for _, e := range els {
				if e.Goto == op.Chain.Name {
					return unix.EBUSY
				}
			}
		}
		delete(rs.Chains, op.Chain.Name)
		delete(rs.Rules, op.Chain.Name)
		delete(rs.Rules, fakeUsesPrefix+op.Chain.Name)
	case FlushChain:
		if !rs.Chains[op.Chain.Name] {
			return unix.ENOENT
		}
		delete(rs.Rules, op.Chain.Name)
		delete(rs.Rules, fakeUsesPrefix+op.Chain.Name)
	case AddRule:
		if !rs.Chains[op.Rule.Chain] {
			return unix.ENOENT
		}
		uses := setsUsed(op.Rule)
		for _, s := range uses {
			if _, ok := rs.Sets[s]; !ok {
				return unix.ENOENT
			}
		}
		rs.Rules[op.Rule.Chain] = append(rs.Rules[op.Rule.Chain], op.Rule.Comment)
		rs.Rules[fakeUsesPrefix+op.Rule.Chain] = append(rs.Rules[fakeUsesPrefix+op.Rule.Chain], uses...)
	case AddSet:
		if old, ok := rs.Sets[op.Set.Name]; ok {
			if old != op.Set {
				return unix.EEXIST
			}
			return 0
		}
		rs.Sets[op.Set.Name] = op.Set
	case DeleteSet:
		if _, ok := rs.Sets[op.Set.Name]; !ok {
			return unix.ENOENT
		}
		for k, uses := range rs.Rules {
			if len(k) > len(fakeUsesPrefix) && k[:len(fakeUsesPrefix)] == fakeUsesPrefix && slices.Contains(uses, op.Set.Name) {
				return unix.EBUSY
			}
		}
		delete(rs.Sets, op.Set.Name)
		delete(rs.Elements, op.Set.Name)
	case AddElements, DeleteElements:
		if _, ok := rs.Sets[op.Set.Name]; !ok {
			return unix.ENOENT
		}
		els := rs.Elements[op.Set.Name]
		for _, e := range op.Elements {
			i := slices.IndexFunc(els, func(x Element) bool { return bytes.Equal(x.Key, e.Key) })
			if op.Kind == DeleteElements {
				if i < 0 {
					return unix.ENOENT
				}
				els = slices.Delete(els, i, i+1)
				continue
			}
			if e.Goto != "" && !rs.Chains[e.Goto] {
				return unix.ENOENT
			}
			if i >= 0 {
				if !bytes.Equal(els[i].Data, e.Data) || els[i].Goto != e.Goto {
					return unix.EEXIST
				}
				continue
			}
			els = append(els, Element{Key: slices.Clone(e.Key), Data: slices.Clone(e.Data), Goto: e.Goto})
		}
		rs.Elements[op.Set.Name] = els
	default:
		return unix.EINVAL
	}
	return 0
}

// Read returns a copy of the table, as Kernel.Read would (no elements of
// the affinity maps: clients write those).
func (f *Fake) Read() (*Ruleset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	c := cloneRuleset(f.rs)
	for k := range c.Rules {
		if len(k) > 0 && k[0] == 0 {
			delete(c.Rules, k)
		}
	}
	for name, s := range c.Sets {
		if s.TimeoutMS > 0 {
			delete(c.Elements, name)
		}
	}
	return c, nil
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// Counts returns the transactions applied (failed ones included), the
// elements they carried, and the reads.
func (f *Fake) Counts() (tx, elements, reads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tx, f.elems, f.reads
}

// Tamper applies ops behind the reconciler's back, as an operator's nft
// would, uncounted; it ignores failures.
func (f *Fake) Tamper(ops ...Op) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, op := range ops {
		_ = fakeApply(f.rs, op)
	}
}

// FlushTable empties every chain and set, as `nft flush table` does.
func (f *Fake) FlushTable() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.rs.Rules {
		delete(f.rs.Rules, k)
	}
	for k := range f.rs.Elements {
		delete(f.rs.Elements, k)
	}
}

// Canonical renders the table for comparison: chains with their rules'
// comments, sets, and elements; the slot maps as the multiset of backends
// they hold (positions may differ between two equal programs).
func (f *Fake) Canonical() string {
	rs, _ := f.Read()
	var lines []string
	lines = append(lines, fmt.Sprintf("table %v", rs.Exists))
	for c := range rs.Chains {
		lines = append(lines, fmt.Sprintf("chain %s %q", c, rs.Rules[c]))
	}
	for name, s := range rs.Sets {
		lines = append(lines, fmt.Sprintf("set %s %+v", name, s))
		var els []string
		for _, e := range rs.Elements[name] {
			if len(name) > 6 && name[:6] == "slots-" {
				els = append(els, fmt.Sprintf("%x", e.Data))
			} else {
				els = append(els, fmt.Sprintf("%x:%x:%s", e.Key, e.Data, e.Goto))
			}
		}
		sort.Strings(els)
		lines = append(lines, fmt.Sprintf("  %v", els))
	}
	sort.Strings(lines)
	out := ""
	for _, l := range lines {
		out += l + "\n"
	}
	return out
}
