// Package dns answers the names of the VIPs that this node serves, with
// miekg/dns: an authoritative zone of the programmed vip.Table, updated by
// difference when a table descends from the last one (vip.Derive) and built
// in full otherwise, swapped atomically so that queries take no lock; and
// forwarding for every other name. It owns no kernel state and never reads
// cluster state.
package dns
