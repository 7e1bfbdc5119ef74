// Package source owns where this node's backends come from before they are
// published: the wire form of a registration (Entry) and its checked form
// (Local), the registrations made through the agent's API and kept on disk
// across restarts in an append-only journal (Store), and the services
// directory that configuration tools fill with JSON files (Dir), reported
// whole (Run, Scan) or by difference (RunDelta).
//
// It does not publish anything, check health (package health) or decide
// what a VIP's table looks like (package vip): the agent hands the sets this
// package produces to gossip, and each Local becomes a vip.Registration there.
// Every change costs in proportion to itself: a Put or Delete appends one
// record, a changed services file touches only its own keys.
package source
