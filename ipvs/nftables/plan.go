package nftables

import (
	"net/netip"
	"slices"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/vip"
)

// plan returns the writes that take what is applied to what is desired for
// the services in keys (and the table's own objects), in the order one
// transaction needs them: the table's objects, then each service's. Equal
// objects produce no write; a VIP whose scheduler has no equivalent is
// refused (recorded in r.refused, and removed if it was programmed).
func (r *Reconciler) plan(desired *vip.Table, keys []vip.ServiceKey) []Op {
	ops := r.planBase()
	for _, k := range keys {
		v := findVIP(desired, k)
		if v != nil && !v.Addr.IsValid() {
			v = nil
		}
		if v != nil {
			mode, weighted, err := modeOf(v.Scheduler)
			if err != nil {
				if r.refused[k] != err.Error() {
					r.log.WithFields(logrus.Fields{"vip": keyString(k), "reason": err.Error()}).Warn("VIP refused: not programmed, DNS will not answer it")
				}
				r.refused[k] = err.Error()
				v = nil
			} else {
				delete(r.refused, k)
				ops = r.planService(ops, k, v, mode, weighted)
				continue
			}
		} else {
			delete(r.refused, k)
		}
		if as := r.applied[k]; as != nil {
			ops = planDelete(ops, k, as)
		}
	}
	return ops
}

// planBase appends the writes that put the table's own objects in place:
// the table, the two services maps, the three base chains and their rules.
func (r *Reconciler) planBase() []Op {
	b := &r.base
	var ops []Op
	if !b.table {
		ops = append(ops, Op{Kind: AddTable})
	}
	for _, v6 := range []bool{false, true} {
		if s := servicesSet(v6); !b.sets[s.Name] {
			ops = append(ops, Op{Kind: AddSet, Set: s})
		}
	}
	type base struct {
		name  string
		hook  Hook
		rules []Rule
	}
	bases := []base{
		{chainPrerouting, Hook{Num: unix.NF_INET_PRE_ROUTING, Priority: priorityDstNAT}, []Rule{dispatchRule(chainPrerouting, false), dispatchRule(chainPrerouting, true)}},
		{chainOutput, Hook{Num: unix.NF_INET_LOCAL_OUT, Priority: priorityDstNAT}, []Rule{dispatchRule(chainOutput, false), dispatchRule(chainOutput, true)}},
		{chainPostrouting, Hook{Num: unix.NF_INET_POST_ROUTING, Priority: prioritySrcNAT}, []Rule{masqRule(r.cfg.MasqueradeMark)}},
	}
	for _, c := range bases {
		if !b.chains[c.name] {
			ops = append(ops, Op{Kind: AddChain, Chain: Chain{Name: c.name, Hook: &c.hook}})
		}
		want := make([]string, len(c.rules))
		for i, rule := range c.rules {
			want[i] = rule.Comment
		}
		if slices.Equal(b.rules[c.name], want) {
			continue
		}
		if len(b.rules[c.name]) > 0 {
			ops = append(ops, Op{Kind: FlushChain, Chain: Chain{Name: c.name}})
		}
		for _, rule := range c.rules {
			ops = append(ops, Op{Kind: AddRule, Rule: rule})
		}
	}
	return ops
}

