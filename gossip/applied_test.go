package gossip

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/l4lb/l4lb/gossip/memnet"
	"github.com/l4lb/l4lb/vip"
)

func drainOf(i int) Drain {
	return Drain{Service: vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP},
		Backend: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(8000+i)), Active: uint32(i), Inactive: uint32(2 * i)}
}

// A report split over many parts counts once every part is in, in any
// order; an older report or a part of it changes nothing.
func TestAppliedPartsAssemble(t *testing.T) {
	versions := map[string]Version{}
	for i := range 60 {
		versions[fmt.Sprintf("node-with-a-long-name-%03d", i)] = Version{Generation: 1_700_000_000_000_000_000 + uint64(i), Seq: uint64(1000 + i)}
	}
	var drains []Drain
	for i := range 40 {
		drains = append(drains, drainOf(i))
	}
	parts := encodeApplied("reporter", 7, 3, versions, drains, inlineRecordBytes)
	if len(parts) < 3 {
		t.Fatalf("%d parts, want the report split", len(parts))
	}
	for i, p := range parts {
		if len(p) > inlineRecordBytes {
			t.Fatalf("part %d is %d bytes, over %d", i, len(p), inlineRecordBytes)
		}
	}
	b := newAppliedBook()
	now := time.Now()
	for i := len(parts) - 1; i >= 0; i-- {
		m, err := decodeMessage(parts[i], MaxMessageBytes)
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if !b.mergeApplied("self", m.Applied, now) {
			t.Fatalf("part %d not taken", i)
		}
		if got := b.nodes["reporter"].complete; (got != nil) != (i == 0) {
			t.Fatalf("after part %d: complete = %v", i, got != nil)
		}
		if b.mergeApplied("self", m.Applied, now) {
			t.Fatalf("part %d taken twice", i)
		}
	}
	got := b.nodes["reporter"].complete
	if !maps.Equal(got.Versions, versions) || !reflect.DeepEqual(got.Draining, drains) {
		t.Fatalf("assembled report differs:\n%v\n%v", got.Versions, got.Draining)
	}
	old := encodeApplied("reporter", 7, 2, map[string]Version{"x": {1, 1}}, nil, inlineRecordBytes)
	m, _ := decodeMessage(old[0], MaxMessageBytes)
	if b.mergeApplied("self", m.Applied, now) || b.nodes["reporter"].complete != got {
		t.Fatal("an older report replaced a newer one")
	}
	// A newer report being assembled leaves the complete one shown.
	newer := encodeApplied("reporter", 7, 4, versions, drains, inlineRecordBytes)
	m, _ = decodeMessage(newer[0], MaxMessageBytes)
	b.mergeApplied("self", m.Applied, now)
	if b.nodes["reporter"].complete != got {
		t.Fatal("a partial newer report hid the complete one")
	}
	// A new generation voids the previous life's report.
	gen := encodeApplied("reporter", 8, 1, map[string]Version{"x": {1, 1}}, nil, inlineRecordBytes)
	m, _ = decodeMessage(gen[0], MaxMessageBytes)
	b.mergeApplied("self", m.Applied, now)
	if c := b.nodes["reporter"].complete; c == nil || len(c.Versions) != 1 {
		t.Fatalf("new generation's report not shown: %+v", c)
	}
	// Its own report coming back is ignored.
	self := encodeApplied("self", 1, 1, nil, nil, inlineRecordBytes)
	m, _ = decodeMessage(self[0], MaxMessageBytes)
	if b.mergeApplied("self", m.Applied, now) {
		t.Fatal("took a report of its own name")
	}
}

func TestAppliedDecodeRefuses(t *testing.T) {
	good := encodeApplied("a", 1, 1, map[string]Version{"b": {1, 2}}, []Drain{drainOf(1)}, inlineRecordBytes)[0]
	cases := map[string][]byte{
		"part past parts": encodeAppliedPart(&appliedMsg{Node: "a", Gen: 1, RSeq: 1, Part: 2, Parts: 2}),
		"zero parts":      encodeAppliedPart(&appliedMsg{Node: "a", Gen: 1, RSeq: 1, Part: 0, Parts: 0}),
		"no node":         encodeAppliedPart(&appliedMsg{Gen: 1, RSeq: 1, Parts: 1}),
		"drain no addr":   encodeAppliedPart(&appliedMsg{Node: "a", Gen: 1, RSeq: 1, Parts: 1, Draining: []Drain{{}}}),
		"trailing":        append(append([]byte(nil), good...), 0),
		"truncated":       good[:len(good)-1],
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeMessage(b, MaxMessageBytes); err == nil {
				t.Fatal("decoded")
			}
		})
	}
}

// Reports travel only when asked: a node that reports sends nothing until
// another node calls Applied; then every node's report reaches the asker;
// a report equal to the last keeps its sequence.
func TestAppliedReachesEveryNode(t *testing.T) {
	net := memnet.New()
	nodes := startMemCluster(t, net, 4, nil)
	waitFor(t, 10*time.Second, "4 live members everywhere", func() bool {
		for _, n := range nodes {
			if len(n.c.State()) != 4 {
				return false
			}
		}
		return true
	})
	for i, n := range nodes {
		v := n.c.Versions()
		if len(v) != 4 || v[n.name] != n.c.SelfVersion() {
			t.Fatalf("%s Versions %v, self %v", n.name, v, n.c.SelfVersion())
		}
		n.c.ReportApplied(v, []Drain{drainOf(i)})
	}
	// Nobody asked: nothing was sent.
	time.Sleep(time.Second)
	for _, n := range nodes {
		n.c.applied.mu.Lock()
		got := len(n.c.applied.nodes)
		n.c.applied.mu.Unlock()
		if got != 0 {
			t.Fatalf("%s holds %d reports nobody asked for: reports must not be gossiped", n.name, got)
		}
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.name+" to hold every report", func() bool {
			a := n.c.Applied()
			if len(a) != 4 {
				return false
			}
			for i, r := range a {
				if r.Node != nodes[i].name || len(r.Versions) != 4 || len(r.Draining) != 1 || r.Draining[0] != drainOf(i) {
					return false
				}
			}
			return true
		})
	}
	nodes[0].c.ReportApplied(nodes[0].c.Applied()[0].Versions, []Drain{drainOf(0)})
	if nodes[0].c.applied.rseq != 1 {
		t.Fatalf("an unchanged report bumped the report seq to %d", nodes[0].c.applied.rseq)
	}
	// A dead member's report is not shown.
	_ = nodes[3].c.Shutdown()
	waitFor(t, 10*time.Second, "node-03's report gone from node-00", func() bool {
		for _, r := range nodes[0].c.Applied() {
			if r.Node == nodes[3].name {
				return false
			}
		}
		return true
	})
}
