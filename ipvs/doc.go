// Package ipvs programs the kernel's IPVS on one node from a desired
// vip.Table, and keeps it there: VIP addresses on a dummy interface, one
// virtual service per VIP, one masquerading real server per backend, applied
// incrementally, repaired on drift, drained instead of cut.
//
// It owns every kernel call l4lb makes for the data plane. It does not decide
// what the table is (package vip) and never reads cluster state.
package ipvs
