package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/gossip/memnet"
)

// TestCollector: the cluster's collector exports the gossip_* families
// with the agent's names, help, labels and types, read from Members and
// Stats when gathered.
func TestCollector(t *testing.T) {
	nodes := startMemCluster(t, memnet.New(), 2, nil)
	c := nodes[0].c
	waitFor(t, 10*time.Second, "two live members", func() bool { return c.Stats().Members == 2 })

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"l4lb_gossip_members":                "GAUGE Cluster members by state.",
		"l4lb_gossip_messages_total":         "COUNTER l4lb's own gossip messages.",
		"l4lb_gossip_bytes_total":            "COUNTER Bytes of l4lb's own gossip messages, before encryption.",
		"l4lb_gossip_wire_bytes_total":       "COUNTER Bytes on the gossip transport, memberlist's included.",
		"l4lb_gossip_broadcast_queue":        "GAUGE Gossip messages waiting to be sent.",
		"l4lb_gossip_merge_conflicts_total":  "COUNTER Records with a held version but other content.",
		"l4lb_gossip_stale_records_total":    "COUNTER Records dropped because a newer one was held.",
		"l4lb_gossip_dropped_messages_total": "COUNTER Malformed or oversized gossip messages dropped.",
	}
	got := map[string]string{}
	series := map[string]float64{} // name{label="value"} -> value
	for _, f := range families {
		got[f.GetName()] = f.GetType().String() + " " + f.GetHelp()
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			series[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("gathered %d families, want %d: %v", len(got), len(want), got)
	}
	for _, state := range []string{"alive", "suspect", "dead", "left"} {
		s := fmt.Sprintf(`l4lb_gossip_members{state=%q}`, state)
		v, ok := series[s]
		if want := map[bool]float64{true: 2}[state == "alive"]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", s, v, ok, want)
		}
	}
	for _, dir := range []string{"sent", "received"} {
		s := fmt.Sprintf(`l4lb_gossip_messages_total{direction=%q}`, dir)
		if series[s] == 0 {
			t.Errorf("%s = 0 after a join; series: %v", s, series)
		}
	}
}
