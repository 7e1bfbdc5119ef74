package agent

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/sirupsen/logrus"
)

// Returning memory to the OS after a burst. Go's collector lets the heap
// grow to twice what survives a collection before the next one, and its
// scavenger keeps about that much mapped: an agent that took 100,000
// registrations keeps, for good, as much memory again as it holds, though
// it does nothing with it once the burst is over. trimMemory watches the
// allocation rate; once the agent has been idle for a whole period after
// allocating trimAfter or more since the last trim, it collects and returns
// the free pages (debug.FreeOSMemory), once per burst. The next burst maps
// what it needs again.
const (
	trimEvery = 10 * time.Second
	trimAfter = 64 << 20 // bytes allocated since the last trim
	trimIdle  = 1 << 20  // bytes allocated in a period still called idle
)

// memTrimmer decides when to trim; read and free are runtime's (tests
// replace them to check the decision alone).
type memTrimmer struct {
	read func() uint64 // bytes allocated since the process started
	free func()
	log  *logrus.Entry

	last      uint64 // read at the previous tick
	sinceTrim uint64 // allocated since the last trim
	started   bool
}

func newMemTrimmer(log *logrus.Entry) *memTrimmer {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	return &memTrimmer{
		read: func() uint64 {
			metrics.Read(sample[:1])
			return sample[0].Value.Uint64()
		},
		free: func() {
			start := time.Now()
			metrics.Read(sample[1:])
			before := sample[1].Value.Uint64()
			debug.FreeOSMemory()
			metrics.Read(sample[1:])
			log.WithFields(logrus.Fields{"released_mib": (sample[1].Value.Uint64() - before) >> 20, "took": time.Since(start).Round(time.Millisecond)}).
				Debug("idle after a burst: returned the heap's free pages to the OS")
		},
		log: log,
	}
}

// tick is one period: it trims when the period was idle after a burst,
// and says whether it did.
func (t *memTrimmer) tick() bool {
	now := t.read()
	if !t.started {
		t.last, t.started = now, true
		return false
	}
	d := now - t.last
	t.last = now
	t.sinceTrim += d
	if d > trimIdle || t.sinceTrim < trimAfter {
		return false
	}
	t.free()
	t.sinceTrim = 0
	t.last = t.read()
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
