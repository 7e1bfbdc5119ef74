package stats

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/api"
)

func fakeVIPs(cps uint64) func() api.VIPs {
	return func() api.VIPs {
		return api.VIPs{VIPs: []api.VIP{{
			Label: "/dcos-101/app2:10000", Address: "11.0.0.1", Port: 10000, Protocol: "tcp", Scheduler: "wlc", Programmed: true,
			ProgrammedOn: []string{"node1", "node2"}, LiveNodes: 3, Traffic: &api.Traffic{Conns: 12, CPS: cps},
			Backends: []api.Backend{
				{Address: "10.0.0.2:8080", Node: "node2", Weight: 1, State: api.StateUp, ActiveConns: 2, Traffic: &api.Traffic{Conns: 12, CPS: cps, InBytes: 100}},
				{Address: "10.0.0.3:8080", State: api.StateDraining, Reason: "deregistered"},
			},
		}}}
	}
}

func get(t *testing.T, h http.Handler, url string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
	return rec
}

func TestHandler(t *testing.T) {
	p := New(Config{VIPs: fakeVIPs(5), Node: "node1", Plane: "ipvs", Keep: 3})
	h := p.Handler()
	for _, u := range []string{"/", "/haproxy?stats"} {
		rec := get(t, h, u)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<title>l4lb stats</title>") {
			t.Errorf("%s: %d, not the page", u, rec.Code)
		}
	}
	if rec := get(t, h, "/haproxy?other"); rec.Code != 404 {
		t.Errorf("/haproxy?other: %d, want 404", rec.Code)
	}
	for _, u := range []string{"/stats.csv", "/haproxy?stats;csv", "/haproxy?stats;csv;norefresh"} {
		rec := get(t, h, u)
		rows, err := csv.NewReader(rec.Body).ReadAll()
		if err != nil || len(rows) != 4 {
			t.Fatalf("%s: %v, %d rows, want header, VIP and 2 backends", u, err, len(rows))
		}
		if strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") {
			t.Errorf("%s header %v", u, rows[0])
		}
		if rows[1][1] != "VIP" || rows[1][6] != "2" || rows[1][8] != "12" || rows[1][9] != "5" || rows[1][18] != "2" || rows[1][19] != "3" {
			t.Errorf("%s VIP row %v", u, rows[1])
		}
		if rows[2][2] != "UP" || rows[2][12] != "100" || rows[3][2] != "DRAINING" || rows[3][8] != "" {
			t.Errorf("%s backend rows %v %v", u, rows[2], rows[3])
		}
	}
	// History: one sample per Interval, at most Keep.
	for i := range 5 {
		p.sample(time.Unix(int64(i), 0))
	}
	var s Snapshot
	if err := json.Unmarshal(get(t, h, "/stats.json").Body.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	hist := s.History["/dcos-101/app2:10000"]
	if len(hist) != 3 || hist[2].CPS != 5 || hist[2].Active != 2 || hist[0].T != 2000 || !s.Counts || len(s.VIPs) != 1 {
		t.Fatalf("snapshot %+v", s)
	}
	// nftables: no counts.
	p = New(Config{VIPs: func() api.VIPs { return api.VIPs{} }, Plane: "nftables"})
	if err := json.Unmarshal(get(t, p.Handler(), "/stats.json").Body.Bytes(), &s); err != nil || s.Counts || s.VIPs == nil {
		t.Fatalf("nftables snapshot %+v, %v", s, err)
	}
}

// TestSamplesReadWithoutTheView: with Samples set, the history is sampled
// from it and the view is not built; a VIP that leaves loses its history.
func TestSamplesReadWithoutTheView(t *testing.T) {
	views := 0
	vips := fakeVIPs(5)
	labels := []string{"/a:80", "/b:80"}
	p := New(Config{VIPs: func() api.VIPs { views++; return vips() }, Plane: "ipvs", Keep: 10,
		Samples: func(yield func(string, int, float64)) {
			for i, l := range labels {
				yield(l, i+1, float64(10*(i+1)))
			}
		}})
	p.sample(time.Unix(1, 0))
	labels = labels[1:]
	p.sample(time.Unix(2, 0))
	if views != 0 {
		t.Errorf("the sampler built the view %d times", views)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.hist["/a:80"]; ok {
		t.Errorf("/a:80 kept its history after it left: %v", p.hist)
	}
	if h := p.hist["/b:80"]; len(h) != 2 || h[0] != (Sample{T: 1000, Active: 2, CPS: 20}) || h[1] != (Sample{T: 2000, Active: 1, CPS: 10}) {
		t.Errorf("/b:80 history %+v", h)
	}
}
