package dns

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	repliesDesc       = prometheus.NewDesc("l4lb_dns_replies_total", "DNS replies by response code.", []string{"rcode"}, nil)
	forwardedDesc     = prometheus.NewDesc("l4lb_dns_forwarded_total", "DNS queries answered by an upstream.", nil, nil)
	forwardFailedDesc = prometheus.NewDesc("l4lb_dns_forward_failures_total", "DNS queries every upstream failed.", nil, nil)
	droppedDesc       = prometheus.NewDesc("l4lb_dns_dropped_total", "DNS queries dropped unanswered, malformed or over the in-flight cap.", []string{"reason"}, nil)
	namesDesc         = prometheus.NewDesc("l4lb_dns_zone_names", "VIP names the DNS zone answers.", nil, nil)
	zoneUpdatesDesc   = prometheus.NewDesc("l4lb_dns_zone_updates_total", "DNS zone updates, by how they were made: diff (only the changed VIPs' names) or full (the whole zone rebuilt).", []string{"kind"}, nil)
)

// Collector returns a prometheus collector of the server's Stats, read when
// scraped; the agent registers it.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{repliesDesc, forwardedDesc, forwardFailedDesc, droppedDesc, namesDesc, zoneUpdatesDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	s := c.s.Stats()
	codes := make([]string, 0, len(s.Replies))
	for k := range s.Replies {
		codes = append(codes, k)
	}
	sort.Strings(codes)
	for _, k := range codes {
		counter(repliesDesc, float64(s.Replies[k]), k)
	}
	counter(forwardedDesc, float64(s.Forwarded))
	counter(forwardFailedDesc, float64(s.ForwardFailures))
	counter(droppedDesc, float64(s.FormErr), "formerr")
	counter(droppedDesc, float64(s.Dropped), "malformed")
	counter(droppedDesc, float64(s.InFlightCapHits), "in_flight_cap")
	counter(droppedDesc, float64(s.Loops), "loop")
	ch <- prometheus.MustNewConstMetric(namesDesc, prometheus.GaugeValue, float64(s.ZoneNames))
	counter(zoneUpdatesDesc, float64(s.ZoneUpdates), "diff")
	counter(zoneUpdatesDesc, float64(s.ZoneRebuilds), "full")
}
