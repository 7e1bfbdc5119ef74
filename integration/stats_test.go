package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
)

// EnvStatsScreenshot names the file the stats page's screenshot is
// written to (the README's docs/stats.png); without it, a temporary file.
const EnvStatsScreenshot = "L4LB_STATS_SCREENSHOT"

// TestStatsPageInBrowser drives headless Chromium against the stats page
// that node1's agent serves, with IPVS in the UML guest counting real
// traffic (scenario.StatsPage): app2's VIP programmed on 3 of 3 nodes,
// both instances up, connection counts that move by exactly the requests
// sent, then a drained instance with its held connection; a screenshot.
func TestStatsPageInBrowser(t *testing.T) {
	e := scenario.NewPlane(t, scenario.IPVS, 3, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	for _, i := range []int{1, 2, 3} {
		e.StartAgent(i)
	}
	for _, i := range []int{1, 2, 3} {
		e.WaitReady(i, 30*time.Second)
	}
	a := e.StartApp(2, "app2-a", scenario.AppPort)
	b := e.StartApp(3, "app2-b", scenario.AppPort)
	e.L4LB(2, "register", scenario.AppVIP, a, "--check", "http:///healthz", "--wait", "--timeout", "20s")
	e.L4LB(3, "register", scenario.AppVIP, b, "--check", "http:///healthz", "--wait", "--timeout", "20s")
	shot := os.Getenv(EnvStatsScreenshot)
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "stats.png")
	}
	scenario.StatsPage(e, 1, map[string]string{"app2-a": a, "app2-b": b}, 24, "app2-b", 3, shot)
}
