// Package gossip makes every node's backends known to every other node, with
// no central store, over hashicorp/memberlist. Each node publishes only the
// registrations it owns; every node merges what the others publish into a
// vip.ClusterState; when a node dies or leaves, its backends leave the state.
//
// It owns membership, the versioned per-node records, their encoding and
// encryption on the wire. It does not decide addresses or tables (package vip).
package gossip
