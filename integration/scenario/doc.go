// Package scenario is l4lb's seed scenario, written once for two readers:
// the end-to-end test (integration) asserts every step, and the demo
// (integration/demo, `make demo`) shows every step to a person. Both run it
// on a bed.Cluster of three nodes, each running the real `l4lb agent`
// binary, with the real dig and the demo app, against either data plane
// (Plane): IPVS in the UML guest, read back with ipvsadm, or nftables on
// the host kernel, read back with nft.
package scenario
