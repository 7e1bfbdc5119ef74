// Package dns answers the names of the VIPs that this node serves, with
// miekg/dns: an authoritative zone built from the programmed vip.Table,
// swapped atomically when the table changes, and forwarding for every other
// name. It owns no kernel state and never reads cluster state.
package dns
