package kerneltest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/ipvs/internal/runner"
	"github.com/l4lb/l4lb/ipvs/ipvstest"
	"github.com/l4lb/l4lb/ipvs/nftables"
	"github.com/l4lb/l4lb/vip"
)

// The agent holds either data plane behind one interface: both have the
// same method set.
type dataPlane interface {
	Update(*vip.Table)
	Resync()
	SyncNow(full bool) error
	Programmed() *vip.Table
	Stats() ipvs.Stats
	Connections() map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns
	Close(clean bool) error
}

var (
	_ dataPlane = (*ipvs.Reconciler)(nil)
	_ dataPlane = (*nftables.Reconciler)(nil)
)

func oneVIP(key string, sched string, persistence uint32, backends ...string) *vip.Table {
	v := ipvstest.VIP(key, backends...)
	v.Scheduler, v.Persistence = sched, persistence
	return ipvstest.Table(v)
}

// TestDrainWeightZero: a backend at weight 0 gets no new connection, while
// an established one keeps working and is counted as draining; at the drain
// deadline its conntrack entry is deleted and the connection ends.
func TestDrainWeightZero(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	clock := runner.NewFakeClock(time.Now())
	r := b.reconciler(t, nftables.Config{Clock: clock, DrainTimeout: time.Minute})
	backends := map[string]string{"b1": "10.90.2.2:8080", "b2": "10.90.3.2:8080"}
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 0, backends["b1"], backends["b2"]))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	held, err := dialTCP(b.client, "11.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer held.close()
	other := map[string]string{"b1": "b2", "b2": "b1"}[held.backend]

	drained := []string{backends[held.backend] + "=0", backends[other]}
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 0, drained...))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if got := hitsTCP(t, b.client, "11.0.0.1:80", 10); got[other] != 10 {
		t.Errorf("new connections after %s went to weight 0: %v, want all 10 on %s", held.backend, got, other)
	}
	if err := held.echo("still there"); err != nil {
		t.Fatalf("established connection to the weight-0 backend broke: %v", err)
	}
	k := vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP}
	c := r.Connections()[k][netip.MustParseAddrPort(backends[held.backend])]
	if c.Active != 1 || !c.Draining || c.Weight != 0 {
		t.Errorf("Connections() of the draining backend: %+v, want 1 active, draining, weight 0", c)
	}
	if s := r.Stats(); s.Draining != 1 {
		t.Errorf("Stats().Draining = %d, want 1", s.Draining)
	}

	// Before the deadline nothing is cut.
	clock.Step(30 * time.Second)
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if err := held.echo("half way"); err != nil {
		t.Fatalf("connection cut before the drain deadline: %v", err)
	}
	// At the deadline the entry goes; the next packet is a new flow to the
	// VIP that lands on the other backend, which resets it.
	clock.Step(31 * time.Second)
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if err := held.echo("after the deadline"); err == nil {
		t.Errorf("connection still works after the drain deadline")
	}
	if s := r.Stats(); s.Draining != 0 {
		t.Errorf("Stats().Draining = %d after the deadline, want 0", s.Draining)
	}
}

// TestDrainEndsWhenIdle: a backend that left the table stops draining as
// soon as conntrack shows no connection to it.
func TestDrainEndsWhenIdle(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	clock := runner.NewFakeClock(time.Now())
	r := b.reconciler(t, nftables.Config{Clock: clock})
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 0, "10.90.2.2:8080", "10.90.3.2:8080"))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 0, "10.90.3.2:8080"))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Draining != 0 {
		t.Errorf("an idle backend that left is still draining: %d", s.Draining)
	}
	if got := hitsTCP(t, b.client, "11.0.0.1:80", 4); got["b2"] != 4 {
		t.Errorf("after b1 left: %v, want all on b2", got)
	}
}

// TestPersistence: a client stays on one backend; when that backend goes
// to weight 0 its next connections move to a live one, and stay there.
func TestPersistence(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	r := b.reconciler(t, nftables.Config{})
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 300, "10.90.2.2:8080", "10.90.3.2:8080"))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	got := hitsTCP(t, b.client, "11.0.0.1:80", 10)
	if len(got) != 1 {
		t.Fatalf("persistent VIP spread one client over %v, want one backend", got)
	}
	first := "b1"
	if got["b2"] == 10 {
		first = "b2"
	}
	addr := map[string]string{"b1": "10.90.2.2:8080", "b2": "10.90.3.2:8080"}
	other := map[string]string{"b1": "b2", "b2": "b1"}[first]
	if out := b.nft(t, "list", "map", "inet", "l4lb", "aff-tcp-11.0.0.1-80"); !strings.Contains(out, "10.90.1.2") || !strings.Contains(out, "expires") {
		t.Errorf("affinity map has no expiring entry for the client:\n%s", out)
	}
	r.Update(oneVIP("tcp 11.0.0.1:80", "rr", 300, addr[first]+"=0", addr[other]))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if got := hitsTCP(t, b.client, "11.0.0.1:80", 10); got[other] != 10 {
		t.Errorf("after %s went to weight 0: %v, want all 10 on %s", first, got, other)
	}
}

