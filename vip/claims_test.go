package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestProposeClaimsEqualsSequential checks ProposeClaims against its
// definition: ProposeClaim called once per request, on the state plus a
// registration for each earlier request of the batch.
func TestProposeClaimsEqualsSequential(t *testing.T) {
	for seed := range uint64(300) {
		cfg := modelConfigs[seed%uint64(len(modelConfigs))]
		w := newWorld(t, cfg, 5000+seed, seed%2 == 0)
		for range w.rng.IntN(30) {
			d, _ := w.randomDelta()
			w.m.Apply([]NodeDelta{d})
		}
		if w.rng.IntN(2) == 0 {
			w.m.Table() // sometimes settled, sometimes not
		}
		pool := append(slices.Clone(w.names), collidingNames(10, 6)...)
		pool = append(pool, "/new1", "/new2", "/New1")
		var reqs []ClaimRequest
		for range 1 + w.rng.IntN(12) {
			q := ClaimRequest{
				Spec:      Spec{Protocol: []Protocol{TCP, UDP}[w.rng.IntN(2)], Name: w.pick(pool), Port: 80},
				Framework: []string{"", "marathon", "kubernetes"}[w.rng.IntN(3)],
				V6:        w.rng.IntN(4) == 0,
			}
			switch w.rng.IntN(30) {
			case 0:
				q.Spec = Spec{Protocol: TCP, Addr: netip.MustParseAddr("11.0.0.1"), Port: 80}
			case 1:
				q.Framework = "bad fw"
			case 2:
				q.Spec.Port = 0
			}
			reqs = append(reqs, q)
			if w.rng.IntN(4) == 0 {
				reqs = append(reqs, q) // asked twice
			}
		}
		now := t0.Add(time.Duration(w.rng.IntN(10)-5) * time.Second)
		before := w.m.Table()
		claims, errs := w.m.ProposeClaims(reqs, now)

		state := w.m.State()
		batch := NodeState{Node: "zz-batch"}
		for i, q := range reqs {
			want, wantErr := ProposeClaim(cfg, append(slices.Clone(state), batch), q.Spec, q.Framework, q.V6, now)
			label := fmt.Sprintf("seed %d request %d (%+v)", seed, i, q)
			if fmt.Sprint(wantErr) != fmt.Sprint(errs[i]) {
				t.Fatalf("%s: error %v, want %v", label, errs[i], wantErr)
			}
			if want.Addr != claims[i].Addr || !want.Since.Equal(claims[i].Since) {
				t.Fatalf("%s: claim %+v, want %+v", label, claims[i], want)
			}
			if wantErr != nil {
				continue
			}
			backend := netip.AddrPortFrom(netip.MustParseAddr("10.255.0.1"), uint16(1000+i))
			if q.V6 {
				backend = netip.AddrPortFrom(netip.MustParseAddr("fd00:ff::1"), uint16(1000+i))
			}
			batch.Backends = append(batch.Backends, Registration{VIP: q.Spec, Framework: q.Framework, Backend: backend, Weight: 1, Health: Healthy, Claim: want})
		}
		// Names new to the batch got distinct addresses, and the state
		// plus the batch places each where it was proposed.
		tab := Build(cfg, append(slices.Clone(state), batch))
		for i, q := range reqs {
			if errs[i] != nil {
				continue
			}
			id := NameKeyOf(&Registration{VIP: q.Spec, Framework: q.Framework, Backend: batchBackend(q.V6)})
			found := false
			for _, v := range tab.VIPs {
				if v.Name != "" && strings.EqualFold(v.Name, id.Name) && v.Framework == id.Framework && v.Addr.Is6() == q.V6 {
					found = true
					if v.Addr != claims[i].Addr {
						t.Fatalf("seed %d: %+v proposed %s, placed at %s", seed, q, claims[i].Addr, v.Addr)
					}
				}
			}
			if !found {
				t.Fatalf("seed %d: %+v proposed %s, not in the table", seed, q, claims[i].Addr)
			}
		}
		if after := w.m.Table(); after != before {
			t.Fatalf("seed %d: ProposeClaims changed the table", seed)
		}
	}
}

func batchBackend(v6 bool) netip.AddrPort {
	if v6 {
		return netip.MustParseAddrPort("[fd00:ff::1]:1")
	}
	return netip.MustParseAddrPort("10.255.0.1:1")
}

func TestProposeClaimsCases(t *testing.T) {
	small := Config{V4: netip.MustParsePrefix("11.0.0.0/29")} // 6 addresses
	colliding := collidingNames(2, 6)
	hashed := hashedV4(small.V4, "marathon", colliding[0])
	second := hashed.Next() // where the second colliding name lands
	if second == netip.MustParseAddr("11.0.0.7") {
		second = netip.MustParseAddr("11.0.0.1")
	}
	// /web holds an address out of the two names' way.
	webAddr := netip.MustParseAddr("11.0.0.1")
	for webAddr == hashed || webAddr == second {
		webAddr = webAddr.Next()
	}
	m := NewModel(small)
	m.Apply([]NodeDelta{set("a", reg("/web:80", "10.0.0.1:80", withClaim(webAddr.String(), t0)))})
	later := t0.Add(time.Hour)
	claims, errs := m.ProposeClaims([]ClaimRequest{
		{Spec: mustSpec(colliding[0] + ":80")},
		{Spec: mustSpec(colliding[1] + ":443")},
		{Spec: mustSpec("udp://" + colliding[0] + ":53")}, // the same name again
		{Spec: mustSpec("/web:8080")},                     // placed already
		{Spec: mustSpec("11.0.0.1:80")},
	}, later)
	want := []Claim{
		{Addr: hashed, Since: later},
		{Addr: second, Since: later},
		{Addr: hashed, Since: later},
		{Addr: webAddr, Since: t0},
		{},
	}
	for i := range want {
		if claims[i].Addr != want[i].Addr || !claims[i].Since.Equal(want[i].Since) {
			t.Errorf("request %d: claim %+v, want %+v", i, claims[i], want[i])
		}
	}
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("errors %v", errs)
	}
	if errs[4] == nil || !strings.Contains(errs[4].Error(), "11.0.0.1:80 is an IP VIP: only named VIPs claim an address") {
		t.Errorf("IP VIP request: error %v", errs[4])
	}

	// Six addresses: /web and five new names fit, the sixth does not.
	var reqs []ClaimRequest
	for i := range 6 {
		reqs = append(reqs, ClaimRequest{Spec: mustSpec(fmt.Sprintf("/n%d:80", i))})
	}
	claims, errs = m.ProposeClaims(reqs, later)
	seen := map[netip.Addr]bool{webAddr: true}
	for i := range 5 {
		if errs[i] != nil || seen[claims[i].Addr] {
			t.Fatalf("request %d: %+v, %v (addresses so far %v)", i, claims[i], errs[i], seen)
		}
		seen[claims[i].Addr] = true
	}
	if !errors.Is(errs[5], ErrRangeFull) {
		t.Fatalf("sixth new name: %+v, %v; want ErrRangeFull", claims[5], errs[5])
	}
}
