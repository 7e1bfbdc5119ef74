// Package gossip makes every node's backends known to every other node, with
// no central store, over hashicorp/memberlist. Each node publishes only the
// registrations it owns (PublishDelta); every node merges what the others
// publish into a vip.ClusterState and says what changed (TakeChanges); when
// a node dies or leaves, its backends leave the state; when a node that
// announced a restart (Cluster.Restart) is gone, they stay for a grace
// (Config.RestartGrace) and switch to its new life's in one step.
//
// It owns membership, the versioned per-node records (paged by key hash,
// changed by deltas gossiped inline, pulled by difference from their owner,
// reconciled by a digest on push/pull), their encoding and encryption on
// the wire. It does not decide addresses or tables (package vip).
package gossip
