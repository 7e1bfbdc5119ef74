package agent

import (
	"runtime/metrics"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestMemTrimmerDecides: no trim while the agent allocates, none after
// an idle period without a burst before it, one after the first idle
// period that follows a burst, and not again until the next burst.
func TestMemTrimmerDecides(t *testing.T) {
	var allocated uint64
	trims := 0
	m := &memTrimmer{read: func() uint64 { return allocated }, free: func() { trims++ }, log: logrus.NewEntry(logrus.New())}
	step := func(alloc uint64, wantTrim bool) {
		t.Helper()
		allocated += alloc
		before := trims
		if got := m.tick(); got != wantTrim || trims-before != map[bool]int{true: 1}[wantTrim] {
			t.Fatalf("after allocating %d: trimmed %v (%d calls), want %v", alloc, got, trims-before, wantTrim)
		}
	}
	step(0, false)           // the first reading
	step(trimIdle/2, false)  // idle, but no burst yet
	step(40<<20, false)      // a burst begins
	step(40<<20, false)      // still busy (past trimAfter now)
	step(trimIdle/2, true)   // idle after the burst
	step(0, false)           // idle, nothing new
	step(trimIdle/2, false)  // idle
	step(trimAfter+1, false) // the next burst
	step(0, true)            // idle after it
}

// TestMemTrimmerReturnsMemory: with the runtime's own readings, a burst of
// garbage followed by an idle period is returned to the OS.
func TestMemTrimmerReturnsMemory(t *testing.T) {
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	m := newMemTrimmer(logrus.NewEntry(logrus.New()))
	m.tick()
	var keep [][]byte
	for range 160 {
		keep = append(keep, make([]byte, 1<<20))
	}
	for _, b := range keep {
		b[0] = 1
	}
	keep = nil
	m.tick() // the burst
	before := released()
	if !m.tick() {
		t.Fatal("no trim in the idle period after a 160 MiB burst")
	}
	if got := released() - before; got < 64<<20 {
		t.Errorf("the trim returned %d MiB to the OS, want at least 64", got>>20)
	}
}