// planService appends the writes for one desired VIP.
func (r *Reconciler) planService(ops []Op, k vip.ServiceKey, v *vip.VIP, mode Mode, weighted bool) []Op {
	n := nameOf(k)
	v6 := k.Addr.Is6()
	as := r.applied[k]
	if as == nil {
		as = &appliedService{}
	}
	counts := slotCounts(v, weighted)
	next := assignSlots(as.slots, counts)
	shape := serviceShape{mode: mode, slots: len(next), persistence: v.Persistence}
	wantRules := shape.comments()
	persistent := v.Persistence > 0

	if !as.chain {
		ops = append(ops, Op{Kind: AddChain, Service: k, Chain: Chain{Name: n.chain}})
	}
	if !as.slotsSet {
		ops = append(ops, Op{Kind: AddSet, Service: k, Set: slotsSet(n, v6)})
	}
	if persistent && !as.liveSet {
		ops = append(ops, Op{Kind: AddSet, Service: k, Set: liveSet(n, v6)})
	}
	// Slots: only the indices that change.
	del, add := slotChanges(as.slots, next)
	if len(del) > 0 {
		els := make([]Element, len(del))
		for i, s := range del {
			els[i] = Element{Key: slotKey(s)}
		}
		ops = append(ops, Op{Kind: DeleteElements, Service: k, Set: Set{Name: n.slots}, Elements: els})
	}
	if len(add) > 0 {
		els := make([]Element, len(add))
		for i, s := range add {
			els[i] = Element{Key: slotKey(s), Data: backendBytes(next[s])}
		}
		ops = append(ops, Op{Kind: AddElements, Service: k, Set: Set{Name: n.slots}, Elements: els})
	}
	// Live set: the backends taking new connections.
	if persistent {
		var dels, adds []Element
		for b := range as.live {
			if counts[b] == 0 {
				dels = append(dels, Element{Key: backendBytes(b)})
			}
		}
		for _, b := range v.Backends {
			if counts[b.Addr] > 0 && !as.live[b.Addr] {
				adds = append(adds, Element{Key: backendBytes(b.Addr)})
			}
		}
		sortElements(dels)
		if len(dels) > 0 {
			ops = append(ops, Op{Kind: DeleteElements, Service: k, Set: Set{Name: n.live}, Elements: dels})
		}
		if len(adds) > 0 {
			ops = append(ops, Op{Kind: AddElements, Service: k, Set: Set{Name: n.live}, Elements: adds})
		}
	}
	// Rules: rewritten whole (flush and add: one or two rules) when their
	// shape or the sets they use change; sets no longer wanted go once no
	// rule uses them.
	if !slices.Equal(as.rules, wantRules) || as.aff != v.Persistence || as.liveSet != persistent {
		if len(as.rules) > 0 {
			ops = append(ops, Op{Kind: FlushChain, Service: k, Chain: Chain{Name: n.chain}})
		}
		if as.aff != 0 && as.aff != v.Persistence {
			ops = append(ops, Op{Kind: DeleteSet, Service: k, Set: Set{Name: n.aff}})
		}
		if as.liveSet && !persistent {
			ops = append(ops, Op{Kind: DeleteSet, Service: k, Set: Set{Name: n.live}})
		}
		if persistent && as.aff != v.Persistence {
			ops = append(ops, Op{Kind: AddSet, Service: k, Set: affSet(n, v6, v.Persistence)})
		}
		for _, rule := range serviceRules(k, shape, r.cfg.MasqueradeMark) {
			ops = append(ops, Op{Kind: AddRule, Service: k, Rule: rule})
		}
	}
	if as.mapGoto != n.chain {
		key := serviceKeyBytes(k)
		if as.mapGoto != "" {
			ops = append(ops, Op{Kind: DeleteElements, Service: k, Set: Set{Name: servicesMap(k.Addr)}, Elements: []Element{{Key: key}}})
		}
		ops = append(ops, Op{Kind: AddElements, Service: k, Set: Set{Name: servicesMap(k.Addr)}, Elements: []Element{{Key: key, Goto: n.chain}}})
	}
	return ops
}

func sortElements(els []Element) {
	slices.SortFunc(els, func(a, b Element) int { return slices.Compare(a.Key, b.Key) })
}

