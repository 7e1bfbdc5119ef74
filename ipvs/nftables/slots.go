package nftables

import (
	"net/netip"
	"sort"
)

// assignSlots returns the slot table that gives each backend want[b] slots,
// moving as few slots as it can from cur (index -> backend; an invalid
// AddrPort is a hole). Slots a backend keeps stay where they are; slots at
// or past the new size that are kept move into the holes below it; new
// slots fill the remaining holes. So adding or removing one backend of
// weight w changes O(w) slots, whatever the number of backends.
func assignSlots(cur []netip.AddrPort, want map[netip.AddrPort]int) []netip.AddrPort {
	total := 0
	for _, n := range want {
		total += n
	}
	next := make([]netip.AddrPort, total)
	kept := make(map[netip.AddrPort]int, len(want))
	var movers []netip.AddrPort
	for i, b := range cur {
		if !b.IsValid() || kept[b] >= want[b] {
			continue
		}
		kept[b]++
		if i < total {
			next[i] = b
		} else {
			movers = append(movers, b)
		}
	}
	// Backends short of slots, in a stable order.
	var short []netip.AddrPort
	for b, n := range want {
		if kept[b] < n {
			short = append(short, b)
		}
	}
	sort.Slice(short, func(i, j int) bool { return short[i].Compare(short[j]) < 0 })
	fill := movers
	for _, b := range short {
		for n := want[b] - kept[b]; n > 0; n-- {
			fill = append(fill, b)
		}
	}
	j := 0
	for i := range next {
		if !next[i].IsValid() {
			next[i] = fill[j]
			j++
		}
	}
	return next
}

// slotChanges returns the slot indices to delete and the (index, backend)
// pairs to add to go from cur to next.
func slotChanges(cur, next []netip.AddrPort) (del []int, add []int) {
	for i := range max(len(cur), len(next)) {
		var c, n netip.AddrPort
		if i < len(cur) {
			c = cur[i]
		}
		if i < len(next) {
			n = next[i]
		}
		if c == n {
			continue
		}
		if c.IsValid() {
			del = append(del, i)
		}
		if n.IsValid() {
			add = append(add, i)
		}
	}
	return del, add
}
