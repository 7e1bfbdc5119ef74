package api

// Traffic is what the kernel counted for a backend, or for a VIP (the sum
// over its backends): connections, packets and bytes in (client to
// backend) and out since the backend was programmed, and the kernel's rate
// estimates per second. Absent where the data plane cannot count (nftables
// counts connections only, from conntrack).
type Traffic struct {
	Conns    uint64 `json:"conns"`
	InPkts   uint64 `json:"in_pkts"`
	OutPkts  uint64 `json:"out_pkts"`
	InBytes  uint64 `json:"in_bytes"`
	OutBytes uint64 `json:"out_bytes"`
	CPS      uint64 `json:"conns_per_s"`
	InPPS    uint64 `json:"in_pkts_per_s"`
	OutPPS   uint64 `json:"out_pkts_per_s"`
	InBPS    uint64 `json:"in_bytes_per_s"`
	OutBPS   uint64 `json:"out_bytes_per_s"`
}

// Add adds o to t.
func (t *Traffic) Add(o Traffic) {
	t.Conns += o.Conns
	t.InPkts += o.InPkts
	t.OutPkts += o.OutPkts
	t.InBytes += o.InBytes
	t.OutBytes += o.OutBytes
	t.CPS += o.CPS
	t.InPPS += o.InPPS
	t.OutPPS += o.OutPPS
	t.InBPS += o.InBPS
	t.OutBPS += o.OutBPS
}

// Backend states on the stats page and in /v1/vips.
const (
	StateUp       = "up"
	StateDraining = "draining"
	StateDown     = "down"
)
