package agent

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// scrape reads the agent's GET /metrics into series -> value.
func scrape(t *testing.T, apiAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + apiAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestAgentMetricsFollowTheCluster: a running agent's /metrics says what
// the cluster holds: two live members, this node's published backend, the
// VIP and its healthy backends in the table, and the network programming
// histogram filled by the changes.
func TestAgentMetricsFollowTheCluster(t *testing.T) {
	a := loopbackAgent(t, "node-a")
	ra := startAgent(t, a)
	b := loopbackAgent(t, "node-b", gossipAddr(a))
	waitReady(t, ra, startAgent(t, b))
	for _, reg := range []struct{ api, backend string }{{a.APIListen, "10.0.2.1:8080"}, {b.APIListen, "10.0.2.2:8080"}} {
		if _, err := api.NewClient(reg.api).Register(context.Background(), source.Entry{VIP: "/m/app:80", Backend: reg.backend}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both backends on node-a", func() bool {
		return seesBackend(a.APIListen, "/m/app:80", "10.0.2.1:8080") && seesBackend(a.APIListen, "/m/app:80", "10.0.2.2:8080")
	})
	var m map[string]float64
	eventually(t, "node-a's metrics", func() bool {
		m = scrape(t, a.APIListen)
		return m[`l4lb_gossip_members{state="alive"}`] == 2 && m["l4lb_local_backends"] == 1 &&
			m[`l4lb_backends{health="healthy"}`] == 2 && m[`l4lb_network_programming_duration_seconds_count{stage="table_built"}`] > 0
	})
	for _, s := range []string{`l4lb_vips{state="programmed"}`, `l4lb_vips{state="unprogrammed"}`} {
		if _, ok := m[s]; ok {
			t.Logf("%s = %v", s, m[s])
		}
	}
	if m["l4lb_table_errors"] != 0 {
		t.Errorf("l4lb_table_errors = %v, want 0", m["l4lb_table_errors"])
	}
}
