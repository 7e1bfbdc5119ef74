// Package scenario is l4lb's seed scenario, written once for two readers:
// the end-to-end test (integration) asserts every step, and the demo
// (integration/demo, `make demo`) shows every step to a person. Both run it
// in the UML guest on a bed.Cluster of three nodes, each running the real
// `l4lb agent` binary, with the real ipvsadm, dig and the demo app.
package scenario
