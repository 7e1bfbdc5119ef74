// Package kerneltest proves package nftables against the real kernel, on the
// host: its tests build network namespaces (a client, a load balancer, two
// backends over veth pairs), program table inet l4lb in the load balancer's
// and send real TCP and UDP traffic through it. It also holds the
// benchmarks against `nft -f`. Run it under the heavy lock; it needs root
// and fails (never skips) without nf_tables.
package kerneltest
