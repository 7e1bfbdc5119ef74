package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/integration/scenario"
)

// TestZeroDowntimeDeploy replaces app2's instance on node2 by a new one on
// node3 the way a deploy script does, with `l4lb register --wait` and
// `l4lb deregister --wait`, under a request loop from node1 that must lose
// no request (scenario.Deploy); then a deregistration whose connection
// stays open runs into its timeout and says how many remain. IPVS, in the
// UML guest.
func TestZeroDowntimeDeploy(t *testing.T) {
	e := scenario.NewPlane(t, scenario.IPVS, 3, bed.Binary(t, "l4lb"), bed.Binary(t, "l4lb-demoapp"), t.Logf)
	for _, i := range []int{1, 2, 3} {
		e.StartAgent(i)
	}
	for _, i := range []int{1, 2, 3} {
		e.WaitReady(i, 30*time.Second)
	}
	old := e.StartApp(2, "app2-old", scenario.AppPort)
	out := e.L4LB(2, "register", scenario.AppVIP, old, "--check", "http:///healthz", "--wait", "--timeout", "20s")
	if !strings.Contains(out, "programmed on 3 of 3 live nodes") {
		t.Fatalf("register --wait did not report 3 of 3 nodes:\n%s", out)
	}
	res := scenario.Deploy(e, 1, 2, "app2-old", old, 3, "app2-new")
	t.Logf("deploy: register --wait %v, deregister --wait %v; %d requests, %d failed",
		res.Registered.Round(time.Millisecond), res.Drained.Round(time.Millisecond), res.Requests(), len(res.Failed))
	neu := e.C.Node(3).Addr.String() + ":8080"
	scenario.DrainTimesOut(e, 1, 3, "app2-new", neu)
}
