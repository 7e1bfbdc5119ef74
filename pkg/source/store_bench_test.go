package source

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/l4lb/l4lb/pkg/atomicfile"
	"github.com/l4lb/l4lb/pkg/journal"
)

// benchLocal is the i-th registration of the store benchmarks: a named VIP
// with a health check, so that every field is written.
func benchLocal(b testing.TB, i int) Local {
	return mustLocal(b, Entry{VIP: fmt.Sprintf("/bench/app%d:80", i), Backend: fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255), Check: "http:///healthz"})
}

// BenchmarkStorePut measures the Put of a new registration into a store
// that holds n-1 (so the first op is the n-th registration; with
// -benchtime 200x the last is the (n+199)-th). fsyncs/op counts the
// journal's fsyncs, compactions included.
func BenchmarkStorePut(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nth=%d", n), func(b *testing.B) {
			s, err := OpenStore(b.TempDir(), quietLog())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ops := make([]journal.Op, 0, n-1)
			fill := make([]Local, 0, n-1)
			for i := range n - 1 {
				l := benchLocal(b, i)
				raw, _ := json.Marshal(l.Entry())
				ops = append(ops, journal.Op{Key: l.Key(), Value: raw})
				fill = append(fill, l)
			}
			if err := s.j.Apply(ops, func() {
				for _, l := range fill {
					s.keys[l.Key()] = struct{}{}
				}
			}); err != nil {
				b.Fatal(err)
			}
			syncs := s.j.Stats().Syncs
			i := 0
			for b.Loop() {
				if _, err := s.Put(benchLocal(b, n-1+i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(s.j.Stats().Syncs-syncs)/float64(i), "fsyncs/op")
		})
	}
}

// oldSave is the Store's save before the journal (commit 32b9401), kept as
// the benchmark's peer: every registration marshalled, the whole file
// indented and written through atomicfile (fsync of the file and of the
// directory) on each change.
func oldSave(path string, byKey map[string]Local) error {
	locals := make([]Local, 0, len(byKey))
	for _, l := range byKey {
		locals = append(locals, l)
	}
	sortLocals(locals)
	state := stateFile{Version: stateVersion, Backends: make([]json.RawMessage, 0, len(locals))}
	for _, l := range locals {
		raw, err := json.Marshal(l.Entry())
		if err != nil {
			return err
		}
		state.Backends = append(state.Backends, raw)
	}
	data, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), nil)
}

// BenchmarkStorePutOld is BenchmarkStorePut with oldSave: 2 fsyncs per op
// (atomicfile.Write syncs the file and the directory).
func BenchmarkStorePutOld(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nth=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), StateFile)
			byKey := make(map[string]Local, n)
			for i := range n - 1 {
				l := benchLocal(b, i)
				byKey[l.Key()] = l
			}
			i := 0
			for b.Loop() {
				l := benchLocal(b, n-1+i)
				byKey[l.Key()] = l
				if err := oldSave(path, byKey); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(2, "fsyncs/op")
		})
	}
}

// BenchmarkStorePutConcurrent: 16 goroutines Put new registrations into a
// store of 10,000 at once; group commit lets them share fsyncs.
func BenchmarkStorePutConcurrent(b *testing.B) {
	s, err := OpenStore(b.TempDir(), quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ops := make([]journal.Op, 0, 10000)
	for i := range 10000 {
		l := benchLocal(b, i)
		raw, _ := json.Marshal(l.Entry())
		ops = append(ops, journal.Op{Key: l.Key(), Value: raw})
	}
	if err := s.j.Apply(ops, nil); err != nil {
		b.Fatal(err)
	}
	syncs := s.j.Stats().Syncs
	var next atomic.Int64
	next.Store(10000)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Put(benchLocal(b, int(next.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(s.j.Stats().Syncs-syncs)/float64(next.Load()-10000), "fsyncs/op")
}
