// Package runner runs one function on behalf of many triggers: it merges
// bursts of triggers into one run, runs at most once per minimum interval and
// at least once per maximum interval, and retries a failed run with
// exponential backoff. Time comes from an injected Clock, so tests step a
// FakeClock instead of sleeping.
//
// It is the shape of kube-proxy's BoundedFrequencyRunner, rewritten: one
// goroutine (Run) owns the schedule; Trigger and TriggerAfter only record a
// wish and wake it, and never block.
package runner
