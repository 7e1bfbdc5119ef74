// Package dist holds what installs l4lb on a node: the systemd unit
// (systemd/l4lb.service) and an example agent configuration. Its test checks
// the unit with systemd-analyze.
package dist
