package ipvs

import "github.com/prometheus/client_golang/prometheus"

var (
	opsDesc      = prometheus.NewDesc("l4lb_ipvs_operations_total", "Kernel writes made by the IPVS reconciler, by kind.", []string{"kind"}, nil)
	syncsDesc    = prometheus.NewDesc("l4lb_ipvs_syncs_total", "Syncs run, by kind (full: the kernel was read back).", []string{"kind"}, nil)
	failedDesc   = prometheus.NewDesc("l4lb_ipvs_failed_operations_total", "Kernel writes that failed.", nil, nil)
	durDesc      = prometheus.NewDesc("l4lb_ipvs_last_sync_duration_seconds", "How long the last sync took.", nil, nil)
	drainingDesc = prometheus.NewDesc("l4lb_ipvs_draining_backends", "Real servers at weight 0 waiting for their connections to end.", nil, nil)
	servicesDesc = prometheus.NewDesc("l4lb_ipvs_services", "Virtual services l4lb holds in the kernel.", nil, nil)
	ipv6OffDesc  = prometheus.NewDesc("l4lb_ipvs_ipv6_disabled", "1 when IPv6 VIPs are left out of the kernel because it cannot masquerade IPv6 (no IPv6 NAT).", nil, nil)
)

// Collector returns a prometheus collector of the reconciler's Stats; the
// agent registers it.
func (r *Reconciler) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Reconciler }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{opsDesc, syncsDesc, failedDesc, durDesc, drainingDesc, servicesDesc, ipv6OffDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	for _, k := range OpKinds() {
		ch <- prometheus.MustNewConstMetric(opsDesc, prometheus.CounterValue, float64(s.Ops[k.String()]), k.String())
	}
	ch <- prometheus.MustNewConstMetric(syncsDesc, prometheus.CounterValue, float64(s.FullSyncs), "full")
	ch <- prometheus.MustNewConstMetric(syncsDesc, prometheus.CounterValue, float64(s.Syncs-s.FullSyncs), "incremental")
	ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(s.FailedOps))
	ch <- prometheus.MustNewConstMetric(durDesc, prometheus.GaugeValue, s.LastSyncDuration.Seconds())
	ch <- prometheus.MustNewConstMetric(drainingDesc, prometheus.GaugeValue, float64(s.Draining))
	ch <- prometheus.MustNewConstMetric(servicesDesc, prometheus.GaugeValue, float64(s.Services))
	ipv6Off := 0.0
	if c.r.IPv6Disabled() != "" {
		ipv6Off = 1
	}
	ch <- prometheus.MustNewConstMetric(ipv6OffDesc, prometheus.GaugeValue, ipv6Off)
}
