package stats

import (
	"context"
	"embed"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/api"
)

//go:embed web/index.html
var web embed.FS

// Config is what a Page needs.
type Config struct {
	// VIPs returns the agent's view of the VIPs, with the kernel's counts
	// (the same as GET /v1/vips). It may be called from any goroutine.
	VIPs func() api.VIPs
	// Samples, when set, gives what the history samples of each VIP: its
	// label, established connections and the kernel's connections per
	// second, the same numbers as VIPs but without building the view
	// (the sampler runs every Interval, the view is built per request).
	// When nil, the sampler reads VIPs.
	Samples func(yield func(label string, active int, cps float64))
	// Node is this node's name; Plane the data plane ("ipvs", "nftables",
	// "none"): nftables counts connections but no packets, bytes or rates.
	Node, Plane string
	// Interval is how often the history is sampled (default 2 s); Keep how
	// many samples it holds per VIP (default 150: five minutes).
	Interval time.Duration
	Keep     int
	Log      *logrus.Entry
}

// Page is the stats page and its history.
type Page struct {
	cfg Config

	mu   sync.Mutex // guards hist
	hist map[string][]Sample
}

// Sample is one point of a VIP's history: when (Unix milliseconds), the
// kernel's connections per second, and the established connections.
type Sample struct {
	T      int64   `json:"t"`
	CPS    float64 `json:"cps"`
	Active int     `json:"active"`
}

// Snapshot is the answer of stats.json.
type Snapshot struct {
	Node string `json:"node"`
	// Plane is the data plane; Counts says whether it counts packets,
	// bytes and rates (IPVS does; nftables counts connections only).
	Plane   string              `json:"plane"`
	Counts  bool                `json:"counts"`
	Time    time.Time           `json:"time"`
	VIPs    []api.VIP           `json:"vips"`
	Errors  []string            `json:"errors,omitempty"`
	History map[string][]Sample `json:"history"`
}

// New returns a Page; call Run to sample its history.
func New(cfg Config) *Page {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 150
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Page{cfg: cfg, hist: map[string][]Sample{}}
}

// Run samples the history every Interval until ctx is done.
func (p *Page) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	p.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.sample(now)
		}
	}
}

func (p *Page) sample(now time.Time) {
	each := p.cfg.Samples
	if each == nil {
		each = func(yield func(string, int, float64)) {
			for _, x := range p.cfg.VIPs().VIPs {
				cps := 0.0
				if x.Traffic != nil {
					cps = float64(x.Traffic.CPS)
				}
				yield(x.Label, activeOf(x), cps)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[string]bool, len(p.hist))
	each(func(label string, active int, cps float64) {
		seen[label] = true
		h := append(p.hist[label], Sample{T: now.UnixMilli(), Active: active, CPS: cps})
		if len(h) > p.cfg.Keep {
			h = h[len(h)-p.cfg.Keep:]
		}
		p.hist[label] = h
	})
	for k := range p.hist {
		if !seen[k] {
			delete(p.hist, k)
		}
	}
}

func activeOf(x api.VIP) int {
	n := 0
	for _, b := range x.Backends {
		n += b.ActiveConns
	}
	return n
}

// Snapshot returns what the page shows now.
func (p *Page) Snapshot() Snapshot {
	v := p.cfg.VIPs()
	s := Snapshot{Node: p.cfg.Node, Plane: p.cfg.Plane, Counts: p.cfg.Plane == "ipvs", Time: time.Now().UTC(),
		VIPs: v.VIPs, Errors: v.Errors, History: map[string][]Sample{}}
	if s.VIPs == nil {
		s.VIPs = []api.VIP{}
	}
	p.mu.Lock()
	for _, x := range v.VIPs {
		s.History[x.Label] = append([]Sample(nil), p.hist[x.Label]...)
	}
	p.mu.Unlock()
	return s
}

// Handler serves the page at / and /haproxy?stats, its data at
// /stats.json, and the CSV at /stats.csv and /haproxy?stats;csv.
func (p *Page) Handler() http.Handler {
	mux := http.NewServeMux()
	page := func(w http.ResponseWriter, r *http.Request) {
		b, err := web.ReadFile("web/index.html")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	}
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /haproxy", func(w http.ResponseWriter, r *http.Request) {
		switch q := r.URL.RawQuery; {
		case strings.HasPrefix(q, "stats;csv"):
			p.writeCSV(w)
		case q == "stats" || strings.HasPrefix(q, "stats;") || strings.HasPrefix(q, "stats&"):
			page(w, r)
		default:
			http.Error(w, "this is l4lb: the stats are at /haproxy?stats", http.StatusNotFound)
		}
	})
	mux.HandleFunc("GET /stats.csv", func(w http.ResponseWriter, r *http.Request) { p.writeCSV(w) })
	mux.HandleFunc("GET /stats.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(p.Snapshot())
	})
	return mux
}

// CSVHeader are the CSV export's columns, after HAProxy's "# pxname,svname":
// one row per VIP (svname "VIP": the sums) and one per backend.
var CSVHeader = []string{"# pxname", "svname", "status", "reason", "node", "weight", "act_conns", "inact_conns",
	"conns_total", "conns_per_s", "pkts_in", "pkts_out", "bytes_in", "bytes_out",
	"pkts_in_per_s", "pkts_out_per_s", "bytes_in_per_s", "bytes_out_per_s",
	"programmed_on", "live_nodes", "address", "scheduler", "persistence", "public_port", "published_at"}

func (p *Page) writeCSV(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write(CSVHeader)
	for _, x := range p.cfg.VIPs().VIPs {
		active, inactive := 0, 0
		for _, b := range x.Backends {
			active += b.ActiveConns
			inactive += b.InactConns
		}
		addr := fmt.Sprintf("%s:%d/%s", x.Address, x.Port, x.Protocol)
		status := "OPEN"
		if !x.Programmed {
			status = "NOT PROGRAMMED"
		}
		row := []string{x.Label, "VIP", status, "", "", "", strconv.Itoa(active), strconv.Itoa(inactive)}
		row = append(row, trafficCells(x.Traffic)...)
		row = append(row, strconv.Itoa(len(x.ProgrammedOn)), strconv.Itoa(x.LiveNodes), addr, x.Scheduler, strconv.FormatUint(uint64(x.Persistence), 10),
			strconv.Itoa(int(x.PublicPort)), strings.Join(x.PublishedAt, " "))
		_ = cw.Write(row)
		for _, b := range x.Backends {
			row := []string{x.Label, b.Address, strings.ToUpper(b.State), b.Reason, b.Node, strconv.FormatUint(uint64(b.Weight), 10),
				strconv.Itoa(b.ActiveConns), strconv.Itoa(b.InactConns)}
			row = append(row, trafficCells(b.Traffic)...)
			row = append(row, "", "", b.Address, "", "", "", "")
			_ = cw.Write(row)
		}
	}
	cw.Flush()
}

// trafficCells are the ten traffic columns, empty where not counted.
func trafficCells(t *api.Traffic) []string {
	if t == nil {
		return make([]string, 10)
	}
	out := make([]string, 0, 10)
	for _, n := range []uint64{t.Conns, t.CPS, t.InPkts, t.OutPkts, t.InBytes, t.OutBytes, t.InPPS, t.OutPPS, t.InBPS, t.OutBPS} {
		out = append(out, strconv.FormatUint(n, 10))
	}
	return out
}
