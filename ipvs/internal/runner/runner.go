package runner

import (
	"context"
	"sync"
	"time"
)

// Config shapes a Runner's schedule.
type Config struct {
	// MinInterval is the least time between the starts of two runs; triggers
	// that come sooner are merged into one run at lastStart+MinInterval.
	// Zero runs as soon as triggered.
	MinInterval time.Duration
	// MaxInterval is the most time between two runs: with no trigger, the
	// function still runs this long after the last run. Zero: never on its
	// own.
	MaxInterval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed run: the first
	// retry comes RetryMin after the failure, each further one twice as
	// late, at most RetryMax. Defaults: 1s and MaxInterval (or 1 minute).
	RetryMin, RetryMax time.Duration
	// Clock is the source of time; nil means the wall clock.
	Clock Clock
}

// Runner calls one function on a bounded schedule. Create it with New, start
// it with Run, and wake it with Trigger or TriggerAfter from any goroutine.
type Runner struct {
	fn  func() error
	cfg Config

	mu     sync.Mutex // guards wantAt
	wantAt time.Time  // earliest requested run; zero when none
	wake   chan struct{}
}

// New returns a Runner that calls fn. fn runs only on the goroutine that
// calls Run, never concurrently with itself.
func New(fn func() error, cfg Config) *Runner {
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = cfg.MaxInterval
		if cfg.RetryMax <= 0 {
			cfg.RetryMax = time.Minute
		}
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	return &Runner{fn: fn, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Trigger asks for a run as soon as MinInterval allows. It never blocks;
// triggers that arrive before the run starts are merged into it.
func (r *Runner) Trigger() { r.TriggerAfter(0) }

// TriggerAfter asks for a run no later than d from now (and no sooner than
// MinInterval allows). The earliest of all pending requests wins.
func (r *Runner) TriggerAfter(d time.Duration) {
	at := r.cfg.Clock.Now().Add(d)
	r.mu.Lock()
	if r.wantAt.IsZero() || at.Before(r.wantAt) {
		r.wantAt = at
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run calls the function on schedule until ctx ends. The first run happens
// at the first trigger (or after MaxInterval).
func (r *Runner) Run(ctx context.Context) {
	clk := r.cfg.Clock
	start := clk.Now()
	var lastRun, retryAt time.Time
	backoff := time.Duration(0)
	for {
		now := clk.Now()
		r.mu.Lock()
		want := r.wantAt
		r.mu.Unlock()

		var next time.Time
		consider := func(t time.Time) {
			if !t.IsZero() && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
		consider(want)
		consider(retryAt)
		if r.cfg.MaxInterval > 0 {
			base := lastRun
			if base.IsZero() {
				base = start
			}
			consider(base.Add(r.cfg.MaxInterval))
		}
		if !next.IsZero() && !lastRun.IsZero() {
			if earliest := lastRun.Add(r.cfg.MinInterval); next.Before(earliest) {
				next = earliest
			}
		}

		if !next.IsZero() && !next.After(now) {
			// This run covers every request due by now; later ones stay.
			r.mu.Lock()
			if !r.wantAt.After(now) {
				r.wantAt = time.Time{}
			}
			r.mu.Unlock()
			lastRun = now
			if err := r.fn(); err != nil {
				if backoff == 0 {
					backoff = r.cfg.RetryMin
				} else if backoff *= 2; backoff > r.cfg.RetryMax {
					backoff = r.cfg.RetryMax
				}
				retryAt = clk.Now().Add(backoff)
			} else {
				backoff, retryAt = 0, time.Time{}
			}
			if ctx.Err() != nil {
				return
			}
			continue
		}

		var timer Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = clk.NewTimer(next.Sub(now))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}
