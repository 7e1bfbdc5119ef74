package gossip

import (
	"testing"
)

// TestCommonWordsAreShared: decoding a protocol, framework, health or
// scheduler of the common vocabulary allocates nothing; another value is
// decoded as it is.
func TestCommonWordsAreShared(t *testing.T) {
	for _, w := range []string{"tcp", "marathon", "healthy", "wlc", "custom-framework"} {
		e := encoder{}
		e.str(w)
		d := &decoder{b: e.b}
		if got := d.word("w"); got != w || d.err != nil {
			t.Fatalf("word(%q) = %q, %v", w, got, d.err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			d := &decoder{b: e.b}
			_ = d.word("w")
		})
		if _, common := common[w]; common && allocs != 0 {
			t.Errorf("%q: %v allocations, want 0", w, allocs)
		}
		if _, common := common[w]; !common && allocs == 0 {
			t.Errorf("%q: no allocation for an uncommon word; the test does not measure what it says", w)
		}
	}
}
