package integration

import (
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
)

// TestSeedScenario is the scenario l4lb exists for, end to end on three
// nodes on the IPVS data plane, in the UML guest: an app reached by its
// named VIP from every node, scaled up and down, a dead node, a failing
// instance, and an agent restart.
func TestSeedScenario(t *testing.T) { seedScenario(t, scenario.IPVS) }

// TestSeedScenarioNFTables is the same scenario, step for step, with every
// agent on --dataplane nftables, on the host kernel in namespaces the test
// creates (it runs in the host pass, see TestMain). It fails where the
// kernel has no nf_tables with NAT.
func TestSeedScenarioNFTables(t *testing.T) { seedScenario(t, scenario.NFTables) }

func seedScenario(t *testing.T, p scenario.Plane) {
	e := scenario.NewPlane(t, p, 3, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	res := scenario.Run(e)

	t.Logf("%s: SIGKILL -> backend out of the other kernels: %v; unhealthy -> out: %v; healthy -> in: %v", p, res.KillToGone, res.UnhealthyToOut, res.HealthyToIn)
	t.Logf("%s: l4lb register -> kernel of the other nodes: p50 %v p99 %v; API -> kernel: p50 %v p99 %v", p,
		scenario.Percentile(res.RegisterToKernel, 50), scenario.Percentile(res.RegisterToKernel, 99),
		scenario.Percentile(res.APIToKernel, 50), scenario.Percentile(res.APIToKernel, 99))
}