// TestSourceHashAndWeights: sh keeps one client on one backend without
// persistence; wrr spreads in proportion to the weights.
func TestSourceHashAndWeights(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	r := b.reconciler(t, nftables.Config{})
	sh := ipvstest.VIP("tcp 11.0.0.1:80", "10.90.2.2:8080", "10.90.3.2:8080")
	sh.Scheduler = "sh"
	wrr := ipvstest.VIP("tcp 11.0.0.2:80", "10.90.2.2:8080=3", "10.90.3.2:8080=1")
	wrr.Scheduler = "wrr"
	rnd := ipvstest.VIP("tcp 11.0.0.3:80", "10.90.2.2:8080", "10.90.3.2:8080")
	rnd.Scheduler = "random"
	r.Update(ipvstest.Table(sh, wrr, rnd))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	if got := hitsTCP(t, b.client, "11.0.0.1:80", 10); len(got) != 1 {
		t.Errorf("sh spread one client over %v", got)
	}
	if got := hitsTCP(t, b.client, "11.0.0.2:80", 40); got["b1"] != 30 || got["b2"] != 10 {
		t.Errorf("wrr 3:1 over 40 connections: %v, want 30 and 10", got)
	}
	if got := hitsTCP(t, b.client, "11.0.0.3:80", 40); got["b1"] == 0 || got["b2"] == 0 {
		t.Errorf("random over 40 connections used one backend only: %v", got)
	}
	out := b.nft(t, "list", "table", "inet", "l4lb")
	for _, want := range []string{"jhash @nh,96,32 mod 2", "numgen inc mod 4", "numgen random mod 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list lacks %q:\n%s", want, out)
		}
	}
}

// TestHairpinAndLocal: a backend reaches its own VIP and lands on itself
// and on the other backend (replies come back through the masquerade);
// a process on the load balancer itself reaches the VIP (output chain).
func TestHairpinAndLocal(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	r := b.reconciler(t, nftables.Config{})
	t4 := ipvstest.VIP("tcp 11.0.0.1:80", "10.90.2.2:8080", "10.90.3.2:8080")
	t6 := ipvstest.VIP("tcp [fd01:c::1]:80", "[fd90:2::2]:8080", "[fd90:3::2]:8080")
	t4.Scheduler, t6.Scheduler = "rr", "rr"
	r.Update(ipvstest.Table(t4, t6))
	if err := r.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"11.0.0.1:80", "[fd01:c::1]:80"} {
		if got := hitsTCP(t, b.backends[0], addr, 4); got["b1"] != 2 || got["b2"] != 2 {
			t.Errorf("hairpin from b1 to %s: %v, want 2 on itself and 2 on b2", addr, got)
		}
		if got := hitsTCP(t, b.lb, addr, 4); got["b1"] != 2 || got["b2"] != 2 {
			t.Errorf("from the load balancer's own processes to %s: %v, want 2 and 2", addr, got)
		}
	}
}

// TestRestartAdoptsAndRefuses: a new reconciler adopts the table and writes
// nothing; a VIP whose scheduler has no equivalent is refused with a
// reason and is not programmed, while the others are.
func TestRestartAdoptsAndRefuses(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	table := ipvstest.Table(ipvstest.VIP("tcp 11.0.0.1:80", "10.90.2.2:8080", "10.90.3.2:8080"))
	r1 := b.reconciler(t, nftables.Config{})
	r1.Update(table)
	if err := r1.SyncNow(false); err != nil {
		t.Fatal(err)
	}
	held, err := dialTCP(b.client, "11.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer held.close()
	if err := r1.Close(false); err != nil {
		t.Fatal(err)
	}
	r2 := b.reconciler(t, nftables.Config{})
	r2.Update(table)
	if d := syncDelta(t, r2, false); d.tx != 0 {
		t.Errorf("restart with an unchanged table wrote %+v, want nothing", d)
	}
	if err := held.echo("across the restart"); err != nil {
		t.Errorf("connection across the restart: %v", err)
	}

	dh := ipvstest.VIP("tcp 11.0.0.9:80", "10.90.2.2:8080")
	dh.Scheduler = "dh"
	mixed := ipvstest.Table(append(table.VIPs, dh)...)
	r2.Update(mixed)
	if err := r2.SyncNow(false); err != nil {
		t.Fatalf("a refused VIP must not fail the sync: %v", err)
	}
	p := r2.Programmed()
	if len(p.VIPs) != 1 || p.VIPs[0].Addr != netip.MustParseAddr("11.0.0.1") {
		t.Errorf("Programmed() = %v, want only 11.0.0.1", p.VIPs)
	}
	why := r2.Refused()[dh.ServiceKey]
	if !strings.Contains(why, `"dh"`) {
		t.Errorf("Refused() reason %q does not name the scheduler", why)
	}
	if out := b.nft(t, "list", "table", "inet", "l4lb"); strings.Contains(out, "11.0.0.9") {
		t.Errorf("refused VIP is in the table:\n%s", out)
	}
}
