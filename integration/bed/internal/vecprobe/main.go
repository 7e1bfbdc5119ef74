//go:build linux && amd64

// Command vecprobe checks, inside the test bed's UML guest, that every guest
// thread keeps its own vector registers while the guest kernel switches
// between threads of one process. UML runs all threads of a guest process in
// one host process and restores their registers with ptrace on every switch,
// so a register that UML (or the bed's ptrace wrapper, uml/xstate.c) failed
// to save would show another thread's value.
//
// Several threads, one per pattern, each hold their pattern in every vector
// register for a while and count the registers that changed; the guest has
// one CPU, so they preempt each other. It prints one line per register set
// and exits 1 if a register changed or no thread was ever preempted (then
// the check proved nothing).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

func holdYMM(pattern uint64, iters int) (bad int)
func holdZMM(pattern uint64, iters int) (bad int)

const (
	threads = 3
	rounds  = 4         // calls per thread, each a fresh load of the registers
	iters   = 2_000_000 // checks per call: tens of milliseconds, many time slices
)

// result is what one register set's check saw across all threads.
type result struct {
	corrupted int   // register checks that found another value
	preempted int64 // involuntary context switches while registers were held
}

func check(hold func(uint64, int) int) result {
	var (
		mu  sync.Mutex
		res result
		wg  sync.WaitGroup
	)
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			pattern := 0x0101010101010101 * uint64(0x11*(t+1))
			var before, after unix.Rusage
			_ = unix.Getrusage(unix.RUSAGE_THREAD, &before)
			bad := 0
			for r := 0; r < rounds; r++ {
				bad += hold(pattern, iters)
			}
			_ = unix.Getrusage(unix.RUSAGE_THREAD, &after)
			mu.Lock()
			res.corrupted += bad
			res.preempted += after.Nivcsw - before.Nivcsw
			mu.Unlock()
		}(t)
	}
	wg.Wait()
	return res
}

func main() {
	runtime.GOMAXPROCS(threads + 1)
	failed := false
	report := func(name string, ok bool, hold func(uint64, int) int) {
		if !ok {
			fmt.Printf("vecprobe %s: not on this CPU\n", name)
			return
		}
		r := check(hold)
		fmt.Printf("vecprobe %s: %d threads, %d preemptions, %d corrupted registers\n", name, threads, r.preempted, r.corrupted)
		if r.corrupted > 0 || r.preempted == 0 {
			failed = true
		}
	}
	report("ymm", cpu.X86.HasAVX2, holdYMM)
	report("zmm", cpu.X86.HasAVX512F, holdZMM)
	if !cpu.X86.HasAVX2 {
		fmt.Println("vecprobe: no AVX2: no vector register was checked")
		failed = true
	}
	if failed {
		os.Exit(1)
	}
}
