package nftables

import "github.com/prometheus/client_golang/prometheus"

var (
	opsDesc      = prometheus.NewDesc("l4lb_nftables_operations_total", "Writes (netlink objects) made by the nftables reconciler, by kind.", []string{"kind"}, nil)
	txDesc       = prometheus.NewDesc("l4lb_nftables_transactions_total", "nf_tables transactions sent (each is atomic).", nil, nil)
	elemsDesc    = prometheus.NewDesc("l4lb_nftables_elements_total", "Set and map elements written (added or deleted).", nil, nil)
	syncsDesc    = prometheus.NewDesc("l4lb_nftables_syncs_total", "Syncs run, by kind (full: the table was read back).", []string{"kind"}, nil)
	failedDesc   = prometheus.NewDesc("l4lb_nftables_failed_operations_total", "Service transactions that failed.", nil, nil)
	durDesc      = prometheus.NewDesc("l4lb_nftables_last_sync_duration_seconds", "How long the last sync took.", nil, nil)
	drainingDesc = prometheus.NewDesc("l4lb_nftables_draining_backends", "Backends that take no new connection while established ones last.", nil, nil)
	servicesDesc = prometheus.NewDesc("l4lb_nftables_services", "Services l4lb holds in table inet l4lb.", nil, nil)
	refusedDesc  = prometheus.NewDesc("l4lb_nftables_refused_vips", "Desired VIPs left out: their scheduler has no nftables equivalent.", nil, nil)
)

// Collector returns a prometheus collector of the reconciler's Stats; the
// agent registers it.
func (r *Reconciler) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Reconciler }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{opsDesc, txDesc, elemsDesc, syncsDesc, failedDesc, durDesc, drainingDesc, servicesDesc, refusedDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	w := c.r.Writes()
	for _, k := range OpKinds() {
		ch <- prometheus.MustNewConstMetric(opsDesc, prometheus.CounterValue, float64(s.Ops[k.String()]), k.String())
	}
	ch <- prometheus.MustNewConstMetric(txDesc, prometheus.CounterValue, float64(w.Transactions))
	ch <- prometheus.MustNewConstMetric(elemsDesc, prometheus.CounterValue, float64(w.Elements))
	ch <- prometheus.MustNewConstMetric(syncsDesc, prometheus.CounterValue, float64(s.FullSyncs), "full")
	ch <- prometheus.MustNewConstMetric(syncsDesc, prometheus.CounterValue, float64(s.Syncs-s.FullSyncs), "incremental")
	ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(s.FailedOps))
	ch <- prometheus.MustNewConstMetric(durDesc, prometheus.GaugeValue, s.LastSyncDuration.Seconds())
	ch <- prometheus.MustNewConstMetric(drainingDesc, prometheus.GaugeValue, float64(s.Draining))
	ch <- prometheus.MustNewConstMetric(servicesDesc, prometheus.GaugeValue, float64(s.Services))
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.GaugeValue, float64(len(c.r.Refused())))
}
