// Package agent joins l4lb's parts into the node agent. Data flows one way
// through it: local backend sources (the API's registrations, the services
// directory, health checks) are published to gossip; every change of the
// gossiped cluster state is turned into the desired table by vip.Build and
// handed to the data plane; what the data plane reports as programmed is
// handed to DNS, so that DNS answers only what works. What the data plane
// programmed (the record versions of its table, the connections of the
// backends it drains) goes back to gossip as this node's report: from every
// node's report the agent says how far a registration or a deregistration
// has reached (`--wait`, POST /v1/backends/progress) and on how many nodes a
// VIP is programmed (the stats page, /v1/vips).
//
// Core holds that flow and its decisions (which backends this node publishes,
// with which health and which VIP address claims); Run builds the real
// components from Options and wires them to a Core. Beside it, the agent
// returns the heap's free pages to the OS when it is quiet after a burst
// (memtrim.go), and exports per-VIP metrics read straight from the tables
// (statsview.go).
package agent
