package integration

import (
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
)

// TestSharedCases runs the shared end-to-end cases (scenario.Cases: UDP,
// hairpin, drift, IPv6, IP VIPs) on IPVS in the guest;
// TestSharedCasesNFTables runs the same table on nftables on the host.
func TestSharedCases(t *testing.T) { sharedCases(t, scenario.IPVS) }

func TestSharedCasesNFTables(t *testing.T) { sharedCases(t, scenario.NFTables) }

func sharedCases(t *testing.T, p scenario.Plane) {
	e := scenario.NewPlane(t, p, 2, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	scenario.RunCases(e)
}