// planDelete appends the writes that remove a service: its services map
// element first (nothing jumps to its chain then), its rules, its sets,
// its chain.
func planDelete(ops []Op, k vip.ServiceKey, as *appliedService) []Op {
	n := nameOf(k)
	if as.mapGoto != "" {
		ops = append(ops, Op{Kind: DeleteElements, Service: k, Set: Set{Name: servicesMap(k.Addr)}, Elements: []Element{{Key: serviceKeyBytes(k)}}})
	}
	if as.chain && len(as.rules) > 0 {
		ops = append(ops, Op{Kind: FlushChain, Service: k, Chain: Chain{Name: n.chain}})
	}
	if as.slotsSet {
		ops = append(ops, Op{Kind: DeleteSet, Service: k, Set: Set{Name: n.slots}})
	}
	if as.aff != 0 {
		ops = append(ops, Op{Kind: DeleteSet, Service: k, Set: Set{Name: n.aff}})
	}
	if as.liveSet {
		ops = append(ops, Op{Kind: DeleteSet, Service: k, Set: Set{Name: n.live}})
	}
	if as.chain {
		ops = append(ops, Op{Kind: DeleteChain, Service: k, Chain: Chain{Name: n.chain}})
	}
	return ops
}

// record updates the belief after a successful transaction.
func (r *Reconciler) record(ops []Op) {
	for _, op := range ops {
		if !op.Service.Addr.IsValid() {
			r.recordBase(op)
			continue
		}
		k := op.Service
		n := nameOf(k)
		as := r.applied[k]
		if as == nil {
			as = &appliedService{}
			r.applied[k] = as
			r.keysChanged = true
		}
		switch op.Kind {
		case AddChain:
			as.chain = true
		case DeleteChain:
			as.chain, as.rules = false, nil
		case FlushChain:
			as.rules = nil
		case AddRule:
			as.rules = append(as.rules, op.Rule.Comment)
		case AddSet:
			switch op.Set.Name {
			case n.slots:
				as.slotsSet = true
			case n.live:
				as.liveSet = true
				if as.live == nil {
					as.live = map[netip.AddrPort]bool{}
				}
			case n.aff:
				as.aff = uint32(op.Set.TimeoutMS / 1000)
			}
		case DeleteSet:
			switch op.Set.Name {
			case n.slots:
				as.slotsSet, as.slots = false, nil
			case n.live:
				as.liveSet, as.live = false, nil
			case n.aff:
				as.aff = 0
			}
		case AddElements, DeleteElements:
			add := op.Kind == AddElements
			switch op.Set.Name {
			case n.slots:
				for _, e := range op.Elements {
					i, _ := slotOfKey(e.Key)
					for len(as.slots) <= i {
						as.slots = append(as.slots, netip.AddrPort{})
					}
					if add {
						as.slots[i], _ = backendOfBytes(e.Data)
					} else {
						as.slots[i] = netip.AddrPort{}
					}
				}
				for len(as.slots) > 0 && !as.slots[len(as.slots)-1].IsValid() {
					as.slots = as.slots[:len(as.slots)-1]
				}
			case n.live:
				for _, e := range op.Elements {
					b, _ := backendOfBytes(e.Key)
					if add {
						as.live[b] = true
					} else {
						delete(as.live, b)
					}
				}
			case mapServices4, mapServices6:
				if add {
					as.mapGoto = op.Elements[0].Goto
				} else {
					as.mapGoto = ""
				}
			}
		}
		if as.empty() {
			delete(r.applied, k)
			r.keysChanged = true
		}
	}
}

func (r *Reconciler) recordBase(op Op) {
	b := &r.base
	if b.chains == nil {
		b.chains, b.rules, b.sets = map[string]bool{}, map[string][]string{}, map[string]bool{}
	}
	switch op.Kind {
	case AddTable:
		b.table = true
	case DeleteTable:
		*b = appliedBase{}
	case AddChain:
		b.chains[op.Chain.Name] = true
	case FlushChain:
		b.rules[op.Chain.Name] = nil
	case AddRule:
		b.rules[op.Rule.Chain] = append(b.rules[op.Rule.Chain], op.Rule.Comment)
	case AddSet:
		b.sets[op.Set.Name] = true
	}
}
