// Package stats serves l4lb's stats page (`l4lb agent --stats-listen`): per
// VIP and per backend, what the kernel counts (connections, packets, bytes
// and their rates) and, per VIP, on how many live nodes it is programmed,
// with a short history of connections per second. The page is vanilla
// HTML, JavaScript and SVG embedded in the binary; it refreshes itself
// from stats.json. It also answers at /haproxy?stats, with a CSV export at
// /haproxy?stats;csv and /stats.csv. It is handed the agent's view of the
// VIPs (api.VIPs) and owns nothing but the history it samples.
package stats
