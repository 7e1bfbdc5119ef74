package nftables

import (
	"fmt"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/vip"
)

func be(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 80)
}

// checkSlots asserts that next gives every backend exactly want[b] slots,
// with no hole.
func checkSlots(t *testing.T, next []netip.AddrPort, want map[netip.AddrPort]int) {
	t.Helper()
	got := map[netip.AddrPort]int{}
	for i, b := range next {
		if !b.IsValid() {
			t.Fatalf("hole at slot %d", i)
		}
		got[b]++
	}
	for b, n := range want {
		if got[b] != n {
			t.Fatalf("backend %s has %d slots, want %d (%v)", b, got[b], n, next)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("slots %v hold backends not wanted %v", next, want)
	}
}

func TestAssignSlotsMovesLittle(t *testing.T) {
	ten := map[netip.AddrPort]int{}
	var cur []netip.AddrPort
	for i := range 10 {
		ten[be(i)] = 1
		cur = append(cur, be(i))
	}
	cases := []struct {
		name    string
		change  func(map[netip.AddrPort]int)
		maxEdit int // deleted + added elements
	}{
		{"add one backend", func(m map[netip.AddrPort]int) { m[be(10)] = 1 }, 1},
		{"remove the last slot's backend", func(m map[netip.AddrPort]int) { delete(m, be(9)) }, 1},
		{"remove a middle backend", func(m map[netip.AddrPort]int) { delete(m, be(3)) }, 3},
		{"weight 1 to 3", func(m map[netip.AddrPort]int) { m[be(5)] = 3 }, 2},
		{"unchanged", func(m map[netip.AddrPort]int) {}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := map[netip.AddrPort]int{}
			for k, v := range ten {
				want[k] = v
			}
			c.change(want)
			next := assignSlots(cur, want)
			checkSlots(t, next, want)
			del, add := slotChanges(cur, next)
			if len(del)+len(add) != c.maxEdit {
				t.Errorf("%d deletes + %d adds, want %d in all", len(del), len(add), c.maxEdit)
			}
		})
	}
}

// TestAssignSlotsProperty: from any slot table (holes included), the result
// holds exactly the wanted counts, and a second assignment changes nothing.
func TestAssignSlotsProperty(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for iter := range 2000 {
		var cur []netip.AddrPort
		for range rng.Intn(20) {
			if rng.Intn(5) == 0 {
				cur = append(cur, netip.AddrPort{})
			} else {
				cur = append(cur, be(rng.Intn(8)))
			}
		}
		want := map[netip.AddrPort]int{}
		for range rng.Intn(8) {
			want[be(rng.Intn(10))] = 1 + rng.Intn(4)
		}
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			next := assignSlots(cur, want)
			checkSlots(t, next, want)
			again := assignSlots(next, want)
			if d, a := slotChanges(next, again); len(d)+len(a) != 0 {
				t.Fatalf("second assignment moved slots: %v -> %v", next, again)
			}
		})
	}
}

func TestNamesRoundTrip(t *testing.T) {
	for _, s := range []string{"11.0.0.1", "fd01:c::1", "::ffff:1.2.3.4"} {
		for _, p := range []string{"tcp", "udp"} {
			k := keyFor(s, p, 8080)
			got, ok := keyOfChain(nameOf(k).chain)
			if !ok || got != k {
				t.Errorf("%v: chain %q parsed as %v %v", k, nameOf(k).chain, got, ok)
			}
			if got, ok := keyOfServiceBytes(serviceKeyBytes(k)); !ok || got != k {
				t.Errorf("%v: service key bytes parsed as %v %v", k, got, ok)
			}
		}
	}
	for _, a := range []string{"10.0.0.1:80", "[fd00::2]:443"} {
		b := netip.MustParseAddrPort(a)
		if got, ok := backendOfBytes(backendBytes(b)); !ok || got != b {
			t.Errorf("%v parsed as %v", b, got)
		}
	}
}

func keyFor(addr, proto string, port uint16) vip.ServiceKey {
	return vip.ServiceKey{Addr: netip.MustParseAddr(addr), Port: port, Protocol: vip.Protocol(proto)}
}
