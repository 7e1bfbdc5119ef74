// Package faults is l4lb's fault suite: real agents (l4lb agent, IPVS data
// plane) on three nodes in the UML guest (integration/bed), each case one
// fault under a continuous request loop through a VIP from every node, and
// each ending with a convergence check: every node's table (l4lb vips) and
// kernel (IPVS) hold exactly what was registered, nothing lost, no ghost.
//
// The cases in `make test` (go test ./integration/faults): a leave (out of
// every kernel within 1 s), a death (within 3 s), the restart of one agent
// and of all agents at once (0 failed requests is the goal; the count is
// reported). The long ones (churn under CPU load, repeated restarts) are
// built with the `faults` tag: `make faults`. Figures are in
// integration/README.md.
package faults
