// Package vip is the model at the centre of l4lb: what a VIP is (Spec), what
// its DNS names are, which address a named VIP gets (the address book), and
// how the cluster state that gossip carries becomes the desired Table that
// the ipvs package programs and the dns package serves.
//
// It owns no I/O: no sockets, no files, no clocks, no goroutines. Build and
// ProposeClaim are pure functions of their arguments, so every node that
// holds the same cluster state computes the same Table, byte for byte. Model
// holds the cluster state and keeps the same Table up to date by difference
// as the state changes (Apply, Table): work in proportion to the change, with
// Build as its test oracle and resync. A Model has one owner goroutine.
//
// It does not own how state travels between nodes (package gossip), how the
// kernel is programmed (package ipvs) or how names are answered (package dns).
package vip
