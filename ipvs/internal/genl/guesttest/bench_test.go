package guesttest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/integration/bed"
	"github.com/l4lb/l4lb/ipvs/internal/genl"
)

// benchTable is a table of vips services with backends real servers each:
// VIP i is 11.x.y.z (TCP port 80), its real server j is 10.j.hi(i).lo(i):8080.
type benchTable struct{ vips, backends int }

func (tb benchTable) String() string { return fmt.Sprintf("%dx%d", tb.vips, tb.backends) }

func (tb benchTable) commands() int { return tb.vips * (1 + tb.backends) }

func (tb benchTable) vip(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
}

func (tb benchTable) backend(i, j int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(j), byte(i >> 8), byte(i)})
}

func (tb benchTable) ops() []genl.Op {
	ops := make([]genl.Op, 0, tb.commands())
	for i := range tb.vips {
		svc := genl.Service{Protocol: unix.IPPROTO_TCP, Addr: tb.vip(i), Port: 80, Sched: "wlc"}
		ops = append(ops, genl.Op{Cmd: genl.NewService, Service: svc})
		for j := range tb.backends {
			ops = append(ops, genl.Op{Cmd: genl.NewDest, Service: svc, Dest: genl.Dest{Addr: tb.backend(i, j), Port: 8080, Weight: 1}})
		}
	}
	return ops
}

// rules is the table as ipvsadm-restore reads it.
func (tb benchTable) rules(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range tb.vips {
		v := netip.AddrPortFrom(tb.vip(i), 80)
		fmt.Fprintf(w, "-A -t %s -s wlc\n", v)
		for j := range tb.backends {
			fmt.Fprintf(w, "-a -t %s -r %s -m -w 1\n", v, netip.AddrPortFrom(tb.backend(i, j), 8080))
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var benchTables = []benchTable{{2000, 5}, {10000, 10}}

// restoreSeconds holds ipvsadm-restore's time per table, measured first in
// the same run, so each other way reports its ratio to it.
var restoreSeconds = map[string]float64{}

// BenchmarkProgram programs each table from empty, in a fresh namespace,
// four ways: ipvsadm-restore, moby/ipvs one call per command, this client
// with one command per datagram, this client with every command
// acknowledged in datagrams of 128 (the "plain socket" of issue 5), and this
// client as it is by default. Only the programming is timed; each iteration
// checks the result with ipvsadm afterwards. Run with -benchtime 1x.
func BenchmarkProgram(b *testing.B) {
	for _, tb := range benchTables {
		b.Run(tb.String(), func(b *testing.B) {
			b.Run("ipvsadm-restore", func(b *testing.B) {
				rules := filepath.Join(b.TempDir(), "rules")
				if err := tb.rules(rules); err != nil {
					b.Fatal(err)
				}
				programBench(b, tb, func(ns *bed.Netns) error {
					in, err := os.Open(rules)
					if err != nil {
						return err
					}
					defer in.Close()
					cmd := exec.Command("ip", "netns", "exec", ns.Name, "ipvsadm-restore")
					cmd.Stdin = in
					if out, err := cmd.CombinedOutput(); err != nil {
						return fmt.Errorf("ipvsadm-restore: %v: %s", err, out)
					}
					return nil
				})
			})
			b.Run("moby-ipvs", func(b *testing.B) {
				programBench(b, tb, func(ns *bed.Netns) error { return programMoby(ns, tb) })
			})
			for _, way := range []struct {
				name   string
				batch  int
				ackAll bool
			}{
				{"genl-1-per-datagram", 1, false},
				{"genl-128-per-datagram-ack-all", 128, true},
				{fmt.Sprintf("genl-batched-%d", genl.DefaultBatchSize), genl.DefaultBatchSize, false},
			} {
				b.Run(way.name, func(b *testing.B) {
					ops := tb.ops()
					programBench(b, tb, func(ns *bed.Netns) error {
						c, err := genl.Open(ns.Path())
						if err != nil {
							return err
						}
						defer c.Close()
						c.SetBatchSize(way.batch)
						c.SetAckAll(way.ackAll)
						for i, err := range c.Do(ops) {
							if err != nil {
								return fmt.Errorf("op %d: %w", i, err)
							}
						}
						return nil
					})
				})
			}
		})
	}
}

// programBench times program on an empty namespace per iteration and reports
// seconds, commands per second and the ratio to ipvsadm-restore.
func programBench(b *testing.B, tb benchTable, program func(*bed.Netns) error) {
	var total time.Duration
	for range b.N {
		b.StopTimer()
		ns := bed.NewNetns(b, "bench")
		b.StartTimer()
		start := time.Now()
		if err := program(ns); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		total += took
		checkProgrammed(b, ns, tb)
		// Free the kernel's memory before the next iteration.
		ns.MustRun(b, "ipvsadm", "-C")
		b.StartTimer()
	}
	secs := total.Seconds() / float64(b.N)
	b.ReportMetric(secs, "s/table")
	b.ReportMetric(float64(tb.commands())/secs, "cmds/s")
	key := tb.String()
	if strings.HasSuffix(b.Name(), "/ipvsadm-restore") {
		restoreSeconds[key] = secs
	} else if r, ok := restoreSeconds[key]; ok {
		b.ReportMetric(secs/r, "x-restore")
	}
}

func checkProgrammed(b *testing.B, ns *bed.Netns, tb benchTable) {
	out := ns.MustRun(b, "ipvsadm", "-Ln")
	var svcs, reals int
	for _, line := range strings.Split(out, "\n") {
		switch f := strings.Fields(line); {
		case len(f) > 0 && f[0] == "TCP":
			svcs++
		case len(f) > 0 && f[0] == "->" && f[1] != "RemoteAddress:Port":
			reals++
		}
	}
	if svcs != tb.vips || reals != tb.vips*tb.backends {
		b.Fatalf("ipvsadm shows %d services and %d real servers, want %d and %d", svcs, reals, tb.vips, tb.vips*tb.backends)
	}
}

// programMoby is the naive use of moby/ipvs: one call per command.
func programMoby(ns *bed.Netns, tb benchTable) error {
	h, err := mobyipvs.New(ns.Path())
	if err != nil {
		return err
	}
	defer h.Close()
	for i := range tb.vips {
		svc := &mobyipvs.Service{Address: net.IP(tb.vip(i).AsSlice()), Protocol: syscall.IPPROTO_TCP, Port: 80,
			SchedName: "wlc", AddressFamily: syscall.AF_INET, Netmask: 0xffffffff}
		if err := h.NewService(svc); err != nil {
			return fmt.Errorf("service %d: %w", i, err)
		}
		for j := range tb.backends {
			d := &mobyipvs.Destination{Address: net.IP(tb.backend(i, j).AsSlice()), Port: 8080, Weight: 1,
				ConnectionFlags: mobyipvs.ConnectionFlagMasq, AddressFamily: syscall.AF_INET}
			if err := h.NewDestination(svc, d); err != nil {
				return fmt.Errorf("real server %d/%d: %w", i, j, err)
			}
		}
	}
	return nil
}
