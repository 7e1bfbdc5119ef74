// Package nftables programs a node's VIPs with nf_tables instead of IPVS: the
// second data plane, for kernels that ship nf_tables but no IPVS.
//
// It owns one table, `inet l4lb`, and nothing else: two verdict maps from
// (address, protocol, port) to a chain per service, the NAT base chains that
// look those maps up (prerouting for traffic from other namespaces and hosts,
// output for local processes) and the postrouting chain that masquerades what
// they DNATed. Each service has its chain, a map from slot to backend that
// the chain's numgen or jhash picks from, and for persistent services a
// dynamic affinity map with a timeout and the set of backends taking new
// connections.
//
// It takes the same desired table (*vip.Table) as package ipvs, keeps the
// same promises (Programmed is what DNS may answer) and has the same method
// set, so the agent can hold either. It does not decide what the table is,
// and never reads or writes another table. It speaks nf_tables netlink
// itself (one batched transaction per sync, see netlink.go); it borrows only
// the expression encoders of github.com/google/nftables.
package nftables
