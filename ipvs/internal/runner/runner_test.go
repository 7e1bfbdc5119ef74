package runner

import (
	"context"
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness runs a Runner whose function reports each run's fake time on a
// channel and returns the next error from errs.
type harness struct {
	t     *testing.T
	clock *FakeClock
	r     *Runner
	runs  chan time.Time
	errs  chan error
	gate  chan struct{} // when not nil, each run waits for a value
}

func newHarness(t *testing.T, cfg Config, gated bool) *harness {
	h := &harness{t: t, clock: NewFakeClock(t0), runs: make(chan time.Time, 100), errs: make(chan error, 100)}
	if gated {
		h.gate = make(chan struct{})
	}
	cfg.Clock = h.clock
	h.r = New(func() error {
		h.runs <- h.clock.Now()
		if h.gate != nil {
			<-h.gate
		}
		select {
		case err := <-h.errs:
			return err
		default:
			return nil
		}
	}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.r.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		if h.gate != nil {
			close(h.gate)
		}
		<-done
	})
	return h
}

func (h *harness) expectRun(at time.Time) {
	h.t.Helper()
	select {
	case got := <-h.runs:
		if !got.Equal(at) {
			h.t.Fatalf("run at %v, want at %v", got.Sub(t0), at.Sub(t0))
		}
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no run, want one at %v", at.Sub(t0))
	}
}

func (h *harness) expectNoRun() {
	h.t.Helper()
	select {
	case got := <-h.runs:
		h.t.Fatalf("unexpected run at %v", got.Sub(t0))
	case <-time.After(50 * time.Millisecond):
	}
}

// sleeping waits until the runner sleeps on a timer due at want.
func (h *harness) sleeping(want time.Time) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if at, ok := h.clock.NextDeadline(); ok && at.Equal(want) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	at, ok := h.clock.NextDeadline()
	h.t.Fatalf("runner sleeps until %v (%v), want %v", at.Sub(t0), ok, want.Sub(t0))
}

func TestTriggerRunsAtOnceWithoutMinInterval(t *testing.T) {
	h := newHarness(t, Config{}, false)
	h.expectNoRun()
	h.r.Trigger()
	h.expectRun(t0)
	h.expectNoRun()
}

func TestBurstIsMergedIntoOneRun(t *testing.T) {
	h := newHarness(t, Config{MinInterval: time.Second}, true)
	h.r.Trigger()
	h.expectRun(t0)
	// While the first run is busy, a burst of triggers arrives.
	for i := 0; i < 10; i++ {
		h.r.Trigger()
	}
	h.gate <- struct{}{}
	h.sleeping(t0.Add(time.Second))
	h.expectNoRun()
	h.clock.Step(time.Second)
	h.expectRun(t0.Add(time.Second))
	h.gate <- struct{}{}
	h.expectNoRun()
}

func TestMinIntervalDelaysTriggers(t *testing.T) {
	h := newHarness(t, Config{MinInterval: 100 * time.Millisecond}, false)
	h.r.Trigger()
	h.expectRun(t0)
	h.clock.Step(30 * time.Millisecond)
	h.r.Trigger()
	h.sleeping(t0.Add(100 * time.Millisecond))
	h.clock.Step(69 * time.Millisecond)
	h.expectNoRun()
	h.clock.Step(time.Millisecond)
	h.expectRun(t0.Add(100 * time.Millisecond))
}

func TestMaxIntervalRunsWithoutTrigger(t *testing.T) {
	h := newHarness(t, Config{MaxInterval: 30 * time.Second}, false)
	h.sleeping(t0.Add(30 * time.Second))
	h.clock.Step(30 * time.Second)
	h.expectRun(t0.Add(30 * time.Second))
	h.sleeping(t0.Add(60 * time.Second))
	h.clock.Step(10 * time.Second)
	h.r.Trigger()
	h.expectRun(t0.Add(40 * time.Second))
	// The periodic run is counted from the last run, whatever caused it.
	h.sleeping(t0.Add(70 * time.Second))
}

func TestTriggerAfterEarliestWins(t *testing.T) {
	h := newHarness(t, Config{MaxInterval: time.Minute}, false)
	h.r.TriggerAfter(5 * time.Second)
	h.r.TriggerAfter(2 * time.Second)
	h.r.TriggerAfter(9 * time.Second)
	h.sleeping(t0.Add(2 * time.Second))
	h.clock.Step(2 * time.Second)
	h.expectRun(t0.Add(2 * time.Second))
	h.sleeping(t0.Add(62 * time.Second))
}

func TestFailedRunsRetryWithBackoff(t *testing.T) {
	h := newHarness(t, Config{RetryMin: time.Second, RetryMax: 4 * time.Second, MaxInterval: time.Hour}, false)
	for i := 0; i < 4; i++ {
		h.errs <- errors.New("kernel said no")
	}
	h.r.Trigger()
	h.expectRun(t0)
	now := t0
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		now = now.Add(wait)
		h.sleeping(now)
		h.clock.Step(wait)
		h.expectRun(now)
	}
	// The fifth run succeeded: back to the periodic schedule.
	h.sleeping(now.Add(time.Hour))
}

func TestFakeClockStopAndWaiters(t *testing.T) {
	c := NewFakeClock(t0)
	a := c.NewTimer(time.Second)
	b := c.NewTimer(2 * time.Second)
	if c.Waiters() != 2 {
		t.Fatalf("waiters %d, want 2", c.Waiters())
	}
	if !a.Stop() || a.Stop() {
		t.Error("Stop of a waiting timer must report true once, then false")
	}
	c.Step(2 * time.Second)
	select {
	case at := <-b.C():
		if !at.Equal(t0.Add(2 * time.Second)) {
			t.Errorf("fired at %v", at)
		}
	default:
		t.Error("due timer did not fire")
	}
	select {
	case <-a.C():
		t.Error("stopped timer fired")
	default:
	}
}
