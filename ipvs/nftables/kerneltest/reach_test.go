package kerneltest

import (
	"strings"
	"testing"

	"github.com/l4lb/l4lb/ipvs/ipvstest"
	"github.com/l4lb/l4lb/ipvs/nftables"
)

// TestSpreadTCPUDPBothFamilies: every kind of VIP reaches both backends,
// evenly under round robin.
func TestSpreadTCPUDPBothFamilies(t *testing.T) {
	b := newBed(t)
	b.serve(t, 8080)
	r := b.reconciler(t, nftables.Config{})
	table := ipvstest.Table(
		ipvstest.VIP("tcp 11.0.0.1:80", "10.90.2.2:8080", "10.90.3.2:8080"),
		ipvstest.VIP("udp 11.0.0.1:53", "10.90.2.2:8080", "10.90.3.2:8080"),
		ipvstest.VIP("tcp [fd01:c::1]:80", "[fd90:2::2]:8080", "[fd90:3::2]:8080"),
		ipvstest.VIP("udp [fd01:c::1]:53", "[fd90:2::2]:8080", "[fd90:3::2]:8080"),
	)
	for i := range table.VIPs {
		table.VIPs[i].Scheduler = "rr"
	}
	r.Update(table)
	if err := r.SyncNow(false); err != nil {
		t.Fatalf("sync: %v", err)
	}
	t.Log(b.nft(t, "list", "table", "inet", "l4lb"))
	if p := r.Programmed(); p != table {
		t.Errorf("Programmed() is not the desired table after a clean sync")
	}
	for _, c := range []struct{ proto, addr string }{{"tcp", "11.0.0.1:80"}, {"udp", "11.0.0.1:53"}, {"tcp", "[fd01:c::1]:80"}, {"udp", "[fd01:c::1]:53"}} {
		t.Run(c.proto+" "+c.addr, func(t *testing.T) {
			var got map[string]int
			if c.proto == "tcp" {
				got = hitsTCP(t, b.client, c.addr, 10)
			} else {
				got = hitsUDP(t, b.client, c.addr, 10)
			}
			if got["b1"] != 5 || got["b2"] != 5 {
				t.Errorf("round robin over 10 connections: %v, want 5 and 5", got)
			}
		})
	}
	if out := b.nft(t, "list", "table", "inet", "l4lb"); !strings.Contains(out, "svc-tcp-11.0.0.1-80") {
		t.Errorf("nft list table inet l4lb does not show the service chain:\n%s", out)
	}
}
