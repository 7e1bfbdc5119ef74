package integration

import (
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
)

// TestSeedScenario is the scenario l4lb exists for, end to end on three
// nodes: an app reached by its named VIP from every node, scaled up and
// down, a dead node, a failing instance, and an agent restart.
func TestSeedScenario(t *testing.T) {
	e := scenario.New(t, 3, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	res := scenario.Run(e)

	t.Logf("l4lb register -> kernel of the other nodes: p50 %v p99 %v; API -> kernel: p50 %v p99 %v",
		scenario.Percentile(res.RegisterToKernel, 50), scenario.Percentile(res.RegisterToKernel, 99),
		scenario.Percentile(res.APIToKernel, 50), scenario.Percentile(res.APIToKernel, 99))
}
