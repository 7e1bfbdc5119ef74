package gossip

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	membersDesc   = prometheus.NewDesc("l4lb_gossip_members", "Cluster members by state.", []string{"state"}, nil)
	messagesDesc  = prometheus.NewDesc("l4lb_gossip_messages_total", "l4lb's own gossip messages.", []string{"direction"}, nil)
	bytesDesc     = prometheus.NewDesc("l4lb_gossip_bytes_total", "Bytes of l4lb's own gossip messages, before encryption.", []string{"direction"}, nil)
	wireBytesDesc = prometheus.NewDesc("l4lb_gossip_wire_bytes_total", "Bytes on the gossip transport, memberlist's included.", []string{"direction"}, nil)
	queueDesc     = prometheus.NewDesc("l4lb_gossip_broadcast_queue", "Gossip messages waiting to be sent.", nil, nil)
	conflictsDesc = prometheus.NewDesc("l4lb_gossip_merge_conflicts_total", "Records with a held version but other content.", nil, nil)
	staleDesc     = prometheus.NewDesc("l4lb_gossip_stale_records_total", "Records dropped because a newer one was held.", nil, nil)
	droppedDesc   = prometheus.NewDesc("l4lb_gossip_dropped_messages_total", "Malformed or oversized gossip messages dropped.", nil, nil)
)

// Collector returns a prometheus collector of the cluster's Members and
// Stats, read when scraped; the agent registers it.
func (c *Cluster) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *Cluster }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{membersDesc, messagesDesc, bytesDesc, wireBytesDesc, queueDesc, conflictsDesc, staleDesc, droppedDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	states := map[string]int{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, m := range c.c.Members() {
		states[string(m.State)]++
	}
	keys := make([]string, 0, len(states))
	for k := range states {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		gauge(membersDesc, float64(states[k]), k)
	}
	s := c.c.Stats()
	counter(messagesDesc, float64(s.MessagesSent), "sent")
	counter(messagesDesc, float64(s.MessagesReceived), "received")
	counter(bytesDesc, float64(s.BytesSent), "sent")
	counter(bytesDesc, float64(s.BytesReceived), "received")
	counter(wireBytesDesc, float64(s.WireBytesSent), "sent")
	counter(wireBytesDesc, float64(s.WireBytesReceived), "received")
	gauge(queueDesc, float64(s.BroadcastQueue))
	counter(conflictsDesc, float64(s.MergeConflicts))
	counter(staleDesc, float64(s.StaleRecords))
	counter(droppedDesc, float64(s.DroppedMessages))
}
