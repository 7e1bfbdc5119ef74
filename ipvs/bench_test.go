package ipvs

import (
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/vip"
)

// These benchmarks measure the reconciler's own work (plan, memory,
// publish) against the Fake; the kernel's share is measured in kerneltest.

func BenchmarkOneBackendChangeFake(b *testing.B) {
	f := newFixture(&testing.T{}, nil, nil)
	tab := bigTable(10000, 10)
	f.r.Update(tab)
	if err := f.r.SyncNow(false); err != nil {
		b.Fatal(err)
	}
	with := withBackend(tab, 5000, "10.9.9.9:8080")
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		next := with
		if n%2 == 1 {
			next = tab
		}
		f.r.Update(next)
		if err := f.r.SyncNow(false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFullResyncUnchangedFake(b *testing.B) {
	f := newFixture(&testing.T{}, nil, nil)
	tab := bigTable(10000, 10)
	f.r.Update(tab)
	if err := f.r.SyncNow(false); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if err := f.r.SyncNow(true); err != nil {
			b.Fatal(err)
		}
	}
	if w := f.fake.TotalWrites(); w != 10000*12 {
		b.Fatalf("writes %d", w)
	}
}

var _ = netip.Addr{}
var _ = vip.TCP

func BenchmarkProgramFromEmptyFake(b *testing.B) {
	tab := bigTable(10000, 10)
	b.ReportAllocs()
	for n := 0; n < b.N; n++ {
		f := newFixture(&testing.T{}, nil, nil)
		f.r.Update(tab)
		if err := f.r.SyncNow(false); err != nil {
			b.Fatal(err)
		}
	}
}
