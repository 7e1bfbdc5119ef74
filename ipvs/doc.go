// Package ipvs programs the kernel's IPVS on one node from a desired
// vip.Table, and keeps it there: VIP addresses on a dummy interface, one
// virtual service per VIP, one masquerading real server per backend, applied
// incrementally, repaired on drift, drained instead of cut, adopted across
// restarts; plus the sysctls and the iptables masquerade rule that make VIPs
// reachable from every node.
//
// A virtual service is l4lb's if and only if its address is on l4lb's dummy
// interface or it is in the desired table, except at a public address (the
// node's own, Config.PublicAddrs), where it is l4lb's only if l4lb recorded
// it when it made it (Config.PublicRecord); no other service is ever
// touched. Public services come from package ipvs/public.
// Kernel is the real kernel, Fake an in-memory one for tests; both implement
// Interface. See README.md for the rules and the figures.
//
// It owns every kernel call l4lb makes for the data plane. It does not decide
// what the table is (package vip) and never reads cluster state.
package ipvs
