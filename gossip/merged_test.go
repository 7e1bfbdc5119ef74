package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

// TestMergedMeansTheClusterStateIsHeld: a node that joins reports Merged
// only once it holds every peer's record, big ones (pulled after the join)
// included; a node alone never does.
func TestMergedMeansTheClusterStateIsHeld(t *testing.T) {
	for run := range 10 {
		net := memnet.New()
		nodes := startMemCluster(t, net, 3, nil)
		small := []vip.Registration{reg("/small", 80, "10.0.0.1:8080")}
		big := manyRegs(500) // over a packet: announced, then pulled
		if err := nodes[1].c.PublishDelta(small, nil); err != nil {
			t.Fatal(err)
		}
		if err := nodes[2].c.PublishDelta(big, nil); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			waitFor(t, 10*time.Second, "records everywhere", func() bool {
				return holdsExactly(n.c, nodes[1].name, small) && holdsExactly(n.c, nodes[2].name, big)
			})
		}
		alone := startMem(t, net, fmt.Sprintf("alone-%d", run), nil)
		joiner := startMem(t, net, fmt.Sprintf("joiner-%d", run), nil, nodes[0].tr.Addr())
		waitFor(t, 10*time.Second, "the joiner merged", joiner.c.Merged)
		if !holdsExactly(joiner.c, nodes[1].name, small) || !holdsExactly(joiner.c, nodes[2].name, big) {
			got, _ := nodeBackends(joiner.c, nodes[2].name)
			t.Fatalf("run %d: Merged() while State() lacks records: %d of %d backends of %s", run, len(got), len(big), nodes[2].name)
		}
		if alone.c.Merged() {
			t.Errorf("run %d: a node alone says it merged", run)
		}
		for _, n := range append(nodes, alone, joiner) {
			_ = n.c.Shutdown()
		}
	}
}
