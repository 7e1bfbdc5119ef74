package agent

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/sirupsen/logrus"
)

// Returning memory to the OS when the agent is quiet. Go's collector lets
// the heap grow to twice what survives a collection before the next one,
// and its scavenger keeps about that much mapped: an agent that took
// 100,000 registrations keeps as much memory again as it holds, though it
// does little with it once the burst is over. Every trimEvery, trimMemory
// looks at what a collection would free (free heap pages plus the garbage
// allocated since the last collection); when that is at least
// max(trimMin, live/2) and the agent allocated less than max(trimQuiet,
// live/4) in the period (it is quiet: the heap would take a minute or more
// to reach its goal), it collects and returns the free pages
// (debug.FreeOSMemory).
// A scrape of /metrics every 15 s at 10,000 VIPs allocates about 23 MB; a
// burst of registrations hundreds of MB a second.
const (
	trimEvery = 5 * time.Second
	trimMin   = 64 << 20
	trimQuiet = 4 << 20
)

// heapReading is what a trim decision reads of the runtime.
type heapReading struct {
	allocs  uint64 // bytes allocated since the process started
	live    uint64 // heap bytes that survived the last collection
	objects uint64 // heap bytes in objects now, live or garbage
	free    uint64 // free heap pages not returned to the OS
}

// memTrimmer decides when to trim; read and free are runtime's (tests
// replace them to check the decision alone).
type memTrimmer struct {
	read func() heapReading
	free func()

	last    uint64 // allocs at the previous tick
	started bool
}

var heapSamples = []string{"/gc/heap/allocs:bytes", "/gc/heap/live:bytes", "/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes", "/memory/classes/heap/released:bytes"}

func readHeap() (heapReading, uint64) {
	s := make([]metrics.Sample, len(heapSamples))
	for i, n := range heapSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	return heapReading{allocs: s[0].Value.Uint64(), live: s[1].Value.Uint64(), objects: s[2].Value.Uint64(), free: s[3].Value.Uint64()},
		s[4].Value.Uint64()
}

func newMemTrimmer(log *logrus.Entry) *memTrimmer {
	return &memTrimmer{
		read: func() heapReading { h, _ := readHeap(); return h },
		free: func() {
			start := time.Now()
			_, before := readHeap()
			debug.FreeOSMemory()
			h, after := readHeap()
			log.WithFields(logrus.Fields{"released_mib": (max(after, before) - before) >> 20, "live_mib": h.live >> 20,
				"took": time.Since(start).Round(time.Millisecond)}).
				Debug("quiet: returned the heap's free pages to the OS")
		},
	}
}

// tick is one period: it trims when the agent was quiet and a collection
// would free enough, and says whether it did.
func (t *memTrimmer) tick() bool {
	h := t.read()
	if !t.started {
		t.last, t.started = h.allocs, true
		return false
	}
	allocated := h.allocs - t.last
	t.last = h.allocs
	reclaimable := h.free
	if h.objects > h.live {
		reclaimable += h.objects - h.live
	}
	if allocated >= max(trimQuiet, h.live/4) || reclaimable < max(trimMin, h.live/2) {
		return false
	}
	t.free()
	t.last = t.read().allocs
	return true
}

// trimMemory runs a memTrimmer every trimEvery until ctx is done.
func trimMemory(ctx context.Context, log *logrus.Entry) {
	t := newMemTrimmer(log)
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	t.tick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.tick()
		}
	}
}
