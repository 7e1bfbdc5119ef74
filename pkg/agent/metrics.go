package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/pkg/source/docker"
)

// newProgrammingHistogram is the network programming latency, per stage
// (see Stage): where the time between a change and its service goes.
func newProgrammingHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "l4lb_network_programming_duration_seconds",
		Help:    "Time each stage of network programming took: published (a local change handed to gossip), table_built (a cluster change applied to the desired table), kernel_written (that table in the kernel), dns_served (the kernel's table answered by DNS), total (cluster change to DNS).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14), // 100 us to ~15 s
	}, []string{"stage"})
}

// statsSources are the components whose counters the metrics read at
// scrape time; nil ones are left out.
type statsSources struct {
	core   *Core
	dir    func() source.DirStats
	docker func() docker.Stats
}

// collector turns the components' Stats into Prometheus metrics when
// scraped, so that no component keeps a second count. The data plane,
// gossip and DNS export their own (ipvs.Reconciler.Collector,
// gossip.Cluster.Collector, dns.Server.Collector).
type collector struct {
	src   statsSources
	descs map[string]*prometheus.Desc
}

func newCollector(src statsSources) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("l4lb_"+name, help, labels, nil)
	}
	return &collector{src: src, descs: map[string]*prometheus.Desc{
		"vips":                   d("vips", "VIPs in the desired table.", "state"),
		"backends":               d("backends", "Backends in the desired table, by health.", "health"),
		"table_errors":           d("table_errors", "Named VIPs the table could not hold (range full, invalid)."),
		"local_backends":         d("local_backends", "Backends this node publishes."),
		"publish_refused":        d("publish_refused", "1 while gossip refuses this node's backends (over the record limit): /readyz says why."),
		"prog_latency":           d("network_programming_latency_seconds", "Time from a change of the cluster state reaching this node to the change being in this node's kernel (last sync)."),
		"docker_connected":       d("docker_connected", "1 while the Docker engine's event stream is followed."),
		"docker_containers":      d("docker_containers", "Running containers with l4lb labels."),
		"docker_backends":        d("docker_backends", "Backends published from Docker containers."),
		"docker_problems":        d("docker_unpublished_containers", "Labelled containers not published (bad labels, or unreachable from other nodes): l4lb vips says why."),
		"docker_unroutable":      d("docker_unroutable_total", "Times a labelled container was found unreachable by other nodes."),
		"docker_bad_labels":      d("docker_bad_labels_total", "Times a container's l4lb labels could not be read."),
		"services_dir_errors":    d("services_dir_bad_files", "Files of the services directory that are bad now (skipped)."),
		"services_dir_bad_loads": d("services_dir_bad_loads_total", "Times a services directory file was read and found bad."),
	}}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	counter := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, v, labels...)
	}
	if core := c.src.core; core != nil {
		t, prog := core.Table(), core.ProgrammedTable()
		gauge("vips", float64(len(t.VIPs)), "desired")
		gauge("vips", float64(len(prog.VIPs)), "programmed")
		health := map[string]int{}
		for _, v := range t.VIPs {
			for _, b := range v.Backends {
				health[string(b.Health)]++
			}
			health["unhealthy"] += len(v.Down)
		}
		for _, h := range []string{"healthy", "draining", "unhealthy"} {
			gauge("backends", float64(health[h]), h)
		}
		gauge("table_errors", float64(len(t.Errors)))
		gauge("prog_latency", core.ProgrammingLatency().Seconds())
		gauge("local_backends", float64(core.LocalCount()))
		refused := 0.0
		if core.PublishError() != nil {
			refused = 1
		}
		gauge("publish_refused", refused)
	}
	if c.src.dir != nil {
		s := c.src.dir()
		gauge("services_dir_errors", float64(len(s.BadFiles)))
		counter("services_dir_bad_loads", float64(s.BadLoads))
	}
	if c.src.docker != nil {
		s := c.src.docker()
		connected := 0.0
		if s.Connected {
			connected = 1
		}
		gauge("docker_connected", connected)
		gauge("docker_containers", float64(s.Containers))
		gauge("docker_backends", float64(s.Backends))
		gauge("docker_problems", float64(len(s.Problems)))
		counter("docker_unroutable", float64(s.Unroutable))
		counter("docker_bad_labels", float64(s.BadLabels))
	}
}
