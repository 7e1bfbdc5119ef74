// Package health checks the backends that run on this node: a TCP connect or
// an HTTP GET that expects a 2xx answer, on an interval, with rise and fall
// thresholds, and reports each change of a backend's health.
//
// A Checker owns one goroutine per target and nothing else: it does not know
// VIPs, registrations or gossip. The agent hands it the targets, by
// difference (Update) or whole (Set), takes the transitions it reports
// (TakeChanged after a Changed signal, or OnChange) into the health it
// publishes, and asks Status for what to show people.
//
// A target starts unknown and is not healthy until its first check passes, so
// a backend that never answered is never offered traffic. The first result
// settles the state either way; after that, Fall consecutive failures make a
// healthy target unhealthy and Rise consecutive successes make an unhealthy
// one healthy again.
package health
