package agent

import (
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestMemTrimmerDecides: a trim only in a quiet period (little allocated
// for the heap's size) when a collection would free enough (at least 64
// MiB and half the live heap); not while busy, not when little is free.
func TestMemTrimmerDecides(t *testing.T) {
	const mib = 1 << 20
	h := heapReading{live: 200 * mib, objects: 200 * mib}
	trims := 0
	m := &memTrimmer{read: func() heapReading { return h }, free: func() { trims++; h.free, h.objects = 0, h.live }}
	step := func(what string, alloc, garbage, free uint64, want bool) {
		t.Helper()
		h.allocs += alloc
		h.objects += garbage
		h.free += free
		before := trims
		if got := m.tick(); got != want || trims-before != map[bool]int{true: 1}[want] {
			t.Fatalf("%s: trimmed %v (%d calls), want %v", what, got, trims-before, want)
		}
	}
	step("first reading", 0, 0, 0, false)
	step("busy: 300 MiB allocated, 150 of it garbage", 300*mib, 150*mib, 0, false)
	step("busy: a collection freed 180 MiB", 300*mib, 0, 180*mib, false)
	step("quiet: 10 MiB allocated, 340 MiB reclaimable", 10*mib, 10*mib, 0, true)
	step("quiet, nothing to reclaim", 1*mib, 1*mib, 0, false)
	step("quiet, a scrape's garbage: 23 MiB", 23*mib, 23*mib, 0, false)
	step("quiet, 46 MiB reclaimable (less than half the live heap)", 23*mib, 23*mib, 0, false)
	step("quiet, 92 MiB (still less than 100)", 23*mib, 23*mib, 23*mib, false)
	step("quiet, 115 MiB reclaimable", 23*mib, 23*mib, 0, true)
	h.live, h.objects = 20*mib, 20*mib
	step("a small heap: 30 MiB reclaimable (less than 64)", 1*mib, 30*mib, 0, false)
	step("a small heap: 70 MiB reclaimable, 3 MiB allocated", 3*mib, 40*mib, 0, true)
}

// TestMemTrimmerReturnsMemory: with the runtime's own readings, garbage
// left by a burst is returned to the OS in the next quiet period.
func TestMemTrimmerReturnsMemory(t *testing.T) {
	m := newMemTrimmer(logrus.NewEntry(logrus.New()))
	// What the agent holds: 100 MiB alive through the test, so that the
	// collector lets the heap grow to about twice that.
	held := make([][]byte, 100)
	for i := range held {
		held[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	// A burst: 90 MiB of short-lived buffers, 8 MiB alive at a time.
	var window [8][]byte
	for i := range 90 {
		window[i%8] = make([]byte, 1<<20)
		window[i%8][0] = byte(i)
	}
	window = [8][]byte{}
	m.tick() // the first reading, after the burst
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := released()
	if !m.tick() {
		t.Fatalf("no trim in the quiet period after a 160 MiB burst (%+v)", m.read())
	}
	if got := released() - before; got < 64<<20 {
		t.Errorf("the trim returned %d MiB to the OS, want at least 64", got>>20)
	}
	runtime.KeepAlive(held)
}
